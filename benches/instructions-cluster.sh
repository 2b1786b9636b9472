#!/usr/bin/env bash
# User-space instructions per SET on a three-node gerdu cluster's leader and
# on a follower, counted by valgrind's callgrind (as benches/instructions.sh
# counts them for a single node): one member runs under callgrind, the other
# two natively, all in memory on free loopback ports, stopped by their PIDs.
#
# For each role: the cluster is loaded with every key (gerdu-bench SET -P 16
# through the leader) and, once the measured member has applied all of it,
# its counters are zeroed; gerdu-bench sends N SETs through the leader (50
# clients, 100-byte values, 10,000 keys, -P DEPTH); when the member has
# applied them too its counters are dumped: instructions / N is printed,
# with the calls per SET of `bytes`' shared reference-count functions (each
# an atomic operation). TOP=K also prints the K costliest functions.
# Usage: bash benches/instructions-cluster.sh [N, default 40000] [path/to/gerdu]
#        DEPTH=16 ROLES="leader follower"
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-40000}
bin=${2:-target/release/gerdu}
depth=${DEPTH:-16}
roles=${ROLES:-leader follower}
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install -y valgrind" >&2; exit 2; }
cargo build --release --quiet -p gerdu -p gerdu-bench
bench=target/release/gerdu-bench
source examples/lib.sh
out=$(mktemp -d)
pids=()
trap 'kill -KILL "${pids[@]}" 2>/dev/null || true; rm -rf "$out"' EXIT
# No election while a member runs slowly under callgrind.
export GERDU_RAFT__HEARTBEAT_MS=1000 GERDU_RAFT__ELECTION_TIMEOUT_MIN_MS=20000 GERDU_RAFT__ELECTION_TIMEOUT_MAX_MS=30000

applied() { curl -s "127.0.0.1:$1/metrics" | awk '/^gerdu_raft_applied_index/ {print $2}'; }
# caught_up HTTP_PORT LEADER_HTTP_PORT EVERY: wait until the member applied
# all the leader did, asking every EVERY seconds (each answer costs the
# member instructions, so inside the measured window it asks seldom).
caught_up() {
  local want got
  want=$(applied "$2")
  for _ in $(seq 600); do
    got=$(applied "$1")
    [ "$got" = "$want" ] && return 0
    sleep "$3"
  done
  echo "the measured member did not catch up ($got of $want)" >&2
  exit 1
}

for role in $roles; do
  pids=()
  mapfile -t p < <(free_ports 9)
  # member I (0 = the leader a, 1 = follower b, 2 = follower c), under callgrind if measured.
  member() {
    local i=$1 wrap=()
    [ "$i" = "$2" ] && wrap=(valgrind --tool=callgrind --callgrind-out-file="$out/$role")
    local join=()
    [ "$i" != 0 ] && join=(-join "127.0.0.1:${p[2]}")
    local ids=(a b c)
    "${wrap[@]}" "$bin" -id "${ids[$i]}" -httpport "${p[$((3 * i))]}" -redisport "${p[$((3 * i + 1))]}" \
      -raft "127.0.0.1:${p[$((3 * i + 2))]}" "${join[@]}" -protocols redis -log warn >/dev/null 2>&1 &
    pids+=($!)
    disown
    wait_resp "${p[$((3 * i + 1))]}"
  }
  measured=$([ "$role" = leader ] && echo 0 || echo 1)
  for i in 0 1 2; do member "$i" "$measured"; done
  wait_voters "${p[0]}" 3
  target=${pids[$measured]} http=${p[$((3 * measured))]}
  "$bench" redis --addr "127.0.0.1:${p[1]}" -t set -n 20000 -r 10000 -P 16 >/dev/null
  caught_up "$http" "${p[0]}" 0.1
  callgrind_control -z "$target" >/dev/null 2>&1
  "$bench" redis --addr "127.0.0.1:${p[1]}" -t set -n "$n" -r 10000 -P "$depth" --no-preload >/dev/null
  # The leader has applied every SET before answering it; a follower may lag.
  [ "$role" = leader ] || caught_up "$http" "${p[0]}" 1
  callgrind_control -d "$target" >/dev/null 2>&1
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  dump=$(ls -t "$out/$role".* | head -n 1)
  python3 - "$dump" "$n" "$role" "$depth" "${TOP:-0}" <<'PY'
import collections, re, sys
path, n, role, depth, top = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
names, cost, calls = {}, collections.Counter(), collections.Counter()
fn = cfn = None
skip = False
total = 0
def name(tok):
    m = re.match(r'\((\d+)\)(?: (.*))?', tok)
    if m.group(2): names[m.group(1)] = m.group(2)
    return names.get(m.group(1), tok)
for line in open(path):
    if line.startswith('summary:'): total = int(line.split()[1])
    elif line.startswith('fn='): fn = name(line[3:].strip())
    elif line.startswith('cfn='): cfn = name(line[4:].strip())
    elif line.startswith('calls='):
        skip = True
        calls[cfn] += int(line[6:].split()[0])
    elif line[:1].isdigit() or line[:1] in '+-*':
        parts = line.split()
        if skip: skip = False
        elif len(parts) > 1: cost[fn] += int(parts[1])
atomics = sum(c for f, c in calls.items() if re.search(r'bytes::bytes(_mut)?::shared_(v_)?(clone|drop)$', f))
print(f"{role:<9} SET P{depth:<3} {total / n:8.0f} instructions per SET, {atomics / n:5.2f} shared reference counts per SET")
for f, c in cost.most_common(top):
    print(f"      {c / n:8.1f}  {f[:120]}")
PY
done
