#!/bin/bash
# Stop/restart semantics under a real systemd 252 (the container recipe in
# /work/shared/systemd-container, or any booted container reachable the same
# way), with the shipped unit: restart, package-upgrade style try-restart,
# SIGKILL + Restart=on-failure keep table inet cgtproxy and its routing with
# no unclassified moment; stop and disable --now remove everything. Counts
# datagrams of a `drop` app (one every 0.5 ms) that leave through a veth
# (static neighbour) around each restart.
#
#   SYSD_BASE=/var/tmp/sysd-i10 SYSD_NAME=i10sysd benches/failclosed-systemd.sh BIN BENCH_BIN
#
# BIN: the cgtproxy binary; BENCH_BIN: target/release/deps/failclosed-* (its
# --sender mode). Prints one line per check; exits non-zero on a failed check.
set -euo pipefail
BIN=$1
SENDER=$2
RECIPE=${RECIPE:-/work/shared/systemd-container}
BASE=${SYSD_BASE:-/var/tmp/sysd}
ROOT=$BASE/rootfs
here=$(cd "$(dirname "$0")/.." && pwd)

"$RECIPE/boot.sh" >/dev/null
cin() { "$RECIPE/run-in.sh" --raw "$@"; }

install -D -m755 "$BIN" "$ROOT/usr/bin/cgtproxy"
install -D -m755 "$SENDER" "$ROOT/usr/local/bin/cgtproxy-sender"
install -D -m644 "$here/misc/systemd/cgtproxy.service" "$ROOT/etc/systemd/system/cgtproxy.service"
mkdir -p "$ROOT/etc/cgtproxy"
cat > "$ROOT/etc/cgtproxy/config.yaml" <<'EOF'
version: 1
route-table: 300
tproxies:
  px: {mark: 3000, port: 7893}
rules:
  - {match: '^/app\.slice/', drop: true}
  - {match: '^/px\.slice/', tproxy: px}
EOF
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
table() { cin nft list tables 2>/dev/null | grep -q 'inet cgtproxy'; }
rules() { cin ip rule show | grep -c 'fwmark 0xbb8 lookup 300' || true; }
tx() { cin ip -s -o link show dev cgtv0 | awk '{for(i=1;i<=NF;i++) if($i=="TX:"){while($i!="\\")i++; print $(i+2); exit}}'; }

cin sh -c 'ip link add cgtv0 type veth peer name cgtv1 2>/dev/null; ip link set cgtv0 addrgenmode none; ip link set cgtv1 addrgenmode none; ip link set cgtv1 up; ip link set cgtv0 up; ip addr replace 192.0.2.1/24 dev cgtv0; ip neigh replace 192.0.2.2 lladdr 02:00:00:00:00:02 dev cgtv0 nud permanent'
cin systemctl daemon-reload
cin systemctl reset-failed cgtproxy 2>/dev/null || true
cin systemctl start cgtproxy
cin systemctl start --no-block app.slice 2>/dev/null || true
cin systemctl stop cgtproxy-sender 2>/dev/null || true
cin systemd-run --unit cgtproxy-sender --slice app.slice /usr/local/bin/cgtproxy-sender --sender 192.0.2.2:9 >/dev/null
sleep 1
check "running: table present" table
check "running: one ip rule per family" '[ "$(rules)" = 1 ]'
a=$(tx); sleep 1; b=$(tx)
check "running: the drop app sends nothing ($((b - a)) in 1 s)" '[ $((b - a)) = 0 ]'

for how in restart try-restart; do
  for i in 1 2 3 4 5; do
    cin systemctl reset-failed cgtproxy 2>/dev/null || true
    a=$(tx)
    cin systemctl $how cgtproxy
    sleep 0.3
    b=$(tx)
    echo "     $how $i: $((b - a)) datagrams escaped"
    check "$how $i: no datagram escaped" '[ $((b - a)) = 0 ]'
  done
done
check "after restarts: table present" table
check "after restarts: one ip rule, not duplicated" '[ "$(rules)" = 1 ]'

cin systemctl reset-failed cgtproxy 2>/dev/null || true
a=$(tx)
cin systemctl kill -s KILL cgtproxy
sleep 0.5
check "SIGKILL: table stays while systemd waits to restart" table
for _ in $(seq 1 50); do [ "$(cin systemctl is-active cgtproxy)" = active ] && break; sleep 0.1; done
sleep 0.3
b=$(tx)
echo "     SIGKILL + Restart=on-failure: $((b - a)) datagrams escaped"
check "SIGKILL + automatic restart: no datagram escaped" '[ $((b - a)) = 0 ]'
check "SIGKILL + automatic restart: active again" '[ "$(cin systemctl is-active cgtproxy)" = active ]'

cin systemctl stop cgtproxy
check "stop: table removed" '! table'
check "stop: ip rules removed" '[ "$(rules)" = 0 ]'
check "stop: route removed" '! cin ip route show table 300 | grep -q local'

cin systemctl enable --now cgtproxy 2>/dev/null
check "enable --now: table present" table
cin systemctl disable --now cgtproxy 2>/dev/null
check "disable --now: table removed" '! table'
check "disable --now: ip rules removed" '[ "$(rules)" = 0 ]'
cin systemctl stop cgtproxy-sender 2>/dev/null || true
exit $fail
