#!/usr/bin/env bash
# gerdu against its peers, every protocol, one command, one run:
#
#   redis-server (apt), memcached (apt) and gerdu (release; one node serving
#   RESP, memcached, HTTP and gRPC; and a three-node cluster) on free
#   loopback ports, then the same workloads against each:
#   - RESP: redis-benchmark (the neutral referee) and gerdu-bench redis,
#     GET and SET at -P 1 and 16, against redis-server and gerdu;
#   - memcached: gerdu-bench memcache, get and set at -P 1 and 16, against
#     memcached and gerdu;
#   - HTTP (-P 1: HTTP/1.1; -P 16: HTTP/2 streams, and pipelined HTTP/1.1)
#     and gRPC (unary; stream with 16 in flight) against gerdu: ops/s (no
#     peer speaks them);
#   - a three-node cluster: SET through the leader, against the single node.
#   Always 50 connections, 100-byte values, 100,000 keys (uniform).
#
# Every server is stopped by its PID at the end. The machine is shared and
# noisy: the ratios from one run are the figures, not the absolute ops/s.
# Usage: bash benches/compare.sh [SECONDS per gerdu-bench run, default 3]
#   N=200000 (requests per redis-benchmark run)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
n=${N:-200000}
for tool in redis-server redis-benchmark redis-cli memcached; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y redis-server redis-tools memcached" >&2; exit 2; }
done
bin=target/release/gerdu
bench=target/release/gerdu-bench
cargo build --release --quiet -p gerdu -p gerdu-bench
source examples/lib.sh
pids=()
cluster=()
out=$(mktemp)
# The cluster's nodes are killed outright: stopped together they would each
# try to leave a membership the others are leaving too.
trap 'kill "${pids[@]}" 2>/dev/null || true; kill -KILL "${cluster[@]}" 2>/dev/null || true; rm -f "$out"' EXIT

# Every port at once, so that no two servers are given the same one.
mapfile -t ports < <(free_ports 17)
rport=${ports[0]}; mport=${ports[1]}
redis_peer "$rport"; pids+=($!)
memcached_peer "$mport"; pids+=($!)
g_redis=${ports[2]}; g_mcd=${ports[3]}; g_http=${ports[4]}; g_grpc=${ports[5]}
"$bin" -id solo -redisport "$g_redis" -mcdport "$g_mcd" -httpport "$g_http" -grpcport "$g_grpc" \
  -raft "127.0.0.1:${ports[6]}" -protocols redis,mcd,grpc -capacity 4GB -log warn & pids+=($!)
# The cluster: a leads, b and c join it.
araft=${ports[7]}; leader=${ports[8]}; ahttp=${ports[9]}
"$bin" -id a -redisport "$leader" -httpport "$ahttp" -raft "127.0.0.1:$araft" -protocols redis -capacity 4GB -log warn & cluster+=($!); disown
at=10
for name in b c; do
  wait_resp "$leader"
  "$bin" -id "$name" -redisport "${ports[$at]}" -httpport "${ports[$((at + 1))]}" -raft "127.0.0.1:${ports[$((at + 2))]}" \
    -join "127.0.0.1:$araft" -protocols redis -capacity 4GB -log warn & cluster+=($!); disown
  at=$((at + 3))
done
# The cluster line means three voters: wait for them (a node that could not
# start or join fails the run instead of measuring a smaller cluster).
wait_voters "$ahttp" 3
for p in "$rport" "$g_redis" "$leader"; do wait_resp "$p"; done
for _ in $(seq 100); do "$bench" memcache --addr "127.0.0.1:$mport" -t set -n 1 -c 1 >/dev/null 2>&1 && break; sleep 0.1; done

