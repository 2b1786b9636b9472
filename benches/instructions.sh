#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind: a
# figure that does not move with the machine's noise, for comparing builds
# and for comparing gerdu with redis-server request for request (what the
# kernel does, two thirds of a request at -P 1, is not in it;
# benches/referee.sh measures the whole).
#
# Each server runs alone under callgrind on a free loopback port, is loaded
# with every key (gerdu-bench SET -P 16), then for each workload its counters
# are zeroed, gerdu-bench sends N requests (50 clients, 100-byte values,
# 10,000 keys), and the counters are dumped: instructions / N is printed.
# TOP=K also prints each workload's K costliest functions (self cost).
# Usage: bash benches/instructions.sh [N, default 20000] [path/to/gerdu]
#        SERVERS="gerdu redis" WORKLOADS="get:1 set:1 get:16 set:16"
# memcached is not measured: it sets its open-files limit to its connection
# count at start, which valgrind refuses, so it does not start under it.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
bin=${2:-target/release/gerdu}
servers=${SERVERS:-gerdu redis}
workloads=${WORKLOADS:-get:1 set:1 get:16 set:16}
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install -y valgrind" >&2; exit 2; }
cargo build --release --quiet -p gerdu -p gerdu-bench
bench=target/release/gerdu-bench
source examples/lib.sh
out=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT

# top FILE: the costliest functions of one callgrind dump, by self cost.
top() {
  python3 - "$1" "$n" "${TOP:-0}" <<'PY'
import collections, re, sys
names, cost = {}, collections.Counter()
fn, skip = None, False
def name(tok):
    m = re.match(r'\((\d+)\)(?: (.*))?', tok)
    if m.group(2): names[m.group(1)] = m.group(2)
    return names.get(m.group(1), tok)
for line in open(sys.argv[1]):
    if line.startswith('fn='): fn = name(line[3:].strip())
    elif line.startswith('cfn='): name(line[4:].strip())  # a callee's name may be defined here first
    elif line.startswith('calls='): skip = True
    elif line[:1].isdigit() or line[:1] in '+-*':
        parts = line.split()
        if skip: skip = False
        elif len(parts) > 1: cost[fn] += int(parts[1])
for f, c in cost.most_common(int(sys.argv[3])):
    print(f"      {c / int(sys.argv[2]):8.1f}  {f[:120]}")
PY
}

# measure LABEL PROTO PORT: every workload against the server on PORT.
measure() {
  local label=$1 proto=$2 port=$3 kind
  kind=$([ "$proto" = resp ] && echo redis || echo memcache)
  "$bench" "$kind" --addr "127.0.0.1:$port" -t set -n 20000 -r 10000 -P 16 >/dev/null
  for w in $workloads; do
    local test=${w%%:*} depth=${w##*:} dump
    callgrind_control -z "$pid" >/dev/null 2>&1
    "$bench" "$kind" --addr "127.0.0.1:$port" -t "$test" -n "$n" -r 10000 -P "$depth" --no-preload >/dev/null
    callgrind_control -d "$pid" >/dev/null 2>&1
    dump=$(ls -t "$out/$label.$proto".* | head -n 1)
    awk -v n="$n" -v l="$label" -v p="$proto" -v t="$test" -v d="$depth" \
      '/^summary:/ {printf "%-10s %-5s %-4s P%-3s %8.0f instructions per request\n", l, p, t, d, $2 / n}' "$dump"
    [ "${TOP:-0}" -gt 0 ] && top "$dump"
    rm -f "$dump"
  done
}

# run LABEL PROTO PORT CMD...: CMD under callgrind, measured, stopped.
run() {
  local label=$1 proto=$2 port=$3
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$out/$label.$proto" "$@" >/dev/null 2>"$out/$label.$proto.log" &
  pid=$!
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  measure "$label" "$proto" "$port"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

for server in $servers; do
  case $server in
    gerdu)
      for proto in ${PROTOS:-resp mc}; do
        mapfile -t p < <(free_ports 3)
        run gerdu "$proto" "${p[0]}" "$bin" -id solo -redisport "${p[0]}" -mcdport "${p[0]}" -httpport "${p[1]}" \
          -raft "127.0.0.1:${p[2]}" -protocols "$([ "$proto" = mc ] && echo mcd || echo redis)" -log warn
      done
      ;;
    redis)
      command -v redis-server >/dev/null || { echo "redis-server not installed: skipped" >&2; continue; }
      mapfile -t p < <(free_ports 1)
      run redis-server resp "${p[0]}" redis-server --port "${p[0]}" --bind 127.0.0.1 --save '' --appendonly no
      ;;
  esac
done
rm -rf "$out"
