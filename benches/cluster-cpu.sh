#!/usr/bin/env bash
# CPU per SET of each member of a three-node gerdu cluster, for two builds
# in alternating runs (A B, B A, A B, ...): the way to compare builds on a
# machine whose throughput moves by a fifth from one minute to the next. Each
# run starts a fresh in-memory cluster on free loopback ports, sends
# redis-benchmark SETs through the leader (-n N -c 50 -d 100 -r 100000
# -P P), reads each member's user + system time from /proc/PID/stat before
# and after, and stops the members by their PIDs.
# Prints per run: the build, SETs/s, and ns of CPU per SET of the leader and
# of each follower; then each build's medians.
# Usage: N=2000000 P=16 bash benches/cluster-cpu.sh path/to/gerdu-A path/to/gerdu-B [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash benches/cluster-cpu.sh GERDU_A GERDU_B [ROUNDS]" >&2; exit 2; }
a=$1 b=$2 rounds=${3:-3}
n=${N:-2000000} depth=${P:-16}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark: apt-get install -y redis-tools" >&2; exit 2; }
for bin in "$a" "$b"; do [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }; done
source examples/lib.sh
tck=$(getconf CLK_TCK)
pids=()
trap 'kill -KILL "${pids[@]}" 2>/dev/null || true' EXIT
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
out=$(mktemp)

one() { # one BIN LABEL
  local bin=$1 label=$2
  pids=()
  run() { "$bin" "$@" -protocols redis -log warn >/dev/null 2>&1 & pids+=($!); disown; }
  mapfile -t ports < <(free_ports 9)
  local araft=${ports[0]} leader=${ports[1]} ahttp=${ports[2]}
  run -id a -httpport "$ahttp" -redisport "$leader" -raft "127.0.0.1:$araft"; wait_resp "$leader"
  run -id b -httpport "${ports[3]}" -redisport "${ports[4]}" -raft "127.0.0.1:${ports[5]}" -join "127.0.0.1:$araft"
  wait_resp "${ports[4]}"
  run -id c -httpport "${ports[6]}" -redisport "${ports[7]}" -raft "127.0.0.1:${ports[8]}" -join "127.0.0.1:$araft"
  wait_resp "${ports[7]}"
  wait_voters "$ahttp" 3
  local before=() after=() p
  for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
  local ops
  ops=$(redis-benchmark -h 127.0.0.1 -p "$leader" -t set -n "$n" -c 50 -d 100 -r 100000 -P "$depth" --threads 1 --csv 2>/dev/null \
    | tr -d '"' | awk -F, '$1=="SET"{printf "%d", $2}')
  for p in "${pids[@]}"; do after+=("$(cpu "$p")"); done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  local ns=()
  for i in 0 1 2; do ns+=($(( (after[i] - before[i]) * 1000000000 / tck / n ))); done
  printf '%s %s %s %s %s\n' "$label" "$ops" "${ns[0]}" "${ns[1]}" "${ns[2]}" | tee -a "$out"
}

echo "build SETs/s leader_ns follower_ns follower_ns (redis-benchmark SET -n $n -P $depth through the leader)"
for i in $(seq "$rounds"); do
  if [ $((i % 2)) = 1 ]; then one "$a" A; one "$b" B; else one "$b" B; one "$a" A; fi
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for build in ("A", "B"):
    mine = [[int(x) for x in r[1:]] for r in rows if r[0] == build]
    med = [statistics.median(col) for col in zip(*mine)]
    print(f"median {build}: {med[0]:,.0f} SETs/s, leader {med[1]:,.0f} ns/SET, followers {med[2]:,.0f} and {med[3]:,.0f} ns/SET")
PY
rm -f "$out"
