#!/usr/bin/env bash
# Stores, reads and deletes a key over gerdu's HTTP API with curl.
# Usage: bash examples/http/curl.sh http://127.0.0.1:8080
base=${1:-http://127.0.0.1:8080}/cache/Hello
echo "PUT /cache/Hello -> $(curl -s -o /dev/null -w '%{http_code}' -X PUT --data World "$base")"
echo "GET /cache/Hello -> $(curl -s -w '%{http_code} ' -o /tmp/gerdu-curl-body.$$ "$base")$(cat /tmp/gerdu-curl-body.$$)"
rm -f /tmp/gerdu-curl-body.$$
echo "DELETE /cache/Hello -> $(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$base")"
echo "GET /cache/Hello -> $(curl -s -o /dev/null -w '%{http_code}' "$base")"
