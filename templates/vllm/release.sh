#!/bin/sh
# Run by gpuctl on the host (never installed there): the release history of one vLLM engine.
# Usage: release record ROOT CONFIG_DIR UNIT_PATH JSON   keep the engine's live files as a new release
#        release list ROOT CONFIG_DIR UNIT_PATH          one JSON object per release, oldest first
#        release mark ROOT CONFIG_DIR UNIT_PATH STATUS   STATUS (passed / failed) on the live release
#        release restore ROOT CONFIG_DIR UNIT_PATH ID    put release ID's files back in place
#   ROOT        /var/lib/gpuctl/releases/ENGINE (0700 root): one folder per release, named by its UTC
#               time, holding compose.yaml, vllm.env (0600: the engine's secrets) and unit.service as
#               deployed, and release.json (JSON, what gpuctl recorded, plus id and verify)
#   CONFIG_DIR  the engine's compose folder; UNIT_PATH its systemd unit
# The live release is the newest whose three files equal the live ones. At most KEEP are kept.
set -eu
export LC_ALL=C # release names sort bytewise: 20261205T010000Z before 20261205T010000Z-002
command=$1 root=$2 config_dir=$3 unit_path=$4
KEEP=10

same_as_live() {
    cmp -s "$1/compose.yaml" "$config_dir/compose.yaml" &&
        cmp -s "$1/vllm.env" "$config_dir/vllm.env" &&
        cmp -s "$1/unit.service" "$unit_path"
}

# Release names, oldest first (UTC timestamps sort in time order); unfinished (.part) ones are not releases.
releases() {
    for path in "$root"/*; do
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

case "$command" in
record)
    umask 077
    mkdir -p "$root"
    chmod 0700 "$root"
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
    cp -p "$config_dir/compose.yaml" "$config_dir/vllm.env" "$root/$id.part/"
    cp -p "$unit_path" "$root/$id.part/unit.service"
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf '%s\n' "$5" | sed "s/^{/{\"id\": \"$id\", \"created\": \"$created\", \"verify\": \"pending\", /" \
        >"$root/$id.part/release.json"
    mv "$root/$id.part" "$root/$id"
    releases | head -n "-$KEEP" | while read -r old; do rm -rf "${root:?}/$old"; done
    echo "recorded release $id"
    ;;
list)
    live=$(live_release || true)
    for dir in $(releases); do
        current=false
        [ "$dir" = "$live" ] && current=true
        sed "s/^{/{\"current\": $current, /" "$root/$dir/release.json"
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
    cp -p "$release/compose.yaml" "$release/vllm.env" "$config_dir/"
    cp -p "$release/unit.service" "$unit_path"
    echo "restored release $5"
    ;;
*)
    echo "usage: release record|list|mark|restore ROOT CONFIG_DIR UNIT_PATH [ARG]" >&2
    exit 2
    ;;
esac
