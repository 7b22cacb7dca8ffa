"""Checks of the host itself over SSH: the engine's unit, its container, the GPUs (on the host and
inside the container), and which addresses the engine port listens on. A failure carries the journal
or container log lines that explain it."""

from __future__ import annotations

import ipaddress
import re

from gpuctl.errors import NO_SYSTEMD
from gpuctl.gpu_facts import cdi_staleness, gpu_uuids
from gpuctl.spec import HostSpec, OllamaSpec, VllmSpec, on_host_address
from gpuctl.verify.checks import Check
from gpuctl.verify.containers import inspect_container
from gpuctl.verify.remote import Remote

LOG_LINES = 20


def unit_check(remote: Remote, engine: VllmSpec | OllamaSpec) -> Check:
    """The engine's unit is active and enabled (a user-level one in its user's service manager)."""
    unit, systemctl = engine.unit_name, engine.systemctl
    out = remote.run(
        f"test -d /run/systemd/system || echo gpuctl:no-systemd; {systemctl} is-active {unit}; "
        f"{systemctl} is-enabled {unit}; {systemctl} show -p NRestarts --value {unit}"
    )
    if "gpuctl:no-systemd" in out.stdout:
        where = "this machine" if remote.host.local else remote.host.name
        return Check("unit", False, f"{where} {NO_SYSTEMD}")
    lines = (out.stdout.split() + ["?", "?", "0"])[:3]
    active, enabled, restarts = lines
    ok = active == "active" and enabled == "enabled"
    check = Check(
        "unit", ok, f"{unit} is {active} and {enabled}", {"restarts": int(restarts) if restarts.isdigit() else 0}
    )
    if not ok:
        check.details = journal(remote, engine)
    return check


def journal(remote: Remote, engine: VllmSpec | OllamaSpec) -> list[str]:
    command = f"{engine.journalctl} -u {engine.unit_name} -n {LOG_LINES} --no-pager -o cat"
    return remote.run(command).stdout.splitlines()[-LOG_LINES:]


def container_check(remote: Remote, engine: VllmSpec) -> Check:
    name = engine.project
    found = inspect_container(remote, name)
    if found.state is None:
        return Check(
            "container",
            False,
            f"no container {name}: {found.error[:160]}",
            details=journal(remote, engine),
        )
    state = found.state
    ok = state.status == "running" and state.health == "healthy"
    reason = f"{name} {state.status}, {state.health}" + (
        f" (exit code {state.exit_code})" if state.status == "exited" else ""
    )
    check = Check("container", ok, reason, {"restart_count": state.restart_count})
    if not ok:
        check.details = remote.run(f"docker logs --tail {LOG_LINES} {name} 2>&1").stdout.splitlines()[-LOG_LINES:]
    return check


def gpu_checks(remote: Remote, host: HostSpec, engine: VllmSpec | None) -> list[Check]:
    """nvidia-smi on the host, and inside the engine's container (catches NVML lost after daemon-reload)."""
    if host.gpus is None:
        return []
    out = remote.run("nvidia-smi --query-gpu=driver_version,memory.used,memory.total --format=csv,noheader,nounits")
    if not out.ok:
        checks = [
            Check(
                "gpu",
                False,
                f"nvidia-smi failed on the host (exit {out.rc}): {(out.stdout + out.stderr).strip()[:160]}",
            )
        ]
    else:
        rows = [[p.strip() for p in line.split(",")] for line in out.stdout.strip().splitlines()]
        used = sum(float(r[1]) for r in rows)
        total = sum(float(r[2]) for r in rows)
        checks = [
            Check(
                "gpu",
                len(rows) >= host.gpus.count,
                f"{len(rows)} GPU(s), driver {rows[0][0]}",
                {"memory_used_mib": used, "memory_total_mib": total, "driver": rows[0][0]},
            )
        ]
    if engine is not None and engine.gpu_access != "none":
        inside = remote.run(f"docker exec {engine.project} nvidia-smi -L")
        checks.append(
            Check(
                "gpu_in_container",
                inside.ok,
                "nvidia-smi works inside the container"
                if inside.ok
                else f"nvidia-smi fails inside the container: {(inside.stdout + inside.stderr).strip()[:160]}",
            )
        )
    if engine is not None and engine.gpu_access == "cdi":
        checks.append(cdi_check(remote))
    return checks


