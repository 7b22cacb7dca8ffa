"""gpuctl itself on a fleet host, as a user installs it: built from this checkout with its dependencies
(pip --target, packed once per run) and run there as `gpuctl`, for deploys of the machine against itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.cli import REPO
from harness.fleet import Fleet, Host

SITE = "/opt/gpuctl-site"


def site_tarball(fleet: Fleet) -> Path:
    """gpuctl and its dependencies installed into a folder (pip --target), packed once per run."""
    tarball = fleet.workdir / "gpuctl-site.tar.gz"
    if not tarball.exists():
        site = fleet.workdir / "gpuctl-site"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(site), str(REPO)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        subprocess.run(["tar", "-C", str(site), "-czf", str(tarball), "."], check=True, timeout=300)
    return tarball


def install_gpuctl(fleet: Fleet, host: Host) -> None:
    """`gpuctl` on HOST's PATH for every user, running this checkout's gpuctl with the host's python3."""
    host.put_file(site_tarball(fleet), "/var/tmp/gpuctl-site.tar.gz")
    host.run(
        f"mkdir -p {SITE} && tar -C {SITE} -xzf /var/tmp/gpuctl-site.tar.gz && rm /var/tmp/gpuctl-site.tar.gz "
        f"&& chmod -R a+rX {SITE}",
        timeout=300,
    )
    host.write_file(
        "/usr/local/bin/gpuctl", f'#!/bin/sh\nPYTHONPATH={SITE} exec python3 -m gpuctl.cli "$@"\n', mode=0o755
    )
