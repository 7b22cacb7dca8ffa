"""Test Docker images for fleet hosts (no registry is reachable): the vLLM container STAND-IN.

`vllm/vllm-openai` needs a GPU and a registry, neither of which exists here. The stand-in image is
the fleet's Debian base (python3) plus harness/vllm_standin.py as its entrypoint: it accepts the
pinned vLLM version's flags, rejects unknown ones, and speaks vLLM's OpenAI-compatible API.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.fleet import Fleet, Host

STANDIN = Path(__file__).with_name("vllm_standin.py")
EXCLUDES = ("./usr/share/doc", "./usr/share/locale", "./usr/share/man", "./var/cache/apt", "./etc/ssh", "./root/.ssh")
ENTRYPOINT = '["python3", "/opt/vllm_standin.py"]'


def vllm_standin_rootfs(fleet: Fleet) -> Path:
    """A rootfs tarball for `docker import` (built once per fleet run, ~160 MB)."""
    dest = fleet.workdir / "images" / "vllm-standin-rootfs.tar"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".part")
    excludes = [f"--exclude={path}" for path in EXCLUDES]
    subprocess.run(["tar", "-C", str(fleet.base.path), *excludes, "-cf", str(partial), "."], check=True, timeout=300)
    subprocess.run(
        ["tar", "-C", str(STANDIN.parent), "--transform", "s,^,opt/,", "-rf", str(partial), STANDIN.name],
        check=True,
        timeout=60,
    )
    partial.rename(dest)
    return dest


def load_vllm_standin(fleet: Fleet, host: Host, tag: str) -> None:
    """Import the stand-in image on HOST under TAG (Docker must be installed there)."""
    host.put_file(vllm_standin_rootfs(fleet), "/var/tmp/vllm-standin.tar")
    host.run(f"docker import --change 'ENTRYPOINT {ENTRYPOINT}' /var/tmp/vllm-standin.tar {tag}", timeout=300)
    host.run("rm -f /var/tmp/vllm-standin.tar")


def install_docker(host: Host) -> None:
    """apt-install Docker and the Compose plugin from the local repository (before an image import)."""
    host.run("apt-get update -q", timeout=120)
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose-plugin", timeout=600)
    host.run("timeout 60 sh -c 'until docker info >/dev/null 2>&1; do sleep 0.5; done'")
