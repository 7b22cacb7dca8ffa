#!/bin/sh
# Installed by gpuctl. Restart each vLLM engine whose container Docker reports unhealthy, with backoff.
# Usage: gpuctl-heal-engines STATE_DIR UNIT=CONTAINER...
# Run by gpuctl-heal.timer. A restart waits 60 s, 120 s, 240 s ... (at most an hour) after the previous
# one while the engine stays unhealthy; a healthy engine clears its count. The engine unit's own start
# limit (5 an hour) still stops a crash loop: this script never clears it.
set -u
state_dir=$1
shift
mkdir -p "$state_dir"
now=$(date +%s)
for pair in "$@"; do
    unit=${pair%%=*}
    container=${pair#*=}
    file="$state_dir/$unit"
    [ "$(systemctl is-active "$unit")" = active ] || continue
    health=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$container" 2>/dev/null)
    if [ "$health" != unhealthy ]; then
        if [ "$health" = healthy ]; then rm -f "$file"; fi
        continue
    fi
    restarts=0
    last=0
    if [ -f "$file" ]; then read -r restarts last < "$file"; fi
    if [ "$restarts" -ge 6 ]; then wait=3600; else wait=$((60 << restarts)); fi
    if [ "$restarts" -gt 0 ] && [ $((now - last)) -lt "$wait" ]; then
        echo "$container is unhealthy; next restart of $unit in $((wait - (now - last))) s (backoff)"
        continue
    fi
    echo "$container is unhealthy: restarting $unit (restart $((restarts + 1)) while unhealthy)"
    echo "$((restarts + 1)) $now" > "$file"
    systemctl --no-block restart "$unit" || echo "restart of $unit failed" >&2
done
