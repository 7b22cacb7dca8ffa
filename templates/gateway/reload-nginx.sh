#!/bin/sh
# Run by gpuctl on the host (never installed there). Reload nginx gracefully (open streams finish on the
# old workers) and return once its master has started a worker with the new configuration: a reload is
# asynchronous, `systemctl reload` returns before, and a request in between still meets an old worker.
# Usage: reload-nginx [DRAIN_S]
#   DRAIN_S  also wait, up to this many seconds, for the old workers to finish their open requests (a
#            rolling deploy drains hosts from a fleet endpoint this way before it changes them)
set -eu
drain_s=${1:-0}

workers() {
    master=$(cat /run/nginx.pid 2>/dev/null || true)
    [ -n "$master" ] || return 0
    for stat in /proc/[0-9]*/stat; do
        read -r pid _ _ ppid _ < "$stat" 2>/dev/null || continue
        [ "$ppid" = "$master" ] && echo "$pid"
    done | sort | tr '\n' ' '
}

# any_alive PIDS: whether one of PIDS still runs.
any_alive() {
    for pid in $1; do
        [ -d "/proc/$pid" ] && return 0
    done
    return 1
}

before=$(workers)
systemctl reload-or-restart nginx
new=''
for _ in $(seq 1 100); do
    for pid in $(workers); do
        case " $before " in
            *" $pid "*) ;;
            *) new=$pid ;;
        esac
    done
    [ -n "$new" ] && break
    sleep 0.1
done
if [ -z "$new" ]; then
    echo "nginx was reloaded, but no new worker showed within 10 s" >&2
fi
waited=0
while [ "$waited" -lt "$((drain_s * 10))" ] && any_alive "$before"; do
    sleep 0.1
    waited=$((waited + 1))
done
if [ "$drain_s" -gt 0 ] && any_alive "$before"; then
    echo "old nginx workers still serve open requests after ${drain_s} s: going on"
fi
exit 0
