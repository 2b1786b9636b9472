#!/usr/bin/env bash
# Failover under load, checked: a three-node cluster (in memory, free
# loopback ports, every process stopped by its PID) takes INCRs, each
# followed by a GET, from THREADS clients (one counter each, one request at
# a time) through a follower's RESP port; after KILL_AFTER seconds the leader is killed with SIGKILL, and
# the clients go on for the rest of SECONDS. The killed node is then started
# again (same id and address: the new leader catches it up). MODE=stop
# freezes the leader with SIGSTOP instead, for STOP_FOR seconds, then lets
# it go on (SIGCONT): a leader that wakes to find itself deposed.
#
# Printed: INCRs answered, errors by kind, the longest INCR (how long the
# failover held a client), and per counter the check that matters: its
# value on every node lies between the INCRs answered and those plus the
# ones answered "may or may not have been applied" (none lost, none applied
# twice), every answered INCR's reply was above the one before, and every
# GET (linearizable, the default) saw at least the last INCR answered.
# Exits 1 if any check fails.
# Usage: bash benches/failover.sh [path/to/gerdu]
#        THREADS=8 SECONDS_=6 KILL_AFTER=2 MODE=kill|stop STOP_FOR=3
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/gerdu}
threads=${THREADS:-8}
seconds=${SECONDS_:-6}
kill_after=${KILL_AFTER:-2}
mode=${MODE:-kill}
stop_for=${STOP_FOR:-3}
command -v redis-cli >/dev/null || { echo "needs redis-cli: apt-get install -y redis-tools" >&2; exit 2; }
[ -x "$bin" ] || cargo build --release --quiet -p gerdu
source examples/lib.sh
pids=()
trap 'kill -KILL "${pids[@]}" 2>/dev/null || true' EXIT
# run NAME HTTP RESP RAFT [JOIN]: starts a member; its PID is $started.
run() {
  "$bin" -id "$1" -httpport "$2" -redisport "$3" -raft "127.0.0.1:$4" ${5:+-join "127.0.0.1:$5"} \
    -protocols redis -log warn &
  started=$!
  pids+=("$started")
}
mapfile -t p < <(free_ports 9)
run a "${p[0]}" "${p[1]}" "${p[2]}"; a=$started; wait_resp "${p[1]}"
run b "${p[3]}" "${p[4]}" "${p[5]}" "${p[2]}"; wait_resp "${p[4]}"
run c "${p[6]}" "${p[7]}" "${p[8]}" "${p[2]}"; wait_resp "${p[7]}"
wait_voters "${p[0]}" 3
out=$(mktemp)
python3 - "${p[4]}" "$threads" "$seconds" > "$out" <<'PY' &
import json, socket, sys, threading, time
port, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def client(t, res):
    key = f"ctr:{t}".encode()
    incr = b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key)
    get = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(60)
    f = s.makefile("rb")
    def call(cmd):
        start = time.monotonic()
        s.sendall(cmd)
        line = f.readline().decode().rstrip("\r\n")
        if line.startswith("$") and line != "$-1":
            line = "$" + f.readline().decode().rstrip("\r\n")
        res["longest"] = max(res["longest"], time.monotonic() - start)
        if line.startswith("-"):
            kind = "ambiguous" if "may or may not" in line and cmd is incr else "refused"
            res[kind] += 1
            res["errors"][line[:100]] = res["errors"].get(line[:100], 0) + 1
            return None
        return int(line[1:])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        n = call(incr)
        if n is not None:
            if n <= res["last"]:
                res["backwards"] += 1
            res["last"], res["acked"] = n, res["acked"] + 1
        # A linearizable read after it sees at least the INCRs answered.
        g = call(get)
        if g is not None:
            res["reads"] += 1
            if g < res["last"]:
                res["stale"] += 1
results = [dict(acked=0, ambiguous=0, refused=0, backwards=0, last=0, longest=0.0, reads=0, stale=0, errors={})
           for _ in range(threads)]
workers = [threading.Thread(target=client, args=(t, results[t])) for t in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps(results))
PY
load=$!
sleep "$kill_after"
if [ "$mode" = stop ]; then
  # Frozen, as by a long pause or a partition: the others elect a leader;
  # when it wakes, it finds a newer term and follows.
  kill -STOP "$a"
  echo "stopped the leader (a) after ${kill_after}s, for ${stop_for}s" >&2
  sleep "$stop_for"
  kill -CONT "$a"
  wait "$load"
else
  kill -KILL "$a"
  wait "$a" 2>/dev/null || true
  echo "killed the leader (a) after ${kill_after}s" >&2
  wait "$load"
  # a comes back with its id and address; the new leader catches it up.
  run a "${p[0]}" "${p[1]}" "${p[2]}" "${p[5]}"; wait_resp "${p[1]}"
fi
wait_voters "${p[3]}" 3
python3 - "$out" "${p[0]}" "${p[3]}" "${p[6]}" <<'PY'
import json, sys, time, urllib.error, urllib.request
results = json.load(open(sys.argv[1]))
def get(port, key, local):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/cache/{key}")
    if local: req.add_header("Gerdu-Consistency", "local")
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return int(r.read())
    except urllib.error.HTTPError: return None
# Each node's own copy (a local read), once it has applied what the
# leader has (a linearizable read): waited for, 10 s at most.
values = {}
for t in range(len(results)):
    want = get(sys.argv[3], f"ctr:{t}", False)
    for node, port in zip("abc", sys.argv[2:5]):
        deadline = time.monotonic() + 10
        while (v := get(port, f"ctr:{t}", True)) != want and time.monotonic() < deadline: time.sleep(0.05)
        values.setdefault(t, {})[node] = v
acked = sum(r["acked"] for r in results)
print(f"{len(results)} clients: {acked} INCRs answered, "
      f"{sum(r['ambiguous'] for r in results)} 'may or may not have been applied', "
      f"{sum(r['refused'] for r in results)} errors otherwise; {sum(r['reads'] for r in results)} GETs answered; "
      f"longest request {max(r['longest'] for r in results):.3f} s")
errors = {}
for r in results:
    for e, n in r["errors"].items(): errors[e] = errors.get(e, 0) + n
for e, n in sorted(errors.items(), key=lambda x: -x[1]): print(f"  {n:6} x {e}")
bad = 0
for t, r in enumerate(results):
    lo, hi = r["acked"], r["acked"] + r["ambiguous"]
    for node, v in sorted(values[t].items()):
        ok = v is not None and lo <= v <= hi and v >= r["last"]
        if not ok:
            bad += 1
            print(f"FAIL ctr:{t} on {node}: {v}, want {lo}..{hi} and >= {r['last']}")
    if r["backwards"]:
        bad += 1
        print(f"FAIL ctr:{t}: {r['backwards']} replies not above the one before")
    if r["stale"]:
        bad += 1
        print(f"FAIL ctr:{t}: {r['stale']} GETs below the last INCR answered")
applied = sum(values[t]["b"] - r["acked"] for t, r in enumerate(results) if values[t]["b"] is not None)
print(f"of the 'may or may not' INCRs, {applied} were applied (the counters' excess over the answered ones)")
print("every counter on every node within its bounds; no INCR reply went backwards, no GET was stale"
      if not bad else f"{bad} checks failed")
sys.exit(1 if bad else 0)
PY
rm -f "$out"
