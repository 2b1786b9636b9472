"""gerdu through pymemcache, the common Python memcached client.

Usage: python3 examples/python/pymemcache_example.py PORT

Stores and reads strings and serialized values, uses cas (gets + cas),
counters, add/replace/append, touch, get_many, delete, noreply pipelining and
stats; each answer is checked, and the script exits non-zero on the first
mismatch. examples/memcached.sh starts gerdu and runs it.
"""

import sys

from pymemcache.client.base import Client
from pymemcache import serde


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok   {what} -> {got!r}")


port = int(sys.argv[1])
c = Client(("127.0.0.1", port), serde=serde.pickle_serde, connect_timeout=5, timeout=5)

check("version", c.version().startswith(b"1.6"), True)
check("set", c.set("Hello", "World", noreply=False), True)
check("get", c.get("Hello"), "World")
check("get missing", c.get("nope"), None)
check("set dict (pickled, flags)", c.set("obj", {"a": [1, 2]}, noreply=False), True)
check("get dict", c.get("obj"), {"a": [1, 2]})
check("add existing", c.add("Hello", "x", noreply=False), False)
check("add new", c.add("fresh", "1", noreply=False), True)
check("replace missing", c.replace("nope", "x", noreply=False), False)
check("append", c.append("Hello", "!", noreply=False), True)
check("get appended", c.get("Hello"), "World!")
value, cas = c.gets("Hello")
check("gets", value, "World!")
check("cas with the current token", c.cas("Hello", "Cas", cas, noreply=False), True)
check("cas with an old token", c.cas("Hello", "Old", cas, noreply=False), False)
check("get after cas", c.get("Hello"), "Cas")
check("set counter", c.set("n", 10, noreply=False), True)
check("incr", c.incr("n", 5), 15)
check("decr below zero", c.decr("n", 100), 0)
check("incr missing", c.incr("missing", 1), None)
check("touch", c.touch("Hello", 60, noreply=False), True)
check("touch missing", c.touch("nope", 60, noreply=False), False)
for i in range(100):
    c.set(f"k{i}", str(i), noreply=True)
many = c.get_many([f"k{i}" for i in range(100)] + ["nope"])
check("get_many after 100 noreply sets", (len(many), many["k42"]), (100, "42"))
check("delete", c.delete("Hello", noreply=False), True)
check("delete missing", c.delete("Hello", noreply=False), False)
stats = c.stats()
check("stats curr_items", stats[b"curr_items"] >= 100, True)
check("stats cmd_get", stats[b"cmd_get"] > 0, True)
check("flush_all", c.flush_all(noreply=False), True)
check("get after flush", c.get("k1"), None)
c.close()
print("pymemcache example: all checks passed")
