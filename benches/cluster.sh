#!/usr/bin/env bash
# A single gerdu node and a three-node gerdu cluster side by side in one run,
# redis-benchmark as the load (-t set,get -n N -c 50 -d 100 -r 100000, -P 1
# and 16), against the single node, the cluster's leader and a follower.
# Everything is in memory and on free loopback ports; every server is
# stopped by its PID. Prints ops/s and the ratio cluster/single.
# Usage: bash benches/cluster.sh [REPS] [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-2}
bin=${2:-target/release/gerdu}
n=${N:-100000}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark: apt-get install -y redis-tools" >&2; exit 2; }
[ -x "$bin" ] || cargo build --release --quiet -p gerdu
source examples/lib.sh
pids=()
# Killed outright: stopped together, the members would each try to leave a
# membership the others are leaving too (and log every refusal).
trap 'kill -KILL "${pids[@]}" 2>/dev/null || true' EXIT
run() { "$bin" "$@" -protocols redis -log warn & pids+=($!); disown; }
# Every port at once, so that no two servers are given the same one.
mapfile -t ports < <(free_ports 12)
solo=${ports[0]}; run -id solo -httpport "${ports[1]}" -redisport "$solo" -raft "127.0.0.1:${ports[2]}"; wait_resp "$solo"
araft=${ports[3]}; leader=${ports[4]}; follower=${ports[5]}; ahttp=${ports[6]}
run -id a -httpport "$ahttp" -redisport "$leader" -raft "127.0.0.1:$araft"; wait_resp "$leader"
run -id b -httpport "${ports[7]}" -redisport "$follower" -raft "127.0.0.1:${ports[8]}" -join "127.0.0.1:$araft"; wait_resp "$follower"
c=${ports[9]}; run -id c -httpport "${ports[10]}" -redisport "$c" -raft "127.0.0.1:${ports[11]}" -join "127.0.0.1:$araft"; wait_resp "$c"
# Three voters, or the figures would be a smaller cluster's.
wait_voters "$ahttp" 3
out=$(mktemp)
for _ in $(seq "$reps"); do
  for P in 1 16; do
    for target in single leader follower; do
      port=$solo; [ "$target" = leader ] && port=$leader; [ "$target" = follower ] && port=$follower
      redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -n "$n" -c 50 -d 100 -r 100000 -P "$P" --threads 1 --csv 2>/dev/null \
        | tr -d '"' | awk -F, -v t="$target" -v P="$P" '$1=="SET"||$1=="GET"{print t, $1, P, $2}' >> "$out"
    done
  done
done
python3 - "$out" "$reps" <<'PY'
import sys, statistics as st
med = {}
for t, test, P, ops in (l.split() for l in open(sys.argv[1])):
    med.setdefault((t, test, int(P)), []).append(float(ops))
print(f"redis-benchmark -c 50 -d 100 -r 100000, median of {sys.argv[2]} runs; 3-node cluster vs single node")
print(f"{'test':4} {'P':>3} {'single':>10} {'leader':>10} {'ratio':>6} {'follower':>10} {'ratio':>6}")
for test in ("SET", "GET"):
    for P in (1, 16):
        s, l, f = (st.median(med[(t, test, P)]) for t in ("single", "leader", "follower"))
        print(f"{test:4} {P:>3} {s:>10,.0f} {l:>10,.0f} {l/s:>6.2f} {f:>10,.0f} {f/s:>6.2f}")
PY
rm -f "$out"
