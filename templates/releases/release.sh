#!/bin/sh
# Run by gpuctl on the host (never installed there): the release history of one engine.
# Usage: release COMMAND ROOT ARG NAME=PATH [NAME=PATH...]
#   record  ROOT JSON    keep the engine's live files as a new release
#   adopt   ROOT JSON    the same, only when every live file exists and no release matches them (run
#                        before they are replaced, so an engine deployed without releases has a way back)
#   live    ROOT -       the id of the live release ("none" when no release matches the live files,
#                        "absent" when a live file is missing)
#   list    ROOT -       per release, oldest first: ID TAB LIVE TAB JSON
#   mark    ROOT STATUS  STATUS (passed / failed) on the live release
#   restore ROOT ID      put release ID's files back in place
#   ROOT       /var/lib/gpuctl/releases/ENGINE (0700 root): one folder per release, named by its UTC time,
#              holding each NAME as deployed and release.json (what gpuctl recorded, plus id, created and
#              verify). Secrets are not among the files: a release uses the live ones, so a rollback never
#              brings back a rotated key.
#   NAME=PATH  the engine's files: a vLLM engine's compose file and unit; Ollama's unit, drop-in and the
#              version marker of the Ollama installed (its binaries stay side by side, see install-ollama)
# The live release is the newest whose files equal the live ones. At most KEEP are kept, never pruning the
# live release or the newest one that passed verify (what a rollback returns to).
set -eu
export LC_ALL=C # release names sort bytewise: 20261205T010000Z before 20261205T010000Z-002
command=$1 root=$2 arg=$3
shift 3
KEEP=10

# same_as_live DIR NAME=PATH...: whether every file kept in DIR equals the live one.
same_as_live() {
    kept=$1
    shift
    for pair in "$@"; do
        cmp -s "$kept/${pair%%=*}" "${pair#*=}" || return 1
    done
}

live_files_exist() {
    for pair in "$@"; do
        [ -f "${pair#*=}" ] || return 1
    done
}

# Release names, oldest first (UTC timestamps sort in time order); unfinished (.part) ones are not releases.
releases() {
    for path in "$root"/*; do
        case "$path" in *.part) continue ;; esac
        if [ -f "$path/release.json" ]; then basename "$path"; fi
    done
}

live_release() {
    for dir in $(releases | sort -r); do
        if same_as_live "$root/$dir" "$@"; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

newest_passed() {
    for dir in $(releases | sort -r); do
        if grep -q '"verify": "passed"' "$root/$dir/release.json"; then
            echo "$dir"
            return 0
        fi
    done
}

# record JSON NAME=PATH...
record() {
    meta=$1
    shift
    # The state folder (/var/lib/gpuctl) stays 0755: nginx reads the ACME webroot inside it. Only the
    # release folders are private.
    releases_dir=$(dirname "$root")
    state_dir=$(dirname "$releases_dir")
    install -d -m 0755 "$state_dir" # also repairs a state folder an earlier gpuctl made 0700
    install -d -m 0700 "$releases_dir"
    install -d -m 0700 "$root"
    umask 077
    rm -rf "$root"/*.part # left by an interrupted record
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    id=$stamp
    # A release within the same second as the newest one: -002, -003, ... after it (never a pruned name again).
    last=$(releases | tail -n 1)
    case "$last" in
    "$stamp") id=$stamp-002 ;;
    "$stamp"-*)
        n=$(printf '%s' "${last#"$stamp"-}" | sed 's/^0*//') # 008 is not octal here
        id=$(printf '%s-%03d' "$stamp" $((n + 1)))
        ;;
    esac
    mkdir "$root/$id.part"
    for pair in "$@"; do
        cp -p "${pair#*=}" "$root/$id.part/${pair%%=*}"
    done
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf '%s\n' "$meta" | sed "s/^{/{\"id\": \"$id\", \"created\": \"$created\", \"verify\": \"pending\", /" \
        >"$root/$id.part/release.json"
    mv -T "$root/$id.part" "$root/$id" # never into an existing release (a clock stepped back)
    keep_live=$(live_release "$@" || true)
    keep_passed=$(newest_passed)
    releases | grep -vx -e "$keep_live" -e "$keep_passed" | head -n "-$((KEEP - 2))" |
        while read -r old; do rm -rf "${root:?}/$old"; done
    echo "recorded release $id"
}

case "$command" in
record)
    record "$arg" "$@"
    ;;
adopt)
    if live_files_exist "$@" && ! live_release "$@" >/dev/null; then
        record "$arg" "$@"
    else
        echo "the live files are a recorded release already (or there are none)"
    fi
    ;;
live)
    if ! live_files_exist "$@"; then
        echo absent
    else
        live_release "$@" || echo none
    fi
    ;;
list)
    live=$(live_release "$@" || true)
    for dir in $(releases); do
        current=false
        [ "$dir" = "$live" ] && current=true
        printf '%s\t%s\t%s\n' "$dir" "$current" "$(tr -d '\n' <"$root/$dir/release.json")"
    done
    ;;
mark)
    live=$(live_release "$@") || {
        echo "no recorded release matches the live files"
        exit 0
    }
    file="$root/$live/release.json"
    sed "s/\"verify\": \"[a-z]*\"/\"verify\": \"$arg\"/" "$file" >"$file.new"
    mv "$file.new" "$file"
    echo "release $live: verify $arg"
    ;;
restore)
    release="$root/$arg"
    if [ ! -f "$release/release.json" ]; then
        echo "no release $arg under $root" >&2
        exit 1
    fi
    for pair in "$@"; do
        path=${pair#*=}
        mkdir -p "$(dirname "$path")"
        cp -p "$release/${pair%%=*}" "$path.gpuctl-new" && mv "$path.gpuctl-new" "$path"
    done
    echo "restored release $arg"
    ;;
*)
    echo "usage: release record|adopt|live|list|mark|restore ROOT ARG NAME=PATH..." >&2
    exit 2
    ;;
esac
