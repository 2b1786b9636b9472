#!/usr/bin/env bash
# Starts gerdu with the gRPC protocol on free loopback ports, runs the Python
# grpcio example against it (examples/python/grpc_example.py: stubs
# generated from proto/gerdu.proto at run time; pip packages grpcio,
# grpcio-tools, grpcio-health-checking, grpcio-reflection), then stops the
# server by its PID.
# Usage: bash examples/grpc.sh [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
source examples/lib.sh
http=$(free); grpc=$(free); raft=$(free)
start_gerdu -httpport "$http" -grpcport "$grpc" -raft "127.0.0.1:$raft" -protocols grpc
python3 examples/python/grpc_example.py "$grpc"
stop_gerdu
echo "grpc example: all checks passed"
