"""How each command's results look on a terminal: rich tables and the one-line labels in them.

Data in, printing out; no decisions. JSON output is each result's own `as_dict()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from gpuctl.output import console
from gpuctl.render import firewall_ports
from gpuctl.spec import HostSpec, VllmSpec

if TYPE_CHECKING:
    from gpuctl.capacity import EnginePlan
    from gpuctl.discover import Found, Proposal
    from gpuctl.fleet import HostOutcome
    from gpuctl.rollback import HistoryRow, RollbackOutcome
    from gpuctl.rollout import Phase, Rollout
    from gpuctl.top import TopRow
    from gpuctl.verify.runner import EngineReport
    from gpuctl.verify.status import StatusRow


def table(*columns: str, title: str | None = None) -> Table:
    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column)
    return result


# -- hosts ----------------------------------------------------------------------------------------


def gpu_label(host: HostSpec) -> str:
    if host.gpus is None:
        return "none (CPU)"
    driver = f", driver {host.driver.branch}" if host.driver else ""
    return f"{host.gpus.count}× {host.gpus.model} ({host.gpus.memory_gib:g} GiB){driver}"


def vllm_label(e: VllmSpec) -> str:
    """One vLLM engine in a table: what it serves, where, and on what (GPU tensor parallel or the CPU)."""
    on = f"cpu, KV {e.cpu_kv_cache_gib} GiB RAM" if e.device == "cpu" else f"tp {e.tensor_parallel_size}"
    return f"{e.label} {e.served_name} on {e.bind}:{e.port} ({on}, kv {e.kv_cache_dtype})"


def engine_labels(host: HostSpec) -> list[str]:
    labels = [vllm_label(e) for e in host.vllm]
    if host.ollama:
        o = host.ollama
        named = {tag: alias for alias, tag in o.aliases.items()}
        models = [f"{m} as {named[m]}" if m in named else m for m in o.models]
        scope = ", user-level" if o.layout.user_level else ""
        labels.append(f"{o.label} {o.version}{scope} on {o.bind}:{o.port} ({', '.join(models) or 'no models'})")
    return labels or ["none"]


def exposure_label(host: HostSpec) -> str:
    """How other machines reach the host's engines: its gateway URL, or loopback only (SSH tunnel)."""
    lines = []
    default = host.gateway_default_engine()
    if default is not None and host.gateway is not None:
        lines.append(f"{host.gateway_url(default)}/v1 ({host.gateway.tls})")
    elif host.engines() and host.local:
        lines.append("loopback only (this machine)")
    elif host.engines():
        lines.append("loopback only (gpuctl verify uses an SSH tunnel)")
    lines += [f"endpoint {e.name}: {e.url(host)}/v1 for {', '.join(e.hosts)} ({e.tls})" for e in host.endpoints]
    lines += [f"RISK: {e.bind}:{e.port} open without a gateway" for e in host.public_engines()]
    if host.firewall_enabled():
        lines.append("firewall: " + ", ".join(map(str, firewall_ports(host))))
    return "\n".join(lines)


def host_summary(host: HostSpec) -> dict[str, Any]:
    """A host as JSON: its whole spec (secret references only, never values) plus derived names."""
    data = host.model_dump(mode="json")
    data["connection"] = host.connection_label()
    for engine, dumped in zip(host.vllm, data["vllm"], strict=True):
        dumped["unit"] = engine.unit_name
        dumped["command"] = engine.command_args()
    if host.ollama is not None:
        data["ollama"]["unit"] = host.ollama.unit_name
        data["ollama"]["environment"] = host.ollama.environment()
    default = host.gateway_default_engine()
    if default is not None and data["gateway"] is not None:
        data["gateway"]["base_url"] = host.gateway_url(default) + "/v1"
    data["firewall"]["open_tcp"] = firewall_ports(host) if host.firewall_enabled() else None
    return data


