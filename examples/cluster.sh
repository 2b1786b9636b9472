#!/usr/bin/env bash
# The Go Gerdu README's cluster, exactly as written there:
#   gerdu -id master -httpport 8080 -raft 127.0.0.1:12000
#   gerdu -id node1  -httpport 8083 -raft 127.0.0.1:12003 -join 127.0.0.1:12000
#   gerdu -id node2  -httpport 8084 -raft 127.0.0.1:12004 -join 127.0.0.1:12000
# then: a write on a follower is read on every node; SIGTERM on the leader
# makes it leave (exit 0) and the other two elect a leader and keep taking
# writes. Every server is stopped by its PID. The ports above must be free.
# Usage: bash examples/cluster.sh [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
source examples/lib.sh
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
up() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return; sleep 0.1; done; echo "FAIL :$1 never came up"; exit 1; }
field() { curl -s "http://127.0.0.1:$1/health" | python3 -c "import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(len(v) if isinstance(v, list) else v)" "$2"; }

"$bin" -id master -httpport 8080 -raft 127.0.0.1:12000 -log warn & pids+=($!); master=$!
up 8080
"$bin" -id node1 -httpport 8083 -raft 127.0.0.1:12003 -join 127.0.0.1:12000 -log warn & pids+=($!)
up 8083
"$bin" -id node2 -httpport 8084 -raft 127.0.0.1:12004 -join 127.0.0.1:12000 -log warn & pids+=($!)
up 8084

for p in 8080 8083 8084; do check "members seen by :$p" "$(field $p members)" 3; done
check "leader" "$(field 8084 leader)" master
check "PUT on follower node1" "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data World http://127.0.0.1:8083/cache/Hello)" 201
for p in 8080 8083 8084; do check "GET on :$p" "$(curl -s http://127.0.0.1:$p/cache/Hello)" World; done

kill -TERM "$master"
rc=0; wait "$master" || rc=$?
check "leader exits 0 after SIGTERM" "$rc" 0
for _ in $(seq 100); do [ "$(field 8083 members)" = 2 ] && [ "$(field 8083 leader)" != None ] && break; sleep 0.1; done
check "members after the leader left" "$(field 8083 members)" 2
check "a new leader" "$(field 8083 leader | grep -c -E '^node[12]$')" 1
check "PUT after the leader left" "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data again http://127.0.0.1:8084/cache/Hello)" 204
check "GET on node1" "$(curl -s http://127.0.0.1:8083/cache/Hello)" again

for pid in "${pids[@]:1}"; do
  kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
  check "exit code after SIGTERM" "$rc" 0
done
trap - EXIT
echo "cluster example: all checks passed"
