"""Fleet hosts are real systemd machines: boot, units, apt from the local repository, pyinfra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.fleet import Fleet

pytestmark = pytest.mark.fleet

HOST_NAMES = ["alpha", "beta", "gamma"]

TINY_UNIT = """\
[Unit]
Description=gpuctl fleet test unit

[Service]
Type=simple
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""


@pytest.mark.parametrize("name", HOST_NAMES)
def test_host_boots_to_running_systemd(fleet: Fleet, name: str) -> None:
    host = fleet.host(name)
    state = host.run("timeout 60 systemctl is-system-running --wait", check=False)
    failed = host.run("systemctl --failed --no-legend --plain", check=False).stdout
    assert state.stdout.strip() == "running", f"{name}: {state.stdout!r}; failed units:\n{failed}"
    assert host.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert host.run("hostname").stdout.strip() == name
    assert host.run("ip -4 -o addr show dev eth0").stdout.split()[3] == f"{host.address}/30"


@pytest.mark.parametrize("name", HOST_NAMES)
def test_unit_can_be_enabled_and_started(fleet: Fleet, name: str) -> None:
    host = fleet.host(name)
    host.write_file("/etc/systemd/system/fleet-probe.service", TINY_UNIT)
    host.run("systemctl daemon-reload && systemctl enable --now fleet-probe.service")
    assert host.run("systemctl is-active fleet-probe.service").stdout.strip() == "active"
    assert host.run("systemctl is-enabled fleet-probe.service").stdout.strip() == "enabled"


@pytest.mark.parametrize("name", HOST_NAMES)
def test_apt_installs_from_local_repository(fleet: Fleet, name: str) -> None:
    host = fleet.host(name)
    sources = host.run("cat /etc/apt/sources.list.d/*.list; ls /etc/apt/sources.list 2>&1", check=False).stdout
    assert "deb [trusted=yes] file:/srv/repo ./" in sources
    assert "http" not in sources
    host.run("apt-get update -q", timeout=120)
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello", timeout=180)
    assert host.run("hello").stdout.strip() == "Hello, world!"


def test_files_round_trip_outside_tmp(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.host("alpha")
    local = tmp_path / "blob.bin"
    local.write_bytes(bytes(range(256)) * 100)
    host.put_file(local, "/var/tmp/fleet/blob.bin", mode=0o600)
    assert host.read_file("/var/tmp/fleet/blob.bin") == local.read_bytes()
    assert host.run("stat -c %a /var/tmp/fleet/blob.bin").stdout.strip() == "600"
    rc, out, _err = host.run("exit 3", check=False)
    assert (rc, out) == (3, "")


def test_pyinfra_connects_with_host_data(fleet: Fleet, tmp_path: Path) -> None:
    """The keys of ``pyinfra_data()`` are what pyinfra 3.x reads (strict host key checking)."""
    hosts = [fleet.host(n) for n in HOST_NAMES]
    inventory = tmp_path / "inventory.py"
    entries = [(h.address, h.pyinfra_data()) for h in hosts]
    inventory.write_text(f"hosts = {entries!r}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfra", "-y", str(inventory), "fact", "server.Hostname"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    for host in hosts:
        assert f'"{host.name}"' in output, output[-3000:]
