#!/bin/bash
# run-in.sh [--raw] [-u USER] CMD [ARGS...]: run CMD in the container boot.sh booted
#  default : as a transient service of the container's systemd (systemd-run
#            --pipe --wait): a real container cgroup; exit status and stdio
#            passed through
#  -u USER : the same as USER with a logind session (PAMName=login) and the
#            user manager's environment, so `systemd-run --user` works
#  --raw   : plain `nsenter -a` (fastest; the process stays in a host cgroup
#            outside the container's tree: fine for systemctl, journalctl,
#            nft, ip, dpkg; not for anything that needs its own cgroup)
# Environment: SYSD_NAME, SYSD_BASE as for boot.sh.
set -euo pipefail
NAME=${SYSD_NAME:-cgtproxy-sysd}
BASE=${SYSD_BASE:-/var/tmp/cgtproxy-sysd/$NAME}
RAW=0; USR=
while [ $# -gt 0 ]; do case "$1" in
  --raw) RAW=1; shift;; -u) USR=$2; shift 2;; --) shift; break;; *) break;; esac; done
[ $# -gt 0 ] || set -- /bin/bash
L=$(cat "$BASE/leader.pid" 2>/dev/null || true)
[ -n "$L" ] && kill -0 "$L" 2>/dev/null || { echo "container $NAME is not running (run boot.sh)" >&2; exit 1; }
ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb LANG=C.UTF-8 HOME=/root SYSTEMD_PAGER=cat)
NS=(nsenter -t "$L" -a -r -w)
if [ "$RAW" = 1 ]; then
  if [ -n "$USR" ]; then
    uid=$("${NS[@]}" id -u "$USR")
    exec "${NS[@]}" "${ENV[@]}" setpriv --reuid="$uid" --regid="$uid" --init-groups \
      env HOME=/home/"$USR" USER="$USR" XDG_RUNTIME_DIR=/run/user/"$uid" \
      DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/"$uid"/bus "$@"
  fi
  exec "${NS[@]}" "${ENV[@]}" "$@"
fi
SR=(systemd-run --quiet --wait --collect --pipe --service-type=exec)
if [ -n "$USR" ]; then
  uid=$("${NS[@]}" id -u "$USR")
  SR+=(--uid="$USR" -p PAMName=login -E XDG_RUNTIME_DIR=/run/user/"$uid"
       -E DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/"$uid"/bus -E HOME=/home/"$USR" -E USER="$USR")
fi
exec "${NS[@]}" "${ENV[@]}" "${SR[@]}" -E TERM=dumb -E SYSTEMD_PAGER=cat -E LANG=C.UTF-8 -- "$@"