def cdi_check(remote: Remote) -> Check:
    """The CDI spec Docker resolves nvidia.com/gpu=… from must list the GPUs the driver sees now."""
    listed = remote.run("nvidia-ctk cdi list 2>/dev/null")
    seen = remote.run("nvidia-smi -L")
    if not listed.ok:
        return Check(
            "cdi", False, f"nvidia-ctk cdi list failed (exit {listed.rc}): is the container toolkit installed?"
        )
    stale = cdi_staleness(listed.stdout, seen.stdout)
    if stale:
        return Check("cdi", False, f"{stale}: gpuctl deploy regenerates it (nvidia-cdi-refresh)")
    return Check("cdi", True, f"the CDI spec lists the {len(gpu_uuids(seen.stdout))} GPU(s) the driver sees")


def bind_check(remote: Remote, port: int, allowed: str) -> Check:
    """The engine port must listen on the spec's bind address only (0.0.0.0 allows everything)."""
    out = remote.run(f"ss -ltnH 'sport = :{port}'")
    addresses = sorted(
        {line.split()[3].rsplit(":", 1)[0].strip("[]") for line in out.stdout.splitlines() if line.split()}
    )
    if not addresses:
        return Check("bind", False, f"nothing listens on port {port}")
    wildcard = {"0.0.0.0", "*", "::"}
    if allowed in wildcard:
        return Check("bind", True, f"port {port} listens on {', '.join(addresses)}")
    bad = [a for a in addresses if a in wildcard or not _same(a, allowed)]
    if bad:
        return Check("bind", False, f"port {port} listens on {', '.join(bad)}, the spec allows {allowed} only")
    return Check("bind", True, f"port {port} listens on {allowed} only")


def _same(address: str, allowed: str) -> bool:
    try:
        return ipaddress.ip_address(address) == ipaddress.ip_address(allowed)
    except ValueError:
        return False


def engine_key_check(remote: Remote, engine: VllmSpec) -> Check:
    """Behind a gateway, clients never see the engine's key (the gateway adds it), so the API checks cannot
    tell whether the engine itself still enforces it: ask on the host, without a key, as a local user would."""
    where = on_host_address(engine.bind, engine.port)
    out = remote.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{where}/v1/models")
    code = out.stdout.strip()
    if code == "401":
        return Check(
            "engine key", True, f"on the host, {where}/v1/models refuses a request without the engine's key (401)"
        )
    if code == "200":
        return Check(
            "engine key",
            False,
            f"on the host, {where}/v1/models answers 200 without a key: "
            "the engine runs without its API key; gpuctl deploy restores it",
        )
    return Check(
        "engine key",
        False,
        f"on the host, {where}/v1/models without a key answered {code if code not in ('', '000') else 'nothing'}",
    )


def firewall_check(remote: Remote, host: HostSpec) -> Check:
    """The live nftables table, not only the file: loaded, dropping by default, with the ports it should open."""
    from gpuctl.render import firewall_ports

    out = remote.run("nft list table inet gpuctl")
    if not out.ok:
        return Check(
            "firewall",
            False,
            "the live nftables table inet gpuctl is not loaded (deleted by hand or by "
            "`nft flush ruleset`): every port is open; gpuctl deploy loads it again",
        )
    live = out.stdout
    missing = [str(p) for p in firewall_ports(host) if not re.search(rf"\b{p}\b", live)]
    if "policy drop" not in live or missing:
        why = (
            "its input chain does not drop by default"
            if "policy drop" not in live
            else f"it lacks ports {', '.join(missing)}"
        )
        return Check(
            "firewall",
            False,
            f"the live table inet gpuctl differs from gpuctl's ruleset ({why}): gpuctl deploy loads it again",
        )
    return Check(
        "firewall",
        True,
        f"table inet gpuctl is loaded: input drops all but {', '.join(map(str, firewall_ports(host)))}",
    )


def engine_host_checks(remote: Remote, host: HostSpec, engine: VllmSpec | OllamaSpec) -> list[Check]:
    if isinstance(engine, VllmSpec):
        checks = [
            unit_check(remote, engine),
            container_check(remote, engine),
            *gpu_checks(remote, host, engine),
            bind_check(remote, engine.port, engine.bind),
        ]
        if host.gateway is not None and engine.api_key is not None:
            checks.append(engine_key_check(remote, engine))
    else:
        checks = [
            unit_check(remote, engine),
            *gpu_checks(remote, host, None),
            bind_check(remote, engine.port, engine.bind),
        ]
    if host.firewall_enabled():
        checks.append(firewall_check(remote, host))
    return checks
