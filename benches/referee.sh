#!/usr/bin/env bash
# The referee benchmark (../shared/bench/peers.sh: redis-benchmark and
# kvbench on RESP and memcached) in alternating pairs: redis-server and
# memcached, then gerdu (one node, release, defaults), REPS times, each on
# free loopback ports and stopped by its PID before the other starts. Prints
# for every row the medians, gerdu/peer of every pair and their median, and
# the median p99s. Raw rows stay in a temporary folder (printed at the end).
# CEILING=1 adds a third server to every pair: gerdu-ceiling, which answers
# every request with a canned reply and does no other work (the system calls
# of Redis' event loop and nothing else), so its ratio is the most any server
# can reach here with these load generators. PIPES="1" (default "1 16")
# picks the pipeline depths.
# Usage: bash benches/referee.sh [REPS, default 5] [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
bin=${2:-target/release/gerdu}
peers=../shared/bench/peers.sh
[ -f "$peers" ] || { echo "needs $peers (the shared referee)" >&2; exit 2; }
for tool in redis-server memcached redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y redis-server redis-tools memcached" >&2; exit 2; }
done
[ -x "$bin" ] || cargo build --release --quiet -p gerdu
ceiling=${CEILING:-0}
pipes=${PIPES:-1 16}
[ "$ceiling" = 1 ] && cargo build --release --quiet -p gerdu-bench --bin gerdu-ceiling
source examples/lib.sh
out=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
stop() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
# referee LABEL RESP_PORT MC_PORT: peers.sh once against the servers on those
# ports (then stopped), into $out/LABEL$r.
referee() {
  wait_resp "$2"
  bash "$peers" --resp "$2" --mc "$3" --no-wrk --reps 1 --pipelines "$pipes" --label "$1" --out "$out/$1$r" >/dev/null
  stop
}
for r in $(seq "$reps"); do
  mapfile -t p < <(free_ports 6)
  redis_peer "${p[0]}"; pids+=($!)
  memcached_peer "${p[1]}"; pids+=($!)
  referee peer "${p[0]}" "${p[1]}"
  if [ "$ceiling" = 1 ]; then
    target/release/gerdu-ceiling --proto resp --port "${p[0]}" & pids+=($!)
    target/release/gerdu-ceiling --proto mc --port "${p[1]}" & pids+=($!)
    referee ceiling "${p[0]}" "${p[1]}"
  fi
  "$bin" -id solo -redisport "${p[2]}" -mcdport "${p[3]}" -httpport "${p[4]}" -raft "127.0.0.1:${p[5]}" \
    -protocols redis,mcd -log warn & pids+=($!)
  referee gerdu "${p[2]}" "${p[3]}"
  echo "pair $r of $reps done" >&2
done
python3 - "$out" "$reps" "$ceiling" <<'PY'
import collections, csv, statistics as st, sys
out, reps, ceiling = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for r in range(1, reps + 1):
    for who in ("peer", "gerdu") + (("ceiling",) if ceiling else ()):
        for row in csv.DictReader(open(f"{out}/{who}{r}/raw.csv")):
            key = (row["target"].split("-")[-1], row["tool"], row["test"], int(row["P"]))
            rows[key][who].append((float(row["ops"]), float(row["p99_ms"])))
print(f"peers.sh in {reps} alternating pairs; gerdu/peer per pair and its median; median p99 ms")
if ceiling:
    print("ceiling: gerdu-ceiling/peer, the median of the same pairs (a server that does no work)")
print(f"{'proto':5} {'tool':16} {'test':4} {'P':>3} {'peer ops/s':>11} {'gerdu ops/s':>11} {'ratio':>6}  "
      f"{'p99 peer':>8} {'p99 gerdu':>9}  " + ("ceiling  " if ceiling else "") + "pairs")
for key in sorted(rows):
    peer, gerdu = rows[key]["peer"], rows[key]["gerdu"]
    pairs = [g[0] / p[0] for p, g in zip(peer, gerdu)]
    ceil = f"{st.median(c[0] / p[0] for p, c in zip(peer, rows[key]['ceiling'])):>7.2f}  " if ceiling else ""
    print(f"{key[0]:5} {key[1]:16} {key[2]:4} {key[3]:>3} {st.median(x[0] for x in peer):>11,.0f} "
          f"{st.median(x[0] for x in gerdu):>11,.0f} {st.median(pairs):>6.2f}  {st.median(x[1] for x in peer):>8.3f} "
          f"{st.median(x[1] for x in gerdu):>9.3f}  {ceil}{' '.join(f'{x:.2f}' for x in pairs)}")
PY
echo "raw rows: $out" >&2
