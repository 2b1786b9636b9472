#!/usr/bin/env bash
# Miss ratios of every policy (lru, lfu, s3fifo, wtinylfu) on the ARC
# paper's OLTP and P3 block traces and on seeded Zipf workloads (α 0.8, 1.0,
# 1.2, and 1.0 with a scan), at 1%, 5% and 10% of the unique keys, beside
# libCacheSim's reference figures; then the targets: lru within ±0.005 of
# LRU, s3fifo within ±0.01 of S3-FIFO, and on every trace row the best
# policy at or below the best reference. Exits non-zero if one is missed.
# The policies run in-process (gerdu-bench hitratio), one shard, fixed seed.
# Usage: bash benches/hitratio.sh [TRACES_DIR, default ../shared/traces]; extra
# gerdu-bench hitratio flags after it (--json, --policies lru,s3fifo, ...).
# Traces missing from TRACES_DIR are skipped (the Zipf rows still run).
set -euo pipefail
cd "$(dirname "$0")/.."
traces=${1:-../shared/traces}
shift || true
# The same package set as compare.sh and .ci/run build: cargo unifies
# dependency features across the packages it builds, so gerdu-bench alone
# would rebuild much of the tree that those just built.
cargo build --release --quiet -p gerdu -p gerdu-bench
target/release/gerdu-bench hitratio --traces "$traces" --check "$@"
