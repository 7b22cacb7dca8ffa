#!/bin/sh
# Run by gpuctl on the host (never installed there). Reload nginx gracefully (open streams finish on the
# old workers) and return once its master has started a worker with the new configuration: a reload is
# asynchronous, `systemctl reload` returns before, and a request in between still meets an old worker.
set -eu

workers() {
    master=$(cat /run/nginx.pid 2>/dev/null || true)
    [ -n "$master" ] || return 0
    for stat in /proc/[0-9]*/stat; do
        read -r pid _ _ ppid _ < "$stat" 2>/dev/null || continue
        [ "$ppid" = "$master" ] && echo "$pid"
    done | sort | tr '\n' ' '
}

before=$(workers)
systemctl reload-or-restart nginx
for _ in $(seq 1 100); do
    for pid in $(workers); do
        case " $before " in
            *" $pid "*) ;;
            *) exit 0 ;;
        esac
    done
    sleep 0.1
done
echo "nginx was reloaded, but no new worker showed within 10 s" >&2
