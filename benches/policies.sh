#!/usr/bin/env bash
# GET throughput of every policy with 1 and 2 worker threads, beside
# redis-server in the same run (redis-benchmark as the referee): 50
# connections, 100-byte values, 100,000 keys preloaded, -P 1 and -P 16.
# A GET is a policy read (a shard lock, the order's bookkeeping, a copy),
# so this shows what each order costs on the read path. The ratio to
# redis-server is the figure; the machine is shared.
# Usage: bash benches/policies.sh [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
n=${N:-300000}
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null \
  || { echo "needs redis-server and redis-benchmark: apt-get install -y redis-server redis-tools" >&2; exit 2; }
[ -x "$bin" ] || cargo build --release --quiet -p gerdu
source examples/lib.sh
bench() { # PORT P -> GET ops/s
  redis-benchmark -h 127.0.0.1 -p "$1" -t get -n "$n" -c 50 -d 100 -r 100000 -P "$2" --threads 1 --csv 2>/dev/null \
    | tr -d '"' | awk -F, '$1=="GET"{print $2}'
}
preload() { redis-benchmark -h 127.0.0.1 -p "$1" -t set -n 200000 -c 50 -d 100 -r 100000 -P 16 -q >/dev/null 2>&1; }
wait_port() { for _ in $(seq 100); do redis-cli -p "$1" PING >/dev/null 2>&1 && return; sleep 0.1; done; }
rport=$(free)
redis_peer "$rport"
rpid=$!
wait_port "$rport"
preload "$rport"
r1=$(bench "$rport" 1); r16=$(bench "$rport" 16)
printf '%-9s %7s %12s %12s %8s %8s\n' policy threads "GET P1" "GET P16" "xredis1" "xredis16"
printf '%-9s %7s %12.0f %12.0f\n' redis - "$r1" "$r16"
for policy in lru lfu s3fifo wtinylfu weak; do
  for threads in 1 2; do
    port=$(free); http=$(free); raft=$(free)
    start_gerdu -type "$policy" -threads "$threads" -redisport "$port" -httpport "$http" \
      -raft "127.0.0.1:$raft" -protocols redis -capacity 1GB
    wait_port "$port"
    preload "$port"
    g1=$(bench "$port" 1); g16=$(bench "$port" 16)
    kill -TERM "$pid"; wait "$pid" || true; trap - EXIT
    printf '%-9s %7s %12.0f %12.0f %8.2f %8.2f\n' "$policy" "$threads" "$g1" "$g16" \
      "$(python3 -c "print($g1/$r1)")" "$(python3 -c "print($g16/$r16)")"
  done
done
kill "$rpid" 2>/dev/null || true
