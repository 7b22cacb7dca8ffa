"""The helpers later tests rely on: stop/kill/start, network cut/restore, reboot."""

from __future__ import annotations

import time

import pytest

from harness.fleet import Host

pytestmark = pytest.mark.fleet

MARKER = "/var/lib/fleet-marker"


def host_key(host: Host) -> str:
    return host.read_file("/etc/ssh/ssh_host_ed25519_key.pub").decode().split()[1]


def assert_unreachable(host: Host) -> None:
    """SSH fails, and fails within a bound (no hang)."""
    started = time.monotonic()
    result = host.run("true", check=False, timeout=20, connect_timeout=3)
    took = time.monotonic() - started
    assert not result.ok, "host still answers on SSH"
    assert result.rc in (255, 124), result
    assert took < 21, f"SSH took {took:.1f} s to fail"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stopped_host_comes_back_with_same_key_and_layer(fresh_host: Host, how: str) -> None:
    key = host_key(fresh_host)
    fresh_host.write_file(MARKER, "kept\n")
    fresh_host.run("sync")
    getattr(fresh_host, how)()
    assert not fresh_host.is_running()
    assert_unreachable(fresh_host)
    fresh_host.start()
    # StrictHostKeyChecking=yes against the run's known_hosts already proves the key is the same.
    assert host_key(fresh_host) == key
    assert fresh_host.read_file(MARKER) == b"kept\n"
    state = fresh_host.run("timeout 60 systemctl is-system-running --wait", check=False)
    assert state.stdout.strip() == "running", state


def test_cut_network_makes_host_unreachable_until_restored(fresh_host: Host) -> None:
    fresh_host.cut_network()
    try:
        assert_unreachable(fresh_host)
        assert fresh_host.is_running()
    finally:
        fresh_host.restore_network()
    fresh_host.wait_ssh(timeout=30)
    assert fresh_host.run("echo back").stdout == "back\n"


def test_reboot_gives_a_new_boot_id(fresh_host: Host) -> None:
    before = fresh_host.boot_id()
    fresh_host.write_file(MARKER, "survives reboot\n")
    fresh_host.run("sync")
    fresh_host.reboot(timeout=90)
    assert fresh_host.boot_id() != before
    assert fresh_host.read_file(MARKER) == b"survives reboot\n"
    state = fresh_host.run("timeout 60 systemctl is-system-running --wait", check=False)
    assert state.stdout.strip() == "running", state
