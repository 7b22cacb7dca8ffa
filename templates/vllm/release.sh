#!/bin/sh
# Run by gpuctl on the host (never installed there): the release history of one vLLM engine.
# Usage: release record ROOT CONFIG_DIR UNIT_PATH JSON   keep the engine's live files as a new release
#        release adopt ROOT CONFIG_DIR UNIT_PATH JSON    the same, only when live files exist and no
#                                                        release matches them (before they are replaced)
#        release list ROOT CONFIG_DIR UNIT_PATH          per release, oldest first: ID TAB LIVE TAB JSON
#        release mark ROOT CONFIG_DIR UNIT_PATH STATUS   STATUS (passed / failed) on the live release
#        release restore ROOT CONFIG_DIR UNIT_PATH ID    put release ID's files back in place
#   ROOT        /var/lib/gpuctl/releases/ENGINE (0700 root): one folder per release, named by its UTC
#               time, holding compose.yaml and unit.service as deployed, and release.json (what gpuctl
#               recorded, plus id, created and verify). The env file (the engine's secrets) is not kept:
#               a release uses the live one, so a rollback never brings back a rotated key.
#   CONFIG_DIR  the engine's compose folder; UNIT_PATH its systemd unit
# The live release is the newest whose files equal the live ones. At most KEEP are kept, never pruning the
# live release or the newest one that passed verify (what a rollback returns to).
set -eu
export LC_ALL=C # release names sort bytewise: 20261205T010000Z before 20261205T010000Z-002
command=$1 root=$2 config_dir=$3 unit_path=$4
KEEP=10

same_as_live() {
    cmp -s "$1/compose.yaml" "$config_dir/compose.yaml" && cmp -s "$1/unit.service" "$unit_path"
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
        if same_as_live "$root/$dir"; then
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

record() {
    umask 077
    mkdir -p "$root"
    chmod 0700 "$root"
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
    cp -p "$config_dir/compose.yaml" "$root/$id.part/"
    cp -p "$unit_path" "$root/$id.part/unit.service"
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf '%s\n' "$1" | sed "s/^{/{\"id\": \"$id\", \"created\": \"$created\", \"verify\": \"pending\", /" \
        >"$root/$id.part/release.json"
    mv "$root/$id.part" "$root/$id"
    keep_live=$(live_release || true)
    keep_passed=$(newest_passed)
    releases | grep -vx -e "$keep_live" -e "$keep_passed" | head -n "-$((KEEP - 2))" |
        while read -r old; do rm -rf "${root:?}/$old"; done
    echo "recorded release $id"
}

case "$command" in
record)
    record "$5"
    ;;
adopt)
    if [ -f "$config_dir/compose.yaml" ] && [ -f "$unit_path" ] && ! live_release >/dev/null; then
        record "$5"
    else
        echo "the live files are a recorded release already (or there are none)"
    fi
    ;;
list)
    live=$(live_release || true)
    for dir in $(releases); do
        current=false
        [ "$dir" = "$live" ] && current=true
        printf '%s\t%s\t%s\n' "$dir" "$current" "$(tr -d '\n' <"$root/$dir/release.json")"
    done
    ;;
mark)
    status=$5
    live=$(live_release) || {
        echo "no recorded release matches the live files"
        exit 0
    }
    file="$root/$live/release.json"
    sed "s/\"verify\": \"[a-z]*\"/\"verify\": \"$status\"/" "$file" >"$file.new"
    mv "$file.new" "$file"
    echo "release $live: verify $status"
    ;;
restore)
    release="$root/$5"
    if [ ! -f "$release/release.json" ]; then
        echo "no release $5 under $root" >&2
        exit 1
    fi
    cp -p "$release/compose.yaml" "$config_dir/"
    cp -p "$release/unit.service" "$unit_path"
    echo "restored release $5"
    ;;
*)
    echo "usage: release record|adopt|list|mark|restore ROOT CONFIG_DIR UNIT_PATH [ARG]" >&2
    exit 2
    ;;
esac
