"""A deploy as a non-root SSH user with sudo: secrets never pass through a world-readable temporary
file, gpuctl's configuration folders are root-only, and the firewall's lockout guard still knows the
session's port (sudo's env_reset drops SSH_CONNECTION, so it is read without sudo).

Real: a user `ops` with passwordless sudo on a fleet host, SSH, pyinfra's sudo upload path, nginx,
nftables. The engine is the Ollama STAND-IN from the local release mirror.
"""

from __future__ import annotations

import json
import shutil
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


def sudo_entries(host: Host) -> int:
    """How many commands USER has run through sudo so far (sudo logs each one to the journal)."""
    out = host.run(f"journalctl -t sudo --no-pager -o cat | grep -c '^ *{USER} : ' || true").stdout
    return int(out.strip() or 0)


def test_verify_and_status_use_sudo_exactly_as_deploy_does(sudo_host, tmp_path):
    """verify and status reach the host through the same Connection as deploy: with the default
    (a non-root user means sudo) they run their host checks through sudo and pass; with sudo=False
    in the inventory they run none through sudo (a check that needs root then says so)."""
    inventory = write_inventory(tmp_path / "edge.py", sudo_host)
    deployed = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--yes"], capture_output=True, text=True, timeout=600
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    before = sudo_entries(sudo_host)
    for command in (["verify", sudo_host.name, "-i", str(inventory)], ["status", str(inventory)]):
        result = subprocess.run(["gpuctl", *command, "--json"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert sudo_entries(sudo_host) > before
    # The same inventory (same name, so the same gateway keystore) with sudo=False.
    (tmp_path / "no-sudo").mkdir()
    shutil.copytree(tmp_path / ".gpuctl", tmp_path / "no-sudo" / ".gpuctl")
    no_sudo = tmp_path / "no-sudo" / "edge.py"
    no_sudo.write_text(inventory.read_text().replace("ssh_user=", "sudo=False, ssh_user="))
    before = sudo_entries(sudo_host)
    result = subprocess.run(
        ["gpuctl", "verify", sudo_host.name, "-i", str(no_sudo), "--json"], capture_output=True, text=True, timeout=300
    )
    assert sudo_entries(sudo_host) == before
    checks = {c["name"]: c for e in json.loads(result.stdout)["engines"] for c in e["checks"]}
    assert checks["unit"]["ok"], checks["unit"]  # systemctl show needs no root
    assert not checks["firewall"]["ok"]  # reading the live nftables ruleset does
