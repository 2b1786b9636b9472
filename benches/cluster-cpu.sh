#!/usr/bin/env bash
# CPU per SET of a single node and of each member of a three-node gerdu
# cluster, for two builds in alternating runs (A B, B A, A B, ...): the way
# to compare builds on a machine whose throughput moves by a fifth from one
# minute to the next. Each run starts a fresh in-memory single node on free
# loopback ports and sends it redis-benchmark SETs (-n N -c 50 -d 100
# -r 100000 -P P), then does the same through the leader of a fresh
# three-node cluster; it reads every process's user + system time from
# /proc/PID/stat before and after each load, and stops the servers by their
# PIDs.
# Prints per run: the build, the single node's SETs/s and CPU ns per SET,
# the cluster's SETs/s, the CPU ns per SET of the leader and of each
# follower, and cluster/single SETs/s (the issue's target is 0.5); then each
# build's medians.
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

# load PORT: redis-benchmark's SETs/s against the server on PORT.
load() {
  redis-benchmark -h 127.0.0.1 -p "$1" -t set -n "$n" -c 50 -d 100 -r 100000 -P "$depth" --threads 1 --csv 2>/dev/null \
    | tr -d '"' | awk -F, '$1=="SET"{printf "%d", $2}'
}
# per_set BEFORE AFTER: CPU ns per SET between two readings of cpu().
per_set() { echo $(( ($2 - $1) * 1000000000 / tck / n )); }
# stop: kills the servers of this run and waits for them.
stop() { kill -KILL "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=(); }

one() { # one BIN LABEL
  local bin=$1 label=$2
  pids=()
  run() { "$bin" "$@" -protocols redis -log warn >/dev/null 2>&1 & pids+=($!); disown; }
  mapfile -t ports < <(free_ports 12)
  run -id solo -httpport "${ports[9]}" -redisport "${ports[10]}" -raft "127.0.0.1:${ports[11]}"
  wait_resp "${ports[10]}"
  local single sbefore sns
  sbefore=$(cpu "${pids[0]}")
  single=$(load "${ports[10]}")
  sns=$(per_set "$sbefore" "$(cpu "${pids[0]}")")
  stop
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
  ops=$(load "$leader")
  for p in "${pids[@]}"; do after+=("$(cpu "$p")"); done
  stop
  local ns=()
  for i in 0 1 2; do ns+=("$(per_set "${before[i]}" "${after[i]}")"); done
  printf '%s %s %s %s %s %s %s %.2f\n' "$label" "$single" "$sns" "$ops" "${ns[0]}" "${ns[1]}" "${ns[2]}" \
    "$(echo "$ops $single" | awk '{print $1 / $2}')" | tee -a "$out"
}

echo "build single_SETs/s single_ns cluster_SETs/s leader_ns follower_ns follower_ns cluster/single (redis-benchmark SET -n $n -P $depth)"
for i in $(seq "$rounds"); do
  if [ $((i % 2)) = 1 ]; then one "$a" A; one "$b" B; else one "$b" B; one "$a" A; fi
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for build in ("A", "B"):
    mine = [[float(x) for x in r[1:]] for r in rows if r[0] == build]
    m = [statistics.median(col) for col in zip(*mine)]
    print(f"median {build}: single {m[0]:,.0f} SETs/s at {m[1]:,.0f} ns/SET; cluster {m[2]:,.0f} SETs/s,"
          f" leader {m[3]:,.0f} ns/SET, followers {m[4]:,.0f} and {m[5]:,.0f}; cluster/single {m[6]:.2f}")
PY
rm -f "$out"
