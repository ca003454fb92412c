#!/bin/bash
# boot.sh: boot a real systemd (Debian bookworm's, as PID 1) with
# systemd-nspawn, in a network namespace of its own (only lo) and a pure
# cgroup2 tree, on a host whose PID 1 need not be systemd (hybrid cgroup
# hosts included). Adapted from the recipe in ../shared/systemd-container.
#
# Environment:
#   SYSD_NAME   machine name, unique per container (default cgtproxy-sysd)
#   SYSD_BASE   this container's directory: its rootfs copy, pid files,
#               console log (default /var/tmp/cgtproxy-sysd/$SYSD_NAME)
#   SYSD_CACHE  where the debootstrapped rootfs is kept between containers
#               and runs (default /var/tmp/cgtproxy-sysd/cache); built once
#               (about a minute), then copied for each container (seconds)
#   SYSD_PAYLOAD  a directory copied over the container's / before boot
# Needs root, systemd-nspawn (systemd-container), debootstrap and an apt
# mirror. Idempotent: re-running while the container is up only reports it.
set -euo pipefail
NAME=${SYSD_NAME:-cgtproxy-sysd}
BASE=${SYSD_BASE:-/var/tmp/cgtproxy-sysd/$NAME}
CACHE=${SYSD_CACHE:-/var/tmp/cgtproxy-sysd/cache}
SUITE=bookworm
PKGS=systemd,systemd-sysv,dbus,libpam-systemd,dbus-user-session,iproute2,nftables,procps
# Change RECIPE when the rootfs recipe below changes: it names the cache.
RECIPE="1 $SUITE $PKGS"
KEY=$(printf '%s' "$RECIPE" | md5sum | cut -c1-12)
ROOT=$BASE/rootfs
mkdir -p "$BASE" "$CACHE"

if [ -s "$BASE/nspawn.pid" ] && kill -0 "$(cat "$BASE/nspawn.pid")" 2>/dev/null; then
  echo "already running: nspawn pid $(cat "$BASE/nspawn.pid"), leader $(cat "$BASE/leader.pid" 2>/dev/null)"; exit 0
fi
for tool in systemd-nspawn debootstrap nsenter; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install systemd-container debootstrap)" >&2; exit 1; }
done

# 1. The shared rootfs, built once per recipe (an exclusive lock: parallel
#    tests wait for the first build, then copy it one at a time).
exec 9>"$CACHE/lock"
flock 9
CACHED=$CACHE/rootfs-$KEY
if [ ! -e "$CACHED/.sysd-complete" ]; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$MIRROR" ] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }
  # Rootfs of older recipes are of no more use.
  for old in "$CACHE"/rootfs-*; do [ -e "$old" ] && rm -rf "$old"; done
  t=$(date +%s)
  debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$CACHED" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$CACHED"; exit 1; }
  chroot "$CACHED" useradd -m -u 1000 -s /bin/bash tester
  chroot "$CACHED" passwd -d root >/dev/null
  # = loginctl enable-linger tester: its user manager runs from boot.
  mkdir -p "$CACHED/var/lib/systemd/linger"; touch "$CACHED/var/lib/systemd/linger/tester"
  # Nothing to do in a throwaway container; keeps the boot quiet and quick.
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
           e2scrub_reap.service systemd-pstore.service console-getty.service getty@tty1.service; do
    ln -sf /dev/null "$CACHED/etc/systemd/system/$u"
  done
  rm -f "$CACHED"/var/cache/apt/archives/*.deb
  touch "$CACHED/.sysd-complete"
  echo "rootfs built in $(( $(date +%s) - t ))s, size $(du -sh "$CACHED" | cut -f1)"
fi
rm -rf "$ROOT"
cp -a --reflink=auto "$CACHED" "$ROOT"
flock -u 9
exec 9>&-
echo "$NAME" > "$ROOT/etc/hostname"
[ -n "${SYSD_PAYLOAD:-}" ] && [ -d "$SYSD_PAYLOAD" ] && cp -a "$SYSD_PAYLOAD/." "$ROOT/"

# 2. cgroup2: the container gets the host's unified hierarchy (here maybe
#    /sys/fs/cgroup/unified) through a cgroup namespace rooted at
#    $CG2/$NAME; nspawn splits it into $NAME/payload and $NAME/supervisor.
CG2=$(awk '$3=="cgroup2"{print $2; exit}' /proc/self/mounts)
[ -n "$CG2" ] || { echo "no cgroup2 mount on host" >&2; exit 1; }
mkdir -p "$CG2/$NAME"
rm -rf /run/systemd/nspawn/propagate/"$NAME" 2>/dev/null || true

# 3. Boot. --register=no --keep-unit: no machined or host PID 1 to talk to.
#    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: pure cgroup2 in the container even
#    on a hybrid host. --private-network: own netns with only lo; the
#    container keeps CAP_NET_ADMIN in it.
T0=$(date +%s.%N)
( echo "$BASHPID" > "$CG2/$NAME/cgroup.procs"
  exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn --quiet -b -D "$ROOT" -M "$NAME" \
       --private-network --register=no --keep-unit --console=read-only ${SYSD_NSPAWN_EXTRA:-}
) > "$BASE/console.log" 2>&1 < /dev/null &
NSPID=$!
echo "$NSPID" > "$BASE/nspawn.pid"

LEADER=
for _ in $(seq 1 100); do
  LEADER=$( (ps -o pid= --ppid "$NSPID" || true) | awk '{print $1; exit}')
  [ -n "$LEADER" ] && [ "$(cat /proc/"$LEADER"/comm 2>/dev/null)" = systemd ] && break
  kill -0 "$NSPID" 2>/dev/null || { cat "$BASE/console.log" >&2; exit 1; }
  sleep 0.1
done
echo "$LEADER" > "$BASE/leader.pid"
# Wait until the container's manager has finished booting (running or degraded).
state=
for _ in $(seq 1 600); do
  state=$(nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break;; esac
  sleep 0.1
done
case "$state" in running|degraded) ;; *) echo "container '$NAME' did not finish booting: '$state'" >&2; exit 1;; esac
echo "container '$NAME' up: nspawn pid $NSPID, leader $LEADER, state '$state'," \
     "boot took $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s"
