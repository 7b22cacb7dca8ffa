#!/bin/sh
# Installed by gpuctl. Wait until a container's healthcheck reports healthy.
# Usage: gpuctl-wait-healthy CONTAINER TIMEOUT_SECONDS
# Exits 0 when healthy, 1 when unhealthy, exited or out of time (so systemd marks the start failed).
set -u
container=$1
deadline=$(( $(date +%s) + $2 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(docker inspect --format '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$container" 2>/dev/null || echo missing/)
    case "$state" in
        running/healthy) exit 0 ;;
        running/unhealthy) echo "$container is unhealthy" >&2; exit 1 ;;
        exited/* | dead/*) echo "$container stopped ($state)" >&2; exit 1 ;;
    esac
    sleep 5
done
echo "$container not healthy after $2 s (last state: $state)" >&2
exit 1
