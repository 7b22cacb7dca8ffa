"""The firewall never locks the operator out: a deploy whose SSH session arrives on a port the
firewall would close stops before touching the firewall, and says which port to open.

Setup, real: the host redirects port 2222 to its sshd on 22 (an nftables nat rule, as a provider's
port mapping would), and the inventory connects on 2222. The session therefore arrives on 22, which
a firewall opening only `ssh_port=2222` would close. The engine is the Ollama STAND-IN (mirror).
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

NAT = (
    "nft add table ip gpuctl-test-nat && nft add chain ip gpuctl-test-nat prerouting "
    "'{ type nat hook prerouting priority dstnat; }' && "
    "nft add rule ip gpuctl-test-nat prerouting tcp dport 2222 redirect to :22"
)


def write_inventory(path: Path, host: Host, firewall: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Firewall, Gateway, Host, Ollama
        edge = [Host({host.name!r}, address={host.address!r}, ssh_port=2222, ssh_key={str(host.ssh_key)!r},
                     ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="no",
                     ollama=Ollama(version="0.13.0", cpu_fallback=True,
                                   release_url={mirror.MIRROR_URL!r}),
                     gateway=Gateway(), firewall=Firewall({firewall}))]
    """)
    )
    return path


@pytest.fixture(scope="module")
def mapped_host(fleet: Fleet) -> Host:
    host = fleet.new_host("lockout")
    mirror.serve(host)
    mirror.publish(host, "0.13.0")
    host.run("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nftables", timeout=300)
    host.run(NAT)
    return host


def deploy(inventory: Path) -> tuple[int, dict]:
    result = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--yes", "--json"], capture_output=True, text=True, timeout=600
    )
    return result.returncode, json.loads(result.stdout or "{}")


def test_a_firewall_that_would_close_the_session_port_is_refused(mapped_host, tmp_path):
    code, report = deploy(write_inventory(tmp_path / "edge.py", mapped_host, ""))
    assert code == 1
    [outcome] = report["hosts"]
    assert outcome["failed_operation"] == "prepare"
    assert "this SSH session arrives on port 22, which the firewall would close (open: 443, 2222)" in outcome["error"]
    assert mapped_host.run("test -e /etc/gpuctl/firewall.nft || echo absent").stdout.strip() == "absent"
    assert mapped_host.run("nft list tables").stdout.split().count("gpuctl") == 0
    # Opening the port the session really uses lets the deploy through, and SSH on 2222 still works.
    code, report = deploy(write_inventory(tmp_path / "edge.py", mapped_host, "allow_tcp=[22]"))
    assert code == 0, report
    assert "table inet gpuctl" in mapped_host.run("nft list tables").stdout
    code, report = deploy(tmp_path / "edge.py")
    assert (code, report["hosts"][0]["status"]) == (0, "unchanged")


def test_an_operation_that_raises_fails_the_host_in_one_line_without_a_traceback(mapped_host, tmp_path):
    """A path pyinfra cannot handle (a folder where nginx's default site link goes) makes pyinfra raise:
    the host fails with that one line, and no traceback reaches the user."""
    inventory = write_inventory(tmp_path / "edge.py", mapped_host, "allow_tcp=[22]")
    mapped_host.run("rm -rf /etc/nginx/sites-enabled/default && mkdir /etc/nginx/sites-enabled/default")
    try:
        result = subprocess.run(
            ["gpuctl", "deploy", str(inventory), "--yes", "--json"], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stdout + result.stderr
        [outcome] = json.loads(result.stdout)["hosts"]
        # pyinfra raises while preparing (facts known) or while running (facts changed by earlier operations).
        assert outcome["failed_operation"] in (
            "prepare",
            "Gateway (nginx) | No default nginx site (it would answer without a key)",
        ), outcome
        assert outcome["error"] == "OperationError: /etc/nginx/sites-enabled/default exists and is not a file"
    finally:
        mapped_host.run("rmdir /etc/nginx/sites-enabled/default")
    assert deploy(inventory)[0] == 0
