#!/usr/bin/env bash
# Starts gerdu with the Redis protocol on free loopback ports and talks to it
# with the real redis-cli (apt redis-tools): strings, TTLs, counters, the
# keyspace, INFO, pipelining (--pipe) and a wrong-arity error, checking each
# answer; then stops the server by its PID.
# Usage: bash examples/redis-cli.sh [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
source examples/lib.sh
http=$(free); redis=$(free); raft=$(free)
start_gerdu -httpport "$http" -redisport "$redis" -raft "127.0.0.1:$raft" -protocols redis
for _ in $(seq 100); do redis-cli -p "$redis" PING >/dev/null 2>&1 && break; sleep 0.1; done

cli() { redis-cli -h 127.0.0.1 -p "$redis" "$@"; }
check "PING"              "$(cli PING)" PONG
check "SET Hello World"   "$(cli SET Hello World)" OK
check "GET Hello"         "$(cli GET Hello)" World
check "SET NX existing"   "$(cli SET Hello x NX)" ""
check "SET EX"            "$(cli SET session v EX 60)" OK
check "TTL"               "$(cli TTL session)" 60
check "INCRBY"            "$(cli INCRBY visits 5)" 5
check "INCRBYFLOAT"       "$(cli INCRBYFLOAT price 2.5)" 2.5
check "MSET/MGET"         "$(cli MSET a 1 b 2 >/dev/null; cli MGET a b missing | tr '\n' ,)" "1,2,,"
check "EXISTS"            "$(cli EXISTS Hello a missing)" 2
check "DBSIZE"            "$(cli DBSIZE)" 6
check "KEYS"              "$(cli KEYS 'H*')" Hello
check "wrong arity"       "$(cli GET 2>&1)" "ERR wrong number of arguments for 'get' command"
check "unknown command"   "$(cli HSET h f v 2>&1)" "ERR unknown command 'HSET', with args beginning with: 'h' 'f' 'v' "
check "INFO replication"  "$(cli INFO replication | grep -c '^raft_role:leader')" 1
# 1000 SETs through --pipe (the mass-insertion protocol): one write, replies counted.
check "--pipe 1000 SETs"  "$(for i in $(seq 1000); do printf 'SET k%s %s\r\n' "$i" "$i"; done | cli --pipe | grep -c 'errors: 0, replies: 1000')" 1
check "GET k777"          "$(cli GET k777)" 777
check "DEL Hello"         "$(cli DEL Hello)" 1
check "GET Hello again"   "$(cli GET Hello)" ""

stop_gerdu
echo "redis-cli example: all checks passed"
