#!/usr/bin/env bash
# gerdu's gRPC throughput with the project's own load generator
# (benches/gerdu-bench): unary Get and Put, and the Pipeline stream with 16
# operations in flight per client, at 50 concurrent clients (one connection
# each), 100-byte values over 100,000 keys; gets run against a preloaded key
# space. gerdu (release build, single node, linearizable reads) runs on free
# loopback ports and is stopped by its PID. No gRPC peer server exists to
# compare with, so these are absolute figures: read them against the other
# protocols measured in the same run (README, Performance).
# Usage: bash benches/grpc.sh [SECONDS per run, default 5] [path/to/gerdu]; extra gerdu flags
# in BENCH_FLAGS (e.g. BENCH_FLAGS="-threads 2").
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
bin=${2:-target/release/gerdu}
bench=target/release/gerdu-bench
[ -x "$bin" ] && [ -x "$bench" ] || cargo build --release --quiet -p gerdu -p gerdu-bench
source examples/lib.sh
http=$(free); grpc=$(free); raft=$(free)
# shellcheck disable=SC2086
start_gerdu -httpport "$http" -grpcport "$grpc" -raft "127.0.0.1:$raft" -protocols grpc ${BENCH_FLAGS:-}
for _ in $(seq 100); do "$bench" grpc --addr "127.0.0.1:$grpc" -t set -n 1 -c 1 >/dev/null 2>&1 && break; sleep 0.1; done
out=$(mktemp)
for mode in unary stream; do
  for t in get set; do
    "$bench" grpc --addr "127.0.0.1:$grpc" --mode "$mode" -t "$t" --duration "$secs" -c 50 -P 16 -d 100 -r 100000 --json >> "$out"
  done
done
stop_gerdu
python3 - "$out" "${BENCH_FLAGS:-defaults}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"gerdu-bench grpc -c 50 -d 100 -r 100000; gerdu {sys.argv[2]}")
print(f"{'rpc':14} {'test':4} {'P':>3} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'errors':>6}")
for r in rows:
    rpc = "Get/Put" if r["mode"] == "unary" else "Pipeline"
    print(f"{rpc:14} {r['test']:4} {r['depth']:>3} {r['ops_per_sec']:>10,.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['p999_ms']:>9.3f} {r['errors']:>6}")
bad = [r for r in rows if r["errors"]]
sys.exit(1 if bad else 0)
PY
rm -f "$out"
