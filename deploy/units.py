"""Starting and restarting gpuctl's units on purpose, without tripping their crash-loop start limit."""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import server, systemd

from gpuctl.deploy.facts import UnitStates


def restart_command(
    unit: str, verb: str = "restart", systemctl: str = "systemctl", journalctl: str = "journalctl"
) -> str:
    """Restart UNIT; on failure print its last journal lines so the deploy summary says why.

    `reset-failed` first: the unit's StartLimitBurst guards against crash loops, and a restart gpuctl asks
    for on purpose must neither count against it nor be refused by it (systemctl(1): reset-failed also
    resets the start rate-limit counter). Crash-loop protection between deploys stays as it is.
    SYSTEMCTL and JOURNALCTL: how to reach the unit's service manager (a user-level unit: its user's).
    """
    return (
        f"{systemctl} reset-failed {unit} 2>/dev/null || true; {systemctl} {verb} {unit} || "
        f"{{ {journalctl} -u {unit} -n 25 --no-pager -o cat >&2; exit 1; }}"
    )


def running_and_enabled(unit: str, name: str | None = None) -> None:
    """UNIT enabled and running: pyinfra's systemd step (two facts) only when one command says it is not."""
    if host.get_fact(UnitStates, unit=unit) == ("active", "enabled"):
        host.noop(f"{unit} is active and enabled")
        return
    systemd.service(name=name or f"{unit} enabled and running", service=unit, running=True, enabled=True)


def start_unless_active(unit: str, systemctl: str = "systemctl", journalctl: str = "journalctl") -> None:
    """Enable UNIT and start it when it is not active, clearing a failed state (a start limit hit by
    crash loops, a failed start) first: a deploy is the operator's explicit request to run it.
    SYSTEMCTL and JOURNALCTL: how to reach its service manager (a user's, for a user-level unit)."""
    state, enabled = host.get_fact(UnitStates, unit=unit, systemctl=systemctl)
    if enabled != "enabled" and systemctl == "systemctl":
        systemd.service(name=f"{unit} enabled", service=unit, running=None, enabled=True)
    elif enabled != "enabled":
        server.shell(name=f"{unit} enabled (user-level)", commands=[f"{systemctl} enable {unit}"])
    if state == "active":
        host.noop(f"{unit} is active")
        return
    command = restart_command(unit, "start", systemctl, journalctl)
    server.shell(name=f"Start {unit} (was {state or 'unknown'})", commands=[command])
