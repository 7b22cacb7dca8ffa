#!/bin/sh
# Run by gpuctl on the host (never installed there). One call of Ollama's own API: a pull (POST /api/pull)
# or a second name for a pulled model (POST /api/copy: the manifest is copied, not the weights).
# Usage: ollama-api ADDRESS WAIT_S ROUTE WHAT REQUEST
#   ADDRESS  where Ollama answers on the host itself (127.0.0.1:11434, [::1]:11434)
#   WAIT_S   how long to wait for the API first (Ollama may just have been restarted)
#   ROUTE    pull or copy
#   WHAT     what the call does, for the message ("pull qwen2.5:0.5b")
#   REQUEST  the JSON body ({"model": M, "stream": false} or {"source": TAG, "destination": NAME})
# A failed call exits 1 with Ollama's own error.
set -eu
address=$1 wait_s=$2 route=$3 what=$4 request=$5

for _ in $(seq 1 "$wait_s"); do
    curl -fsS --max-time 2 "http://$address/api/version" >/dev/null 2>&1 && break
    sleep 1
done
out=$(curl -sS --max-time 3600 -w '\n%{http_code}' "http://$address/api/$route" -d "$request")
code=$(printf '%s' "$out" | tail -n 1)
if [ "$code" != 200 ]; then
    echo "$what failed ($code): $(printf '%s' "$out" | head -n 1)" >&2
    exit 1
fi
