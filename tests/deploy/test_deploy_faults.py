"""One host of three down: the others deploy fully, the summary names it, and a rerun converges.

Ollama's server is the STAND-IN (harness/ollama_standin.py) from a local mirror; hosts, SSH,
pyinfra and systemd are real. The dead host is a fleet host killed outright.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time

import pytest

from harness import fault_times, mirror
from harness.fault_times import Stopwatch

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
    assert "Traceback" not in first.stdout + first.stderr  # paramiko's connect error is one line, not a trace
    assert statuses(first) == {
        "fault1": ("changed", None),
        "fault2": ("failed", "connect"),
        "fault3": ("changed", None),
    }
    for host in (hosts[0], hosts[2]):
        assert host.run("systemctl is-active ollama.service").stdout.strip() == "active"
        assert "tinyllama:latest" in host.run("curl -s 127.0.0.1:11434/api/tags").stdout

    with Stopwatch() as detect:
        status = subprocess.run(
            ["gpuctl", "status", str(inventory), "--json"], capture_output=True, text=True, timeout=120
        )
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
    with Stopwatch() as repair:
        again = gpuctl_deploy(inventory, "--json")
    fault_times.record("host down before the deploy (status names it)", detect.seconds, repair.seconds, "gpuctl deploy")
    assert again.returncode == 0, again.stdout + again.stderr
    assert statuses(again) == {
        "fault1": ("unchanged", None),
        "fault2": ("changed", None),
        "fault3": ("unchanged", None),
    }
    assert dead.run("systemctl is-active ollama.service").stdout.strip() == "active"


def test_a_host_silent_mid_deploy_fails_alone_and_the_run_ends(fleet, tmp_path):
    """A host whose every packet is dropped after the deploy started (no reset, no ICMP: a hung host
    or network) is reported failed with the lost connection named, while the other host's deploy
    completes; the run ends by itself, bounded by the SSH keepalive and TCP user timeout."""
    hosts = [fleet.new_host(f"quiet{i}") for i in (1, 2)]
    for host in hosts:
        mirror.serve(host)
        mirror.publish(host, VERSION)
    entries = ", ".join(
        f"Host({h.name!r}, address={h.address!r}, ssh_key={str(h.ssh_key)!r}, "
        f"ssh_known_hosts_file={str(h.known_hosts)!r}, ssh_strict_host_key_checking='yes')"
        for h in hosts
    )
    inventory = tmp_path / "two.py"
    inventory.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Defaults, Host, Ollama
        fleet = [{entries}]
        fleet_defaults = Defaults(ollama=Ollama(version={VERSION!r}, cpu_fallback=True,
                                                release_url={mirror.MIRROR_URL!r}, models=["tinyllama"]))
    """)
    )
    silent = hosts[1]
    process = subprocess.Popen(
        ["gpuctl", "deploy", str(inventory), "--yes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # bounded: the process ends, and the test's timeout below holds
            seen.append(line)
            if line.startswith(f"[{silent.name}] done: "):
                silent.silence()
                silenced_at = time.monotonic()
                break
        assert any(line.startswith(f"[{silent.name}] done: ") for line in seen), "".join(seen)
        stdout, stderr = process.communicate(timeout=300)
        run_ended_after = time.monotonic() - silenced_at
    finally:
        if process.poll() is None:
            process.kill()
        silent.unsilence()
    assert process.returncode == 1, stdout + stderr
    rows = [line for line in stdout.splitlines() if "│" in line]
    assert any("quiet1" in row and "changed" in row for row in rows), stdout
    assert any("quiet2" in row and "failed" in row for row in rows), stdout
    table_text = " ".join(re.sub("[│┃┏┓┗┛━─┡┩└┘╇╈┼┳┻]", " ", stdout).split())  # a wrapped cell reads on
    assert "the connection was lost: the host stopped answering" in table_text, stdout
    assert hosts[0].run("systemctl is-active ollama.service").stdout.strip() == "active"
    with Stopwatch() as repair:
        again = gpuctl_deploy(inventory, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert statuses(again) == {"quiet1": ("unchanged", None), "quiet2": ("changed", None)}
    fault_times.record(
        "host silent mid-deploy (the run's end names it)", run_ended_after, repair.seconds, "gpuctl deploy"
    )
