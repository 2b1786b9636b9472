#!/usr/bin/env bash
# Starts gerdu on a free loopback port, stores, reads and deletes a key with
# curl exactly as the Go Gerdu README shows, checks each answer, and stops the
# server by its PID. Usage: bash examples/curl.sh [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
raft=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" -httpport "$port" -raft "127.0.0.1:$raft" -log warn &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

base="http://127.0.0.1:$port/cache"
check() { if [ "$2" != "$3" ]; then echo "FAIL $1: got $2, want $3"; exit 1; fi; echo "ok   $1 -> $2"; }
check "PUT Hello=World"  "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data World "$base/Hello")" 201
check "PUT again"        "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data World "$base/Hello")" 204
check "GET Hello"        "$(curl -s "$base/Hello")" World
check "DELETE Hello"     "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$base/Hello")" 200
check "GET Hello again"  "$(curl -s -o /dev/null -w '%{http_code}' "$base/Hello")" 404
check "PUT with ttl"     "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data v "$base/session?ttl=60")" 201
check "metrics"          "$(curl -s "http://127.0.0.1:$port/metrics" | grep -c '^gerdu_adds_total 3')" 1

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
check "exit code after SIGTERM" "$rc" 0
trap - EXIT
echo "curl example: all checks passed"
