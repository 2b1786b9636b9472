#!/usr/bin/env bash
# gerdu vs redis-server, side by side in one run, with redis-benchmark as the
# neutral referee (the workload of the Redis protocol issue):
#   redis-benchmark -t set,get -n 200000 -c 50 -d 100 -r 100000 -P {1,16}
# Both servers run on free loopback ports: redis-server (apt redis-server)
# with --save '' --appendonly no, gerdu from target/release with its defaults
# (single node, linearizable reads). Runs alternate between the two servers,
# REPS times, and the table shows the median ops/s and p99 of each and the
# ratio gerdu/redis. The machine is shared: the ratio is the figure.
# Usage: bash benches/redis.sh [REPS] [path/to/gerdu]; extra gerdu flags in
# BENCH_FLAGS (e.g. BENCH_FLAGS="-threads 0").
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
bin=${2:-target/release/gerdu}
n=${N:-200000}
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null \
  || { echo "needs redis-server and redis-benchmark: apt-get install -y redis-server redis-tools" >&2; exit 2; }
[ -x "$bin" ] || cargo build --release --quiet
source examples/lib.sh
{ read -r rport; read -r gport; read -r http; read -r raft; } < <(free_ports 4)
redis_peer "$rport"
rpid=$!
# shellcheck disable=SC2086
"$bin" -redisport "$gport" -httpport "$http" -raft "127.0.0.1:$raft" -protocols redis -log warn ${BENCH_FLAGS:-} &
gpid=$!
trap 'kill "$rpid" "$gpid" 2>/dev/null || true' EXIT
for p in "$rport" "$gport"; do wait_resp "$p"; done
out=$(mktemp)
for rep in $(seq "$reps"); do
  for P in 1 16; do
    for target in redis gerdu; do
      port=$rport; [ "$target" = gerdu ] && port=$gport
      timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -n "$n" -c 50 -d 100 -r 100000 -P "$P" \
        --threads 1 --csv 2>/dev/null | tr -d '"' \
        | awk -F, -v t="$target" -v P="$P" '$1=="SET"||$1=="GET"{print t, $1, P, $2, $7}' >> "$out"
    done
  done
done
python3 - "$out" "$reps" "${BENCH_FLAGS:-defaults}" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for t, test, P, ops, p99 in rows:
    med.setdefault((t, test, int(P)), []).append((float(ops), float(p99)))
print(f"redis-benchmark -n N -c 50 -d 100 -r 100000, median of {sys.argv[2]} runs each; gerdu {sys.argv[3]}")
print(f"{'test':4} {'P':>3} {'redis ops/s':>12} {'gerdu ops/s':>12} {'ratio':>6} {'redis p99 ms':>13} {'gerdu p99 ms':>13}")
for test in ("GET", "SET"):
    for P in (1, 16):
        r = med.get(("redis", test, P)); g = med.get(("gerdu", test, P))
        if not r or not g:
            continue
        ro, rp = st.median(x[0] for x in r), st.median(x[1] for x in r)
        go, gp = st.median(x[0] for x in g), st.median(x[1] for x in g)
        print(f"{test:4} {P:>3} {ro:>12,.0f} {go:>12,.0f} {go/ro:>6.2f} {rp:>13.3f} {gp:>13.3f}")
PY
rm -f "$out"
