"""One host of three down: the others deploy fully, the summary names it, and a rerun converges.

Ollama's server is the STAND-IN (harness/ollama_standin.py) from a local mirror; hosts, SSH,
pyinfra and systemd are real. The dead host is a fleet host killed outright.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from harness import mirror

pytestmark = pytest.mark.fleet

VERSION = "0.13.0"


def gpuctl_deploy(inventory, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--yes", *extra], capture_output=True, text=True, timeout=600
    )


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str | None]]:
    return {h["host"]: (h["status"], h["failed_operation"]) for h in json.loads(result.stdout)["hosts"]}


def test_dead_host_fails_alone_and_rerun_converges(fleet, tmp_path):
    hosts = [fleet.new_host(f"fault{i}") for i in (1, 2, 3)]
    entries = []
    for host in hosts:
        mirror.serve(host)
        mirror.publish(host, VERSION)
        entries.append(
            f"Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r}, "
            f"ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking='yes')"
        )
    inventory = tmp_path / "three.py"
    inventory.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Defaults, Host, Ollama
        fleet = [{", ".join(entries)}]
        fleet_defaults = Defaults(ollama=Ollama(version={VERSION!r}, cpu_fallback=True,
                                                release_url={mirror.MIRROR_URL!r}, models=["tinyllama"]))
    """)
    )
    dead = hosts[1]
    dead.kill()

    first = gpuctl_deploy(inventory, "--json")
    assert first.returncode == 1, first.stdout + first.stderr
    assert statuses(first) == {
        "fault1": ("changed", None),
        "fault2": ("failed", "connect"),
        "fault3": ("changed", None),
    }
    for host in (hosts[0], hosts[2]):
        assert host.run("systemctl is-active ollama.service").stdout.strip() == "active"
        assert "tinyllama:latest" in host.run("curl -s 127.0.0.1:11434/api/tags").stdout

    status = subprocess.run(["gpuctl", "status", str(inventory), "--json"], capture_output=True, text=True, timeout=120)
    assert status.returncode == 1
    rows = {r["host"]: r for r in json.loads(status.stdout)["engines"]}
    for name in ("fault1", "fault3"):
        assert (rows[name]["engine"], rows[name]["unit"], rows[name]["health"], rows[name]["version"]) == (
            "ollama",
            "active",
            "200",
            VERSION,
        )
        assert rows[name]["error"] is None
    assert rows["fault2"]["error"].startswith("unreachable: ")
    human = subprocess.run(["gpuctl", "status", str(inventory)], capture_output=True, text=True, timeout=120)
    assert "fault2" in human.stdout and "unreachable" in human.stdout

    table = gpuctl_deploy(inventory)
    assert table.returncode == 1
    summary = table.stdout
    assert "fault2" in summary and "failed" in summary and "connect" in summary
    assert summary.count("unchanged") == 2

    dead.start()
    mirror.serve(dead)
    again = gpuctl_deploy(inventory, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert statuses(again) == {
        "fault1": ("unchanged", None),
        "fault2": ("changed", None),
        "fault3": ("unchanged", None),
    }
    assert dead.run("systemctl is-active ollama.service").stdout.strip() == "active"
