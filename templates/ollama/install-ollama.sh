#!/bin/sh
# Run by gpuctl on the host (never installed there). Make one pinned Ollama release the live one,
# installing it side by side with the others first (checksum verified) unless it is installed already.
# Usage: install-ollama VERSION RELEASE_URL DOWNLOAD_DIR PREFIX ARCHIVE [ARCHIVE...]
#   RELEASE_URL  folder holding the release's files and its sha256sum.txt (https:// or file://)
#   PREFIX       /usr/local on a host; ~/.local for a user-level install; a scratch folder in tests
#   ARCHIVE...   acceptable archive names, best first (e.g. ollama-linux-amd64.tar.zst then .tgz)
# Layout: PREFIX/lib/gpuctl-ollama/VERSION/{bin/ollama,lib/ollama/} per release; the live one is
# linked as PREFIX/bin/ollama and PREFIX/lib/ollama (Ollama resolves the link and loads its
# libraries from ../lib/ollama beside its real binary). The live release and the KEEP-1 activated last
# before it stay installed, so a rollback switches back without a download.
# The release's sha256sum.txt is read first and the first ARCHIVE it lists is downloaded: releases before
# 0.14.0 ship .tgz only, later ones .tar.zst. A wrong checksum stops before anything installed is touched,
# so the running version stays.
set -eu
version=$1 source=$2 downloads=$3 prefix=${4%/}
shift 4
versions="$prefix/lib/gpuctl-ollama" bin="$prefix/bin" lib="$prefix/lib/ollama"
KEEP=3

installed() { [ -x "$versions/$1/bin/ollama" ] && [ -f "$versions/$1/lib/ollama/.gpuctl-version" ]; }

# activate VERSION: point the live links at it (each link replaced in one rename) and note when.
activate() {
    mkdir -p "$bin"
    ln -sfn "../lib/gpuctl-ollama/$1/bin/ollama" "$bin/.ollama.gpuctl-new"
    mv -fT "$bin/.ollama.gpuctl-new" "$bin/ollama"
    ln -sfn "gpuctl-ollama/$1/lib/ollama" "$lib.gpuctl-new"
    mv -fT "$lib.gpuctl-new" "$lib"
    touch "$versions/$1"
}

# An install from before releases were kept side by side (a folder and a file, not links), made by gpuctl
# (its version is known): kept as a release. Copied first, then renamed into place, so an interrupted run
# leaves the old install as it was; the folder is replaced by the link once the copy is complete.
adopt_unlinked() {
    if [ ! -d "$lib" ] || [ -L "$lib" ]; then return 0; fi
    old=$(cat "$lib/.gpuctl-version" 2>/dev/null || true)
    if [ -n "$old" ] && ! installed "$old" && [ -f "$bin/ollama" ] && [ ! -L "$bin/ollama" ]; then
        rm -rf "$versions/$old.part" && mkdir -p "$versions/$old.part/bin" "$versions/$old.part/lib"
        cp -p "$bin/ollama" "$versions/$old.part/bin/ollama"
        cp -a "$lib" "$versions/$old.part/lib/ollama"
        mv -T "$versions/$old.part" "$versions/$old"
        rm -rf "$lib"
        activate "$old"
        echo "kept the installed Ollama $old side by side"
    fi
}

# An install gpuctl did not make (Ollama's own installer, no version marker) is replaced, but only once the
# new release is unpacked and verified: a failed download leaves it working.
drop_unlinked() {
    if [ -d "$lib" ] && [ ! -L "$lib" ]; then rm -rf "$lib"; fi
}

# fetch: download and verify the release's archive into $versions/$version (complete, or absent).
fetch() {
    folder="$downloads/$version"
    mkdir -p "$folder"
    cd "$folder"
    curl -fsSL --retry 3 --connect-timeout 20 -o sha256sum.txt "$source/sha256sum.txt" || {
        echo "cannot read $source/sha256sum.txt: is the version or release_url wrong?" >&2
        exit 1
    }
    archive='' expected=''
    for candidate in "$@"; do
        # A line is "HASH  NAME", NAME possibly written ./NAME or *NAME.
        expected=$(awk -v n="$candidate" '$2 == n || $2 == "./" n || $2 == "*" n {print $1; exit}' sha256sum.txt)
        if [ -n "$expected" ]; then archive=$candidate; break; fi
    done
    if [ -z "$archive" ]; then
        echo "the release at $source lists none of: $* (in its sha256sum.txt)" >&2
        exit 1
    fi
    case "$archive" in
    *.zst) command -v zstd >/dev/null || { echo "$archive needs zstd, which is not installed" >&2; exit 1; } ;;
    esac
    curl -fsSL --retry 3 --connect-timeout 20 -o "$archive.part" "$source/$archive"
    actual=$(sha256sum "$archive.part" | cut -d' ' -f1)
    if [ "$expected" != "$actual" ]; then
        echo "checksum mismatch for $archive: expected $expected, got $actual" >&2
        rm -f "$archive.part"
        exit 1
    fi
    staging="$versions/$version.part"
    rm -rf "$staging" && mkdir -p "$staging/lib/ollama"
    tar -C "$staging" -xf "$archive.part"
    [ -x "$staging/bin/ollama" ] || { echo "$archive has no bin/ollama" >&2; rm -rf "$staging"; exit 1; }
    echo "$version" >"$staging/lib/ollama/.gpuctl-version"
    echo "$archive" >"$staging/lib/ollama/.gpuctl-archive"
    rm -rf "${versions:?}/$version" && mv -T "$staging" "$versions/$version"
    cd / && rm -rf "$folder" # the archive is unpacked: keep no second copy
    echo "installed Ollama $version from $archive"
}

# prune: keep the KEEP releases activated last (the live one is the newest), remove the others.
prune() {
    find "$versions" -mindepth 1 -maxdepth 1 -type d -name '*.part' -exec rm -rf {} +
    find "$versions" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %f\n' | sort -rn | tail -n "+$((KEEP + 1))" |
        while read -r _ old; do
            [ "$old" = "$version" ] || { rm -rf "${versions:?}/$old" && echo "removed Ollama $old (older than $KEEP kept)"; }
        done
}

mkdir -p "$versions" "$prefix/lib"
adopt_unlinked
if installed "$version"; then
    echo "Ollama $version is installed side by side: switching to it"
else
    fetch "$@"
fi
drop_unlinked
activate "$version"
prune
echo "live: Ollama $version"