def print_hosts(label: str, hosts: list[HostSpec]) -> None:
    """`gpuctl check`: one row per host."""
    out = console()
    out.print(f"{label}: {len(hosts)} host(s) OK")
    rows = table("host", "connection", "GPUs", "engines", "exposure")
    for host in hosts:
        rows.add_row(
            host.name, host.connection_label(), gpu_label(host), "\n".join(engine_labels(host)), exposure_label(host)
        )
    out.print(rows)


def print_plans(label: str, plans: list[EnginePlan]) -> None:
    rows = table("host", "engine", "verdict", "numbers", "why", title=f"{label}: capacity plan")
    for p in plans:
        numbers = "\n".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in p.numbers.items())
        rows.add_row(p.host, p.engine, p.verdict, numbers, "\n".join(p.reasons + [f"warning: {w}" for w in p.warnings]))
    console().print(rows)


def print_rendered(out_dir: Path, report: dict[str, list[dict[str, str]]]) -> None:
    out = console()
    for host_name, files in report.items():
        out.print(f"{host_name}: {len(files)} file(s) under {out_dir / host_name}", style="bold")
        for f in files:
            out.print(f"  {f['mode']} {f['owner']:<6} {f['path']}")


# -- deploys, checks, status ------------------------------------------------------------------------


def print_outcomes(outcomes: list[HostOutcome], title: str) -> None:
    """The per-host summary table: status, changes, and for a failure the operation and its error."""
    rows = table("host", "status", "details", title=title)
    for o in outcomes:
        if o.status == "failed":
            details = f"{o.failed_operation}: {o.error}"
        else:
            details = "\n".join(o.changes) if o.changes else "-"
        rows.add_row(o.name, o.status, details)
    console().print(rows)


def print_reports(reports: list[EngineReport]) -> None:
    out = console()
    for report in reports:
        title = f"{report.host} {report.engine}" + (f" ({report.url})" if report.url else "")
        rows = table("check", "result", "reason", "numbers", title=title)
        for check in report.checks:
            numbers = ", ".join(f"{k}={v}" for k, v in check.numbers.items())
            rows.add_row(check.name, "pass" if check.ok else "FAIL", check.reason, numbers)
        out.print(rows)
        for check in report.checks:
            if not check.ok and check.details:
                out.print(f"  {check.name}: last lines:")
                for line in check.details:
                    out.print(f"    {line}")


def print_status(status_rows: list[StatusRow]) -> None:
    columns = ("host", "engine", "unit", "health", "version", "model", "running", "waiting", "KV cache", "GPU memory")
    rows = table(*columns)
    for r in status_rows:
        if r.error and r.engine == "-":
            rows.add_row(r.host, "-", r.error, *[""] * (len(columns) - 3))
            continue
        kv = f"{r.kv_cache_usage:.1%}" if r.kv_cache_usage is not None else "-"
        health = f"{r.health}, not generating" if r.generating is False else r.health
        rows.add_row(
            r.host, r.engine, r.unit, health, r.version, r.model, _num(r.running), _num(r.waiting), kv, r.gpu_memory
        )
    console().print(rows)


def top_table(top_rows: list[TopRow], title: str) -> Table:
    """`gpuctl top`'s screen: one row per engine."""
    columns = ("host", "engine", "health", "model", "running", "waiting", "KV cache", "tok/s", "TTFT p50", "TTFT p95")
    rows = table(*columns, "GPU memory", title=title)
    for r in top_rows:
        kv = f"{r.kv_cache_usage:.1%}" if r.kv_cache_usage is not None else "-"
        health = f"{r.health} ({r.error})" if r.error else r.health
        rows.add_row(
            r.host,
            r.engine,
            health,
            r.model,
            _num(r.running),
            _num(r.waiting),
            kv,
            "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
            _ms(r.ttft_p50_s),
            _ms(r.ttft_p95_s),
            r.gpu_memory,
        )
    return rows


