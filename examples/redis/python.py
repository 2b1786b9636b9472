"""Stores, reads and deletes a key over the Redis protocol with redis-py.
Usage: python3 examples/redis/python.py 6379   (pip install redis)"""
import sys

import redis

r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 6379, decode_responses=True)
print("SET Hello ->", "OK" if r.set("Hello", "World") else "not stored")
print("GET Hello ->", r.get("Hello"))
print("DEL Hello ->", r.delete("Hello"))
print("GET Hello ->", r.get("Hello") or "(nil)")
