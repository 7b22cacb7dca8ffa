#!/bin/sh
# Run by gpuctl on the host (never installed there). Install one pinned Ollama release, checksum first.
# Usage: install-ollama VERSION RELEASE_URL DOWNLOAD_DIR ROOT ARCHIVE [ARCHIVE...]
#   RELEASE_URL  folder holding the release's files and its sha256sum.txt (https:// or file://)
#   ROOT         "/" on a host; a scratch folder in tests (binary in ROOT/usr/local/bin)
#   ARCHIVE...   acceptable archive names, best first (e.g. ollama-linux-amd64.tar.zst then .tgz)
# The release's sha256sum.txt is read first and the first ARCHIVE it lists is downloaded: releases
# before 0.14.0 ship .tgz only, later ones .tar.zst. A wrong checksum stops before anything installed
# is touched, so the running version stays.
set -eu
version=$1 source=$2 downloads=$3 root=${4%/}
shift 4

folder="$downloads/$version"
mkdir -p "$folder"
cd "$folder"
curl -fsSL --retry 3 --connect-timeout 20 -o sha256sum.txt "$source/sha256sum.txt" || {
    echo "cannot read $source/sha256sum.txt: is the version or release_url wrong?" >&2
    exit 1
}

# A line is "HASH  NAME", NAME possibly written ./NAME or *NAME.
listed() { awk -v n="$1" '$2 == n || $2 == "./" n || $2 == "*" n {print $1; exit}' sha256sum.txt; }

archive='' expected=''
for candidate in "$@"; do
    expected=$(listed "$candidate")
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
mv "$archive.part" "$archive"
rm -rf staging && mkdir staging
tar -C staging -xf "$archive"
[ -x staging/bin/ollama ] || { echo "$archive has no bin/ollama" >&2; exit 1; }

lib="$root/usr/local/lib/ollama" bin="$root/usr/local/bin"
mkdir -p "$bin" "$root/usr/local/lib"
rm -rf "$lib.new" && mkdir -p "$lib.new"
if [ -d staging/lib/ollama ]; then cp -a staging/lib/ollama/. "$lib.new/"; fi
echo "$version" > "$lib.new/.gpuctl-version"
echo "$archive" > "$lib.new/.gpuctl-archive"
install -m 0755 staging/bin/ollama "$bin/ollama.new"
rm -rf "$lib.old"
if [ -d "$lib" ]; then mv "$lib" "$lib.old"; fi
mv "$lib.new" "$lib" && mv "$bin/ollama.new" "$bin/ollama"
rm -rf "$lib.old" staging
echo "installed Ollama $version from $archive"
