"""The host firewall: gpuctl's own nftables table, loaded by a oneshot unit at boot.

The ruleset replaces the table atomically and accepts established connections first, so the SSH
session applying it is never cut; before applying, the port this session arrived on must be open.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import server, systemd
from pyinfra.operations.util import any_changed

from gpuctl.deploy.facts import CommandSucceeds, SshServerPort
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.packages import apt_installed
from gpuctl.deploy.units import running_and_enabled
from gpuctl.host_layout import FIREWALL_RULES
from gpuctl.render import FirewallFiles, firewall_ports
from gpuctl.spec import HostSpec

UNIT = "gpuctl-firewall.service"


class FirewallWouldLockOut(RuntimeError):
    """The SSH session arrives on a port the firewall would close."""


@deploy("Firewall (nftables)")
def firewall(spec: HostSpec, rendered: FirewallFiles) -> None:
    """Install nftables, put the ruleset and its unit, check the ruleset, then (re)load it on change."""
    # Read as the SSH user itself: sudo's env_reset would drop SSH_CONNECTION.
    session_port = None if spec.local else host.get_fact(SshServerPort, _sudo=False)
    if not spec.local and session_port is None:
        raise FirewallWouldLockOut(
            "cannot tell which port this SSH session arrived on ($SSH_CONNECTION is empty), "
            "so the firewall is not applied: it could close that port"
        )
    if session_port is not None and session_port not in firewall_ports(spec):
        raise FirewallWouldLockOut(
            f"this SSH session arrives on port {session_port}, which the firewall would close "
            f"(open: {', '.join(map(str, firewall_ports(spec)))}): set ssh_port= or firewall.allow_tcp="
        )
    apt_installed("nftables", ["nftables"])
    changes = [put_rendered(item) for item in rendered.all()]
    server.shell(name="nft -c (ruleset check)", commands=[f"nft -c -f {FIREWALL_RULES}"], _if=any_changed(*changes))
    systemd.daemon_reload(name="systemd daemon-reload", _if=any_changed(*changes))
    running_and_enabled(UNIT, f"{UNIT} enabled and loaded")
    # The live ruleset, not only the file: a table deleted by hand or by `nft flush ruleset` is loaded again.
    if not host.get_fact(CommandSucceeds, test="nft list table inet gpuctl") and host.get_fact(SystemdStatus).get(UNIT):
        server.shell(
            name="Apply the firewall ruleset (the live table inet gpuctl was missing)",
            commands=[f"nft -c -f {FIREWALL_RULES} && systemctl reload {UNIT}"],
        )
    else:
        server.shell(
            name="Apply the firewall ruleset (atomic; established connections stay)",
            commands=[f"systemctl reload {UNIT}"],
            _if=any_changed(*changes),
        )
