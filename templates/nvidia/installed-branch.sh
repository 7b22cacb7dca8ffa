#!/bin/sh
# Run by gpuctl on the host (never installed there). Fail when the nvidia module on disk is not of the
# requested driver branch: on some releases Ubuntu ships a branch's package as a transitional package
# that installs another branch.
# Usage: installed-branch BRANCH PACKAGE
set -u
branch=$1 package=$2

version=$(modinfo -F version nvidia 2>/dev/null || true)
case "$version" in
    "$branch".*)
        echo "nvidia module on disk: $version"
        ;;
    *)
        echo "requested driver branch $branch but the packages installed ${version:-no nvidia module}" \
            "(Ubuntu ships $package as a transitional package on this release): pin the branch it really installs" >&2
        exit 1
        ;;
esac
