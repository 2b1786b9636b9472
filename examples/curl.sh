#!/usr/bin/env bash
# Starts gerdu on a free loopback port, stores, reads and deletes a key with
# curl exactly as the Go Gerdu README shows, checks each answer, and stops the
# server by its PID. Usage: bash examples/curl.sh [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
source examples/lib.sh
port=$(free); raft=$(free)
start_gerdu -httpport "$port" -raft "127.0.0.1:$raft"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

base="http://127.0.0.1:$port/cache"
check "PUT Hello=World"  "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data World "$base/Hello")" 201
check "PUT again"        "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data World "$base/Hello")" 204
check "GET Hello"        "$(curl -s "$base/Hello")" World
check "DELETE Hello"     "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$base/Hello")" 200
check "GET Hello again"  "$(curl -s -o /dev/null -w '%{http_code}' "$base/Hello")" 404
check "PUT with ttl"     "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data v "$base/session?ttl=60")" 201
check "metrics"          "$(curl -s "http://127.0.0.1:$port/metrics" | grep -c '^gerdu_adds_total 3')" 1

# Backup, lose a key, restore.
backup=$(mktemp)
curl -s -X PUT --data kept "$base/keep" >/dev/null
check "GET /backup"      "$(curl -sfL -o "$backup" -w '%{http_code}' "http://127.0.0.1:$port/backup")" 200
check "DELETE keep"      "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$base/keep")" 200
check "POST /restore"    "$(curl -sf --data-binary @"$backup" "http://127.0.0.1:$port/restore" | grep -o '"restored":[0-9]*')" '"restored":2'
check "GET keep"         "$(curl -s "$base/keep")" kept
rm -f "$backup"

stop_gerdu
echo "curl example: all checks passed"