# row SUITE TARGET TEST P OPS P99_MS
row() { echo "$*" >> "$out"; }
referee() { # target port P
  redis-benchmark -h 127.0.0.1 -p "$2" -t set,get -n "$n" -c 50 -d 100 -r 100000 -P "$3" --threads 1 --csv 2>/dev/null \
    | tr -d '"' | awk -F, -v t="$1" -v P="$3" '$1=="SET"||$1=="GET"{print "redis-benchmark", t, $1, P, $2, $7}' >> "$out"
}
load() { # suite target protocol addr test P [extra...]
  local suite=$1 target=$2 protocol=$3 addr=$4 t=$5 P=$6
  shift 6
  "$bench" "$protocol" --addr "$addr" -t "$t" -P "$P" -c 50 -d 100 -r 100000 --duration "$secs" --json "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], sys.argv[2], sys.argv[3].upper(), sys.argv[4], r["ops_per_sec"], r["p99_ms"], r["errors"])' \
      "$suite" "$target" "$t" "$P" >> "$out"
}

echo "running 34 loads (about $(( 34 * (secs + 4) )) s)..." >&2
for P in 1 16; do
  referee redis "$rport" "$P"
  referee gerdu "$g_redis" "$P"
  for t in get set; do
    load resp redis redis "127.0.0.1:$rport" "$t" "$P"
    load resp gerdu redis "127.0.0.1:$g_redis" "$t" "$P"
    load memcached memcached memcache "127.0.0.1:$mport" "$t" "$P"
    load memcached gerdu memcache "127.0.0.1:$g_mcd" "$t" "$P"
    load http gerdu http "127.0.0.1:$g_http" "$t" "$P"
    [ "$P" = 1 ] || load http1 gerdu http "127.0.0.1:$g_http" "$t" "$P" --pipeline
  done
done
for t in get set; do
  load grpc gerdu grpc "127.0.0.1:$g_grpc" "$t" 1 --mode unary
  load grpc gerdu grpc "127.0.0.1:$g_grpc" "$t" 16 --mode stream
done
for P in 1 16; do
  load cluster single redis "127.0.0.1:$g_redis" set "$P"
  load cluster leader redis "127.0.0.1:$leader" set "$P"
done

python3 - "$out" "$secs" "$n" <<'PY'
import sys
rows = {}
errors = 0
for line in open(sys.argv[1]):
    f = line.split()
    suite, target, test, P, ops, p99 = f[:6]
    errors += int(f[6]) if len(f) > 6 else 0
    rows[(suite, target, test, int(P))] = (float(ops), float(p99))
secs, n = sys.argv[2], sys.argv[3]
print(f"gerdu vs peers, one run: 50 connections, 100-byte values, 100,000 keys; gerdu-bench {secs} s per run, redis-benchmark -n {n}")
print(f"{'suite':18} {'test':4} {'P':>3} {'peer ops/s':>12} {'gerdu ops/s':>12} {'ratio':>6} {'peer p99':>9} {'gerdu p99':>9}")
for suite, peer in (("redis-benchmark", "redis"), ("resp", "redis"), ("memcached", "memcached")):
    for test in ("GET", "SET"):
        for P in (1, 16):
            p, g = rows.get((suite, peer, test, P)), rows.get((suite, "gerdu", test, P))
            if p and g:
                name = suite if suite != "resp" else "resp gerdu-bench"
                print(f"{name:18} {test:4} {P:>3} {p[0]:>12,.0f} {g[0]:>12,.0f} {g[0]/p[0]:>6.2f} {p[1]:>8.3f}ms {g[1]:>8.3f}ms")
for suite, label in (("http", "http (P16: h2)"), ("http1", "http/1.1 pipeline"), ("grpc", "grpc (P16: stream)")):
    for test in ("GET", "SET"):
        for P in (1, 16):
            g = rows.get((suite, "gerdu", test, P))
            if g:
                print(f"{label:18} {test:4} {P:>3} {'-':>12} {g[0]:>12,.0f} {'-':>6} {'-':>9} {g[1]:>8.3f}ms")
for P in (1, 16):
    s, l = rows.get(("cluster", "single", "SET", P)), rows.get(("cluster", "leader", "SET", P))
    if s and l:
        print(f"{'3-node cluster':18} {'SET':4} {P:>3} {s[0]:>12,.0f} {l[0]:>12,.0f} {l[0]/s[0]:>6.2f} {s[1]:>8.3f}ms {l[1]:>8.3f}ms  (peer = single node)")
print(f"errors: {errors}")
sys.exit(1 if errors else 0)
PY
