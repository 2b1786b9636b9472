# Shared by the example scripts (sourced, not run): free loopback ports,
# starting gerdu in the background, checking answers, and a graceful stop.

# A free TCP port on 127.0.0.1.
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# free_ports N: N distinct free loopback ports, one per line (held open
# together while they are picked, so no two are the same).
free_ports() {
  python3 -c 'import socket,sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# The peers the benchmarks measure gerdu against, started alike everywhere
# in the background on 127.0.0.1 (the caller takes the PID from $!):
# redis-server without persistence, memcached with 2 threads and 1 GiB.
redis_peer() { redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null & }
memcached_peer() { memcached -l 127.0.0.1 -p "$1" -t 2 -m 1024 -U 0 -u "$(id -un)" & }

# wait_resp PORT: waits (30 s at most) until a RESP server answers PING on
# PORT; fails the script if none does.
wait_resp() {
  for _ in $(seq 300); do redis-cli -p "$1" PING >/dev/null 2>&1 && return; sleep 0.1; done
  echo "no answer on $1" >&2
  exit 1
}

# wait_voters HTTP_PORT N: waits (30 s at most) until the member serving
# HTTP on HTTP_PORT lists N voters in GET /cluster; fails the script if not.
wait_voters() {
  local got
  for _ in $(seq 300); do
    got=$(curl -fsS "http://127.0.0.1:$1/cluster" 2>/dev/null \
      | python3 -c 'import json,sys; print(sum(m["role"] == "voter" for m in json.load(sys.stdin)["members"]))' 2>/dev/null)
    [ "$got" = "$2" ] && return
    sleep 0.1
  done
  echo "the cluster has ${got:-no} voters, not $2" >&2
  exit 1
}

# check NAME GOT WANT: prints ok or fails the script.
check() { if [ "$2" != "$3" ]; then echo "FAIL $1: got '$2', want '$3'"; exit 1; fi; echo "ok   $1 -> $2"; }

# start_gerdu ARGS...: runs "$bin" ARGS in the background as $pid; it is
# killed if the script ends early.
start_gerdu() {
  "$bin" "$@" -log warn &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true' EXIT
}

# stop_gerdu: SIGTERM, and the server must exit 0.
stop_gerdu() {
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  check "exit code after SIGTERM" "$rc" 0
  trap - EXIT
}
