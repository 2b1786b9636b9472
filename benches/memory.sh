#!/usr/bin/env bash
# Memory per item: loads N keys (default 1,000,000) with 100-byte values into
# redis-server and into gerdu with every policy, in the same run, through the
# same client (redis-cli --pipe of the same SET stream), and reports each
# server's resident memory (VmRSS), its bytes per item, and the ratio to
# redis-server; then loads N more keys and reports what each item beyond the
# first N cost (the fixed costs, start-up and buffers, left out). The
# capacity is large enough that nothing is evicted. Each RSS is read after
# the server has been idle for SETTLE seconds (2).
# Usage: bash benches/memory.sh [path/to/gerdu]     (N=... to change the count)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
n=${N:-1000000}
# Seconds each server is left idle after a load before its RSS is read (the
# same for every server): what stays resident, not what a burst left behind.
settle=${SETTLE:-2}
command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
  || { echo "needs redis-server and redis-cli: apt-get install -y redis-server redis-tools" >&2; exit 2; }
[ -x "$bin" ] || cargo build --release --quiet -p gerdu
source examples/lib.sh
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
# The load: SET key:00000000 <100 bytes>, n times, as RESP.
python3 - "$n" "$work" <<'EOF'
import sys
n, work = int(sys.argv[1]), sys.argv[2]
v = b'x' * 100
for name, first in (('load.resp', 0), ('more.resp', n)):
    with open(f'{work}/{name}', 'wb') as f:
        for start in range(first, first + n, 10000):
            f.write(b''.join(b'*3\r\n$3\r\nSET\r\n$12\r\nkey:%08d\r\n$100\r\n%s\r\n' % (i, v)
                             for i in range(start, min(first + n, start + 10000))))
EOF
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do redis-cli -p "$1" PING >/dev/null 2>&1 && return; sleep 0.1; done; }
# load PORT PID -> "rss_kb items rss_before_kb rss_after_more_kb"
load() {
  local before after
  before=$(rss_kb "$2")
  redis-cli -p "$1" --pipe < "$work/load.resp" >/dev/null
  sleep "$settle"
  after=$(rss_kb "$2")
  local items
  items=$(redis-cli -p "$1" DBSIZE)
  redis-cli -p "$1" --pipe < "$work/more.resp" >/dev/null
  sleep "$settle"
  echo "$after $items $before $(rss_kb "$2")"
}
printf '%-9s %10s %10s %10s %9s %14s\n' server items "RSS MB" "B/item" "xredis" "B/item beyond"
rport=$(free)
redis_peer "$rport"
rpid=$!
wait_port "$rport"
read -r rrss ritems rbase rmore < <(load "$rport" "$rpid")
kill "$rpid"; wait "$rpid" 2>/dev/null || true
printf '%-9s %10d %10.1f %10.1f %9s %14.1f\n' redis "$ritems" "$(echo "$rrss/1024" | bc -l)" \
  "$(echo "($rrss-$rbase)*1024/$ritems" | bc -l)" 1.00 "$(echo "($rmore-$rrss)*1024/$n" | bc -l)"
for policy in lru lfu s3fifo wtinylfu weak; do
  port=$(free); http=$(free); raft=$(free)
  start_gerdu -type "$policy" -redisport "$port" -httpport "$http" -raft "127.0.0.1:$raft" -protocols redis \
    -capacity 100GB
  wait_port "$port"
  read -r grss gitems gbase gmore < <(load "$port" "$pid")
  kill -TERM "$pid"; wait "$pid" || true; trap cleanup EXIT
  [ "$gitems" = "$n" ] || { echo "gerdu $policy holds $gitems items, not $n" >&2; exit 1; }
  printf '%-9s %10d %10.1f %10.1f %9.2f %14.1f\n' "$policy" "$gitems" "$(echo "$grss/1024" | bc -l)" \
    "$(echo "($grss-$gbase)*1024/$gitems" | bc -l)" "$(echo "$grss/$rrss" | bc -l)" \
    "$(echo "($gmore-$grss)*1024/$n" | bc -l)"
done
echo "RSS after loading N; B/item = (RSS after - RSS before) / N; beyond = (RSS after 2N - after N) / N"
