#!/bin/sh
# Run by gpuctl on the host (never installed there) after the reboot that loads a new driver: fail
# unless the loaded nvidia module is of the requested branch and nvidia-smi works.
# Usage: loaded-branch BRANCH MODULE_VERSION_FILE   (the file is /sys/module/nvidia/version)
set -u
branch=$1 version_file=$2

version=$(cat "$version_file")
case "$version" in
    "$branch".*) ;;
    *)
        echo "after reboot the loaded driver is $version, not $branch" >&2
        exit 1
        ;;
esac
nvidia-smi >/dev/null
