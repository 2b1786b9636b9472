#!/usr/bin/env bash
# Starts gerdu with the memcached protocol on free loopback ports, runs the
# pymemcache example against it (examples/python/pymemcache_example.py, pip
# package pymemcache), then checks a few raw text-protocol answers and stops
# the server by its PID.
# Usage: bash examples/memcached.sh [path/to/gerdu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
source examples/lib.sh
http=$(free); mcd=$(free); raft=$(free)
start_gerdu -httpport "$http" -mcdport "$mcd" -raft "127.0.0.1:$raft" -protocols mcd
raw() { python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1") + b"mn\r\n")
out = b""
while not out.endswith(b"MN\r\n"):
    out += s.recv(65536)
print(out[:-4].decode().replace("\r\n", "|"), end="")' "$mcd" "$1"; }
for _ in $(seq 100); do raw 'version\r\n' >/dev/null 2>&1 && break; sleep 0.1; done

python3 examples/python/pymemcache_example.py "$mcd"

check "meta set + get"  "$(raw 'ms m 2 T60 F5\r\nhi\r\nmg m v f t\r\n')" 'HD|VA 2 f5 t60|hi|'
check "unknown command" "$(raw 'nosuch\r\n')" 'ERROR|'
check "key too long"    "$(raw "get $(printf 'k%.0s' $(seq 251))\r\n")" 'CLIENT_ERROR bad command line format|'

stop_gerdu
echo "memcached example: all checks passed"
