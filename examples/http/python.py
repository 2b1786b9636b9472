"""Stores, reads and deletes a key over gerdu's HTTP API with the standard
library. Usage: python3 examples/http/python.py http://127.0.0.1:8080"""
import sys
import urllib.error
import urllib.request

base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"


def call(method, key, body=None):
    req = urllib.request.Request(f"{base}/cache/{key}", data=body, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


print("PUT /cache/Hello ->", call("PUT", "Hello", b"World")[0])
print("GET /cache/Hello -> %d %s" % call("GET", "Hello"))
print("DELETE /cache/Hello ->", call("DELETE", "Hello")[0])
print("GET /cache/Hello ->", call("GET", "Hello")[0])
