#!/bin/sh
# Run by gpuctl on the host (never installed there). Give a pulled model a second name through Ollama's
# own API (POST /api/copy: the name's manifest is the model's, no weights are copied).
# Usage: copy-model ADDRESS WAIT_S REQUEST
#   ADDRESS  where Ollama answers on the host itself (127.0.0.1:11434, [::1]:11434)
#   WAIT_S   how long to wait for the API first (Ollama may just have been restarted)
#   REQUEST  the body of POST /api/copy: {"source": TAG, "destination": NAME}
# A failed copy exits 1 with Ollama's own error.
set -eu
address=$1 wait_s=$2 request=$3

for _ in $(seq 1 "$wait_s"); do
    curl -fsS --max-time 2 "http://$address/api/version" >/dev/null 2>&1 && break
    sleep 1
done
out=$(curl -sS --max-time 120 -w '\n%{http_code}' "http://$address/api/copy" -d "$request")
code=$(printf '%s' "$out" | tail -n 1)
if [ "$code" != 200 ]; then
    echo "copy $request failed ($code): $(printf '%s' "$out" | head -n 1)" >&2
    exit 1
fi
