"""Fleet hosts reaching each other through this machine: IPv4 forwarding on their veths only, for as long
as a test module needs it, restored after (this machine's other interfaces are never touched)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from harness.fleet import Host


def knob(host: Host) -> Path:
    return Path(f"/proc/sys/net/ipv4/conf/{host.veth}/forwarding")


@contextlib.contextmanager
def host_to_host(hosts: list[Host]) -> Iterator[None]:
    """Forwarding on for HOSTS' veths inside the block; each restored to its value before (while it exists)."""
    before = []
    for host in hosts:
        before.append(knob(host).read_text().strip())
        knob(host).write_text("1")
    try:
        yield
    finally:
        for host, value in zip(hosts, before, strict=True):
            if knob(host).exists():
                knob(host).write_text(value)
