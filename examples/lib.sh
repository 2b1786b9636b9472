# Shared by the example scripts (sourced, not run): free loopback ports,
# starting gerdu in the background, checking answers, and a graceful stop.

# A free TCP port on 127.0.0.1.
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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
