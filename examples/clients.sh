#!/usr/bin/env bash
# Starts gerdu (HTTP, Redis, memcached and gRPC on free loopback ports), runs
# every client example whose toolchain is installed, checks what each one
# printed, and reports which ran and which were skipped (and why). Fails if
# any example that ran failed, or if REQUIRE_ALL=1 and one was skipped.
# Usage: bash examples/clients.sh [path/to/gerdu]
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
[ -x "$bin" ] || cargo build --release --quiet -p gerdu || exit 1
source examples/lib.sh
http=$(free); redis=$(free); mcd=$(free); grpc=$(free); raft=$(free)
start_gerdu -httpport "$http" -redisport "$redis" -mcdport "$mcd" -grpcport "$grpc" -raft "127.0.0.1:$raft" \
  -protocols redis,mcd,grpc
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$http"
work=$(mktemp -d)

http_want='PUT /cache/Hello -> 201
GET /cache/Hello -> 200 World
DELETE /cache/Hello -> 200
GET /cache/Hello -> 404'
grpc_want='Put Hello -> created=true
Get Hello -> World
Delete Hello -> ok
Get Hello -> NotFound'
redis_want='SET Hello -> OK
GET Hello -> World
DEL Hello -> 1
GET Hello -> (nil)'

ran=(); skipped=(); failed=()
# example NAME WANT TOOL COMMAND...: runs COMMAND if TOOL is installed and
# compares its output with WANT ("-" = only the exit status counts).
example() {
  local name=$1 want=$2 tool=$3
  shift 3
  if ! command -v "$tool" >/dev/null 2>&1; then
    skipped+=("$name (no $tool)")
    return
  fi
  local got rc=0
  got=$(timeout 120 "$@" 2>"$work/err") || rc=$?
  if [ "$rc" -ne 0 ] || { [ "$want" != - ] && [ "$got" != "$want" ]; }; then
    failed+=("$name")
    printf 'FAIL %s (exit %s)\n--- got\n%s\n--- want\n%s\n--- stderr\n%s\n' "$name" "$rc" "$got" "$want" \
      "$(tail -20 "$work/err")"
    return
  fi
  ran+=("$name")
  echo "ok   $name"
}
# A library the example needs: skip with the reason when it is missing.
have_py() { python3 -c "import $1" 2>/dev/null; }

example "http/curl" "$http_want" curl bash examples/http/curl.sh "$base"
example "http/python" "$http_want" python3 python3 examples/http/python.py "$base"
example "http/node" "$http_want" node node examples/http/node.js "$base"
example "http/go" "$http_want" go go run examples/http/main.go "$base"
example "http/java" "$http_want" java java examples/http/Main.java "$base"
example "http/ruby" "$http_want" ruby ruby examples/http/ruby.rb "$base"
example "http/perl" "$http_want" perl perl examples/http/perl.pl "$base"
example "http/php" "$http_want" php php examples/http/php.php "$base"
if command -v rustc >/dev/null && rustc -O --edition 2021 examples/http/rust.rs -o "$work/rust-http" 2>"$work/err"; then
  example "http/rust" "$http_want" "$work/rust-http" "$work/rust-http" "$base"
else
  skipped+=("http/rust (no rustc, or it did not compile)")
fi
if have_py redis; then
  example "redis/python (redis-py)" "$redis_want" python3 python3 examples/redis/python.py "$redis"
else
  skipped+=("redis/python (pip install redis)")
fi
if [ -d examples/redis/node/node_modules/redis ]; then
  example "redis/node (node-redis)" "$redis_want" node node examples/redis/node/index.js "$redis"
else
  skipped+=("redis/node (cd examples/redis/node && npm install)")
fi
if have_py pymemcache; then
  example "memcached/python (pymemcache)" - python3 python3 examples/python/pymemcache_example.py "$mcd"
else
  skipped+=("memcached/python (pip install pymemcache)")
fi
if have_py grpc_tools; then
  example "grpc/python (grpcio)" - python3 python3 examples/python/grpc_example.py "$grpc"
else
  skipped+=("grpc/python (pip install grpcio grpcio-tools grpcio-health-checking grpcio-reflection)")
fi
# A client example needs no optimizing: the dev profile builds it in a
# fraction of the time (and reuses what `cargo test` already built).
if command -v cargo >/dev/null && cargo build --quiet --example grpc 2>"$work/err"; then
  example "grpc/rust (tonic)" "$grpc_want" cargo target/debug/examples/grpc "http://127.0.0.1:$grpc"
else
  skipped+=("grpc/rust (no cargo, or the example did not build)")
fi

stop_gerdu
rm -rf "$work"
echo "ran ${#ran[@]}: ${ran[*]}"
[ ${#skipped[@]} -eq 0 ] || printf 'skipped: %s\n' "${skipped[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
if [ "${REQUIRE_ALL:-0}" = 1 ] && [ ${#skipped[@]} -ne 0 ]; then
  echo "REQUIRE_ALL=1: every example must run"
  exit 1
fi
echo "client examples: all that ran passed"
