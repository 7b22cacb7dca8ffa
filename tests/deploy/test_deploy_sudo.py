"""A deploy as a non-root SSH user with sudo: secrets never pass through a world-readable temporary
file, gpuctl's configuration folders are root-only, and the firewall's lockout guard still knows the
session's port (sudo's env_reset drops SSH_CONNECTION, so it is read without sudo).

Real: a user `ops` with passwordless sudo on a fleet host, SSH, pyinfra's sudo upload path, nginx,
nftables. The engine is the Ollama STAND-IN from the local release mirror.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from harness import mirror
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

USER = "ops"


@pytest.fixture(scope="module")
def sudo_host(fleet: Fleet) -> Host:
    host = fleet.new_host("sudo")
    mirror.serve(host)
    mirror.publish(host, "0.13.0")
    host.run(
        f"useradd --create-home --shell /bin/bash {USER} && install -d -m 0700 -o {USER} -g {USER} "
        f"/home/{USER}/.ssh && cp /root/.ssh/authorized_keys /home/{USER}/.ssh/ && "
        f"chown {USER}: /home/{USER}/.ssh/authorized_keys && "
        f"echo '{USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{USER} && chmod 0440 /etc/sudoers.d/{USER}"
    )
    return host


def write_inventory(path: Path, host: Host) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Gateway, Host, Ollama
        edge = [Host({host.name!r}, address={host.address!r}, ssh_user={USER!r}, ssh_key={str(host.ssh_key)!r},
                     ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                     ollama=Ollama(version="0.13.0", cpu_fallback=True,
                                   release_url={mirror.MIRROR_URL!r}, models=["qwen2.5:0.5b"]),
                     gateway=Gateway())]
    """)
    )
    return path


def test_sudo_deploy_keeps_secrets_private_and_applies_the_firewall(sudo_host, tmp_path):
    inventory = write_inventory(tmp_path / "edge.py", sudo_host)
    result = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--yes", "--verbose"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    key = (tmp_path / ".gpuctl" / "edge" / f"{sudo_host.name}.api-key").read_text().strip()
    assert key not in result.stdout + result.stderr
    # Secret files were staged in the user's 0700 folder, not in /tmp (pyinfra's default, 0644).
    staged = f"/home/{USER}/.cache/gpuctl-upload/"
    for path in ("/etc/gpuctl/gateway/secrets.conf", "/etc/gpuctl/gateway/tls/key.pem"):
        assert any(staged in line and path in line for line in result.stderr.splitlines()), path
    assert sudo_host.run(f"stat -c '%a %U' /home/{USER}/.cache/gpuctl-upload").stdout.strip() == f"700 {USER}"
    for folder in ("/etc/gpuctl", "/etc/gpuctl/gateway", "/etc/gpuctl/gateway/tls"):
        assert sudo_host.run(f"stat -c '%a %U' {folder}").stdout.strip() == "700 root", folder
    # The lockout guard read the session's port without sudo, so the firewall went on.
    assert "table inet gpuctl" in sudo_host.run("nft list tables").stdout
    second = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--yes", "--json"], capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["hosts"][0]["status"] == "unchanged"
