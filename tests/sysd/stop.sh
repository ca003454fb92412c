#!/bin/bash
# stop.sh: power off the container boot.sh booted (SIGTERM to nspawn), then
# remove its leftover cgroups and, with --clean, its directory (rootfs copy).
# Environment: SYSD_NAME, SYSD_BASE as for boot.sh.
NAME=${SYSD_NAME:-cgtproxy-sysd}
BASE=${SYSD_BASE:-/var/tmp/cgtproxy-sysd/$NAME}
P=$(cat "$BASE/nspawn.pid" 2>/dev/null || true)
if [ -n "$P" ] && kill -0 "$P" 2>/dev/null; then
  kill -TERM "$P"
  for _ in $(seq 1 300); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$P" 2>/dev/null; then echo "nspawn $P still alive after 30s, SIGKILL"; kill -KILL "$P"; sleep 1; fi
fi
L=$(cat "$BASE/leader.pid" 2>/dev/null || true)
[ -n "$L" ] && kill -0 "$L" 2>/dev/null && { echo "leader $L still alive, SIGKILL"; kill -KILL "$L"; sleep 1; }
CG2=$(awk '$3=="cgroup2"{print $2; exit}' /proc/self/mounts)
# Leftover (empty) cgroups, deepest first; nspawn also mirrors
# $NAME/{payload,supervisor} into a name=systemd v1 hierarchy if there is one.
for d in "$CG2/$NAME" /sys/fs/cgroup/systemd/"$NAME"; do
  [ -n "$CG2" ] && [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
done
rm -rf /run/systemd/nspawn/propagate/"$NAME" 2>/dev/null
rm -f "$BASE/nspawn.pid" "$BASE/leader.pid"
[ "${1:-}" = --clean ] && rm -rf "$BASE"
if [ -n "$CG2" ] && [ -d "$CG2/$NAME" ]; then echo "warning: $CG2/$NAME not fully removed"; exit 1; fi
echo "stopped $NAME"
