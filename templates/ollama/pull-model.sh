#!/bin/sh
# Run by gpuctl on the host (never installed there). Pull one model through Ollama's own API.
# Usage: pull-model ADDRESS MODEL WAIT_S REQUEST
#   ADDRESS  where Ollama answers on the host itself (127.0.0.1:11434, [::1]:11434)
#   MODEL    the model's name, for the message
#   WAIT_S   how long to wait for the API first (Ollama may just have been restarted)
#   REQUEST  the body of POST /api/pull: {"model": MODEL, "stream": false}
# A failed pull exits 1 with Ollama's own error.
set -eu
address=$1 model=$2 wait_s=$3 request=$4

for _ in $(seq 1 "$wait_s"); do
    curl -fsS --max-time 2 "http://$address/api/version" >/dev/null 2>&1 && break
    sleep 1
done
out=$(curl -sS --max-time 3600 -w '\n%{http_code}' "http://$address/api/pull" -d "$request")
code=$(printf '%s' "$out" | tail -n 1)
if [ "$code" != 200 ]; then
    echo "pull $model failed ($code): $(printf '%s' "$out" | head -n 1)" >&2
    exit 1
fi