def print_discovered(name: str, found: Found, proposal: Proposal) -> None:
    """`gpuctl discover`: what the host is, what gpuctl proposes, and the inventory entry."""
    rows = table("fact", "value", title=f"{name}: what the host says (read-only)")
    gpus = ", ".join(f"{g.name}" + (f" ({g.memory_mib} MiB)" if g.memory_mib else "") for g in found.gpus) or "none"
    for fact, value in (
        ("distribution", f"{found.os_name} ({found.os_id} {found.os_version}), kernel {found.kernel}, {found.arch}"),
        ("CPU, RAM", f"{found.cpus} × {found.cpu_model}, {found.ram_gib:g} GiB"),
        ("free disk for models", "-" if found.disk_free_gib is None else f"{found.disk_free_gib:g} GiB"),
        ("NVIDIA GPUs", gpus + (f", {found.nvswitches} NVSwitch" if found.nvswitches else "")),
        ("driver, CUDA", f"{found.driver or 'not loaded'}, CUDA {found.cuda or '-'}"),
        ("Docker, toolkit", f"{found.docker or 'not installed'}, {found.toolkit or 'not installed'}"),
    ):
        rows.add_row(fact, value)
    console().print(rows)
    plan = proposal.plan
    figures = f"{plan.verdict}: {'; '.join(plan.reasons[:2])}" if plan else "no plan"
    console().print(f"proposed: {proposal.engine} ({proposal.why}); plan: {figures}")
    console().print(proposal.as_dict()["entry"], markup=False, highlight=False, soft_wrap=True)  # ready to paste
    console(stderr=True).print(
        f"next: save it as inventories/{name}.py, then gpuctl check {name} && gpuctl plan {name} && "
        f"gpuctl deploy {name} && gpuctl verify {name}"
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def print_history(history_rows: list[HistoryRow]) -> None:
    rows = table("host", "engine", "release", "created", "image", "verify", "live")
    for r in history_rows:
        if r.error or not r.releases:
            rows.add_row(r.host, r.engine, r.error or "no release recorded yet (gpuctl deploy records them)", *[""] * 4)
        for release in reversed(r.releases):
            live = "live" if release.current else ""
            rows.add_row(r.host, r.engine, release.id, release.created, release.image, release.verify, live)
    console().print(rows)


def print_rollback(outcomes: list[RollbackOutcome]) -> None:
    rows = table("host", "engine", "from", "to", "result")
    for o in outcomes:
        if o.error is not None:
            result = f"[red]failed: {o.error}[/red]"
        elif o.verify is not None and not o.verify.ok:
            failed = "; ".join(f"{c.name}: {c.reason}" for c in o.verify.checks if not c.ok)
            result = f"[red]restored, verify failed: {failed}[/red]"
        else:
            result = "[green]restored and verified[/green]"
        rows.add_row(o.host, o.engine, o.from_release or "-", o.to_release or "-", result)
    console().print(rows)
    if any(o.to_release for o in outcomes):
        console(stderr=True).print("note: the inventory is unchanged; the next gpuctl deploy applies it again")


def print_phases(phases: list[Phase]) -> None:
    """Each phase of a rollout: where it comes from and its batches (on stderr)."""
    err = console(stderr=True)
    for phase in phases:
        batches = phase.batches()
        checked = "each verified" if phase.verify else "not verified (add --verify)"
        err.print(
            f"  {phase.why}: {len(batches)} batch(es), {checked}: "
            + " | ".join(", ".join(h.name for h in b) for b in batches)
        )


def print_rollout(rollout: Rollout) -> None:
    """Each batch's deploy summary, then per failed host: the check that failed (with the engine's last log
    lines), and whether its rollback verified; then the hosts the rollout did not touch."""
    err = console(stderr=True)
    for number, batch in enumerate(rollout.batches, 1):
        print_outcomes(batch.outcomes, title=f"batch {number}/{len(rollout.planned)}: {', '.join(batch.hosts)}")
        for report in (r for r in batch.reports if not r.ok):
            for check in (c for c in report.checks if not c.ok):
                err.print(f"FAILED {report.host}: {report.engine}: {check.name}: {check.reason}", style="bold red")
                for line in check.details[-10:]:
                    err.print(f"    {line}", markup=False, highlight=False)
        for back in batch.rollbacks:
            if back.error is not None:
                verdict = f"rollback failed: {back.error}"
            else:
                action = f"rolled back to {back.to_release}" if back.restored else f"kept {back.to_release}"
                verdict = f"{action}, verify {'passed' if back.ok else 'FAILED'}"
            err.print(f"{back.host}: {back.engine}: {verdict}", style="green" if back.ok else "bold red")
    if rollout.stopped:
        err.print(f"the rollout stopped: {rollout.stopped}", style="bold red")
    elif rollout.failed_hosts:
        err.print(f"the rollout went on past failed host(s): {', '.join(rollout.failed_hosts)}", style="yellow")
    if rollout.untouched:
        err.print(f"not touched (the rollout stopped): {', '.join(rollout.untouched)}", style="yellow")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def print_keys(label: str, key_rows: list[dict[str, Any]]) -> None:
    rows = table("host", "base URL", "key", "trust", title=f"gateway keys of {label}")
    for row in key_rows:
        missing = " (not yet created: gpuctl deploy makes it)" if row["key_exists"] is False else ""
        rows.add_row(row["host"], row["url"], row["key"] + missing, row["ca"])
    console().print(rows)


def print_risks(hosts: list[HostSpec]) -> None:
    """The RISK lines of every deploy, on stderr."""
    for line in risk_lines(hosts):
        console(stderr=True).print(line, style="bold red")


def risk_lines(hosts: list[HostSpec]) -> list[str]:
    """Every engine open beyond loopback without a gateway, and every node exporter without a firewall:
    said on every deploy."""
    lines = [
        f"RISK: {host.name}: {engine.label} listens on {engine.bind}:{engine.port} without a gateway "
        "(unsafe_public_bind=True): anyone who reaches that port uses the engine"
        for host in hosts
        for engine in host.public_engines()
    ]
    for host in hosts:
        if host.scraper is None or host.monitoring is not None or host.firewall_enabled():
            continue
        exporters = f"the node exporter listens on port {host.node_exporter_port}"
        if host.dcgm_exporter_port is not None:
            exporters = (
                f"the node and DCGM exporters listen on ports {host.node_exporter_port}, {host.dcgm_exporter_port}"
            )
        lines.append(
            f"RISK: {host.name}: {exporters} with no firewall to admit the monitoring host ({host.scraper}) alone: "
            "anyone who reaches it reads the host's metrics"
        )
    return lines


def print_parity(labels: list[str], matrix: dict[str, list[Any]], failing: list[str]) -> None:
    """gpuctl parity's matrix: parameter × target → works / ignored / error, with what the server said."""
    marks = {"works": "[green]works[/]", "ignored": "[yellow]ignored[/]", "error": "[red]error[/]"}
    grid = table("parameter", *labels, "same", title="parity")
    for name, outcomes in matrix.items():
        same = "yes" if len({o.status for o in outcomes}) == 1 else "[bold red]no[/]"
        cells = [f"{marks[o.status]} {o.detail}" for o in outcomes]
        grid.add_row(name + (" (required)" if name in failing else ""), *cells, same)
    console().print(grid)
    for name in failing:
        console(stderr=True).print(f"required but not working everywhere: {name}")


def print_rotation(rotation: Any) -> None:
    print_outcomes(rotation.outcomes, title="key rotation")
    err = console(stderr=True)
    for name in rotation.rotated:
        err.print(f"{name}: new key in {rotation.key_files[name]}")
    for outcome in rotation.outcomes:
        if outcome.status == "failed":
            err.print(
                f"{outcome.name}: not rotated; if its gateway already reloaded, it expects a key that was "
                "not kept: gpuctl deploy puts the kept key back"
            )
