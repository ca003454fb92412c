#!/bin/sh
# Regenerate startup-order.txt (see ./cc): run the release daemon under
# callgrind until it is ready, with 1,000 cgroups, and list the functions it
# ran, demangled. Needs root, valgrind, cgroup2. Run after changes to the
# startup path or a compiler/dependency update, then rebuild.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN:-$top/target/release/cgtproxy}
root=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
work=$(mktemp -d)
cg=$root/cgtproxy-order-$$
ns=cgtproxy-order-$$
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    ip netns delete "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
i=0
while [ $i -lt 1000 ]; do
    mkdir -p "$cg/a$((i / 100))/leaf$i"
    i=$((i + 1))
done
ip netns add "$ns"
ip -n "$ns" link set lo up
printf 'version: 1\ntproxies: {px: {mark: 3000, port: 7893}}\nrules:\n  - {match: "^/%s/", tproxy: px}\n' \
    "$(basename "$cg")" > "$work/config.yaml"
CGTPROXY_STATE=$work/state.json nsenter --net=/run/netns/"$ns" valgrind --tool=callgrind --demangle=no \
    --callgrind-out-file="$work/callgrind.out" "$bin" -c "$work/config.yaml" > "$work/log" 2>&1 &
pid=$!
n=0
until grep -q ready "$work/log"; do
    n=$((n + 1))
    [ $n -lt 600 ] || { cat "$work/log"; exit 1; }
    sleep 0.1
done
kill "$pid"
wait "$pid" || true
pid=
# Functions of the binary itself that ran (callgrind names each one once,
# as fn=(id) name, later fn=(id)), as nm -C prints them.
awk '
    match($0, /^c?ob=\([0-9]+\)/) { id = substr($0, 1, RLENGTH); sub(/^c/, "", id); if (RLENGTH < length($0)) ob[id] = substr($0, RLENGTH + 2) }
    /^ob=/ { cur = ob[substr($0, 1, index($0, ")"))] }
    match($0, /^c?fn=\([0-9]+\)/) { id = substr($0, 1, RLENGTH); sub(/^c/, "", id); if (RLENGTH < length($0)) fn[id] = substr($0, RLENGTH + 2) }
    /^fn=/ && cur ~ /\/cgtproxy$/ { name = fn[substr($0, 1, index($0, ")"))]; sub(/'"'"'[0-9]+$/, "", name); print name }
' "$work/callgrind.out" | sort -u > "$work/ran"
nm -p -S --defined-only "$bin" > "$work/raw"
nm -p -S -C --defined-only "$bin" > "$work/demangled"
# "SIZE NAME": ./cc tells generic instances that share a name by their size.
awk -v ran="$work/ran" -v demangled="$work/demangled" '
    BEGIN { while ((getline l < ran) > 0) want[l] = 1 }
    {
        getline d < demangled
        sub(/^[^ ]* [^ ]* [^ ]* /, "", d)
        if (NF == 4 && ($4 in want)) print $2, d
    }' "$work/raw" | sort -u -k2 -k1,1 > "$top/misc/link/startup-order.txt"
echo "$(wc -l < "$top/misc/link/startup-order.txt") functions in misc/link/startup-order.txt"
