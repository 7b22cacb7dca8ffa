"""The gpuctl command line: thin wrappers around the library, human tables or --json.

Exit codes: 0 all good, 1 a host failed, 2 bad input (one clear line, never a traceback).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from gpuctl import __version__, inventory
from gpuctl.errors import GpuctlError, InventoryError
from gpuctl.render import firewall_ports, render_host, write_tree
from gpuctl.spec import HostSpec

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def console(stderr: bool = False) -> Console:
    """A console that drops colour when not a TTY or when NO_COLOR is set."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200  # pipes and logs get whole lines, not an 80-column wrap
    # No markup or emoji codes: host names, engine labels ("vllm:a") and logs are printed as they are.
    return Console(
        stderr=stderr, no_color="NO_COLOR" in os.environ, highlight=False, width=width, markup=False, emoji=False
    )


class GpuctlGroup(click.Group):
    """Turns every GpuctlError into `error: …` lines on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InventoryError as exc:
            for line in exc.lines:
                click.echo(f"error: {line}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except GpuctlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


limit_option = click.option(
    "--limit", "-l", "limit", multiple=True, metavar="HOST", help="Only these hosts or groups (globs allowed)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")

force_option = click.option(
    "--force", is_flag=True, help="Go on although capacity planning says an engine cannot start (at your risk)."
)


def capacity_gate(label: str, hosts: list[HostSpec], force: bool) -> None:
    """Refuse (exit 2) an engine the planner says cannot start, unless --force; print warnings."""
    from gpuctl.capacity import plan_host

    err = console(stderr=True)
    problems = []
    for host in hosts:
        try:
            plans = plan_host(host)
        except GpuctlError as exc:
            raise GpuctlError(f"{label}: {host.name}: {exc}") from None
        for plan in plans:
            for warning in plan.warnings:
                err.print(f"warning: {label}: {plan.host}: {plan.engine}: {warning}")
            if plan.verdict == "does not fit":
                problems += [f"{label}: {plan.host}: {plan.engine}: does not fit: {r}" for r in plan.reasons]
    if problems and not force:
        raise InventoryError(
            problems
            + [
                "(gpuctl plan shows the numbers; --force deploys anyway, at the risk of a "
                "multi-minute cold start that ends in an out-of-memory error)"
            ]
        )
    for problem in problems:
        err.print(f"warning: --force: {problem}")


@click.group(cls=GpuctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="gpuctl")
def main() -> None:
    """Turn GPU servers and laptops into verified LLM endpoints (vLLM, Ollama).

    INVENTORY is a name (inventories/NAME.py in the current folder) or a path to a .py file.
    """


@main.command()
@click.argument("inventory_ref", metavar="INVENTORY")
@limit_option
@force_option
@json_option
def check(inventory_ref: str, limit: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Validate an inventory and list its hosts and engines (no connection)."""
    inv = inventory.load(inventory_ref)
    hosts = inv.select(limit)
    capacity_gate(inv.label, hosts, force)
    if as_json:
        click.echo(
            json.dumps({"inventory": inv.label, "ok": True, "hosts": [host_summary(h) for h in hosts]}, indent=2)
        )
        return
    out = console()
    out.print(f"{inv.label}: {len(hosts)} host(s) OK")
    table = Table()
    for column in ("host", "connection", "GPUs", "engines", "exposure"):
        table.add_column(column)
    for host in hosts:
        table.add_row(
            host.name, host.connection_label(), gpu_label(host), "\n".join(engine_labels(host)), exposure_label(host)
        )
    out.print(table)


@main.command()
@click.argument("inventory_ref", metavar="INVENTORY")
@limit_option
@json_option
def plan(inventory_ref: str, limit: tuple[str, ...], as_json: bool) -> None:
    """Capacity per engine: weights, KV pool, cache tokens, max concurrency, and a verdict."""
    from gpuctl.capacity import plan_host

    inv = inventory.load(inventory_ref)
    plans = [p for host in inv.select(limit) for p in plan_host(host)]
    if as_json:
        click.echo(json.dumps({"inventory": inv.label, "engines": [p.as_dict() for p in plans]}, indent=2))
    else:
        table = Table(title=f"{inv.label}: capacity plan", title_justify="left")
        for column in ("host", "engine", "verdict", "numbers", "why"):
            table.add_column(column)
        for p in plans:
            numbers = "\n".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in p.numbers.items())
            table.add_row(
                p.host, p.engine, p.verdict, numbers, "\n".join(p.reasons + [f"warning: {w}" for w in p.warnings])
            )
        console().print(table)
    # "Does not fit" is an inventory that cannot work: exit 2 (bad input), as check and deploy refuse it.
    sys.exit(EXIT_BAD_INPUT if any(p.verdict == "does not fit" for p in plans) else EXIT_OK)


@main.command()
@click.argument("inventory_ref", metavar="INVENTORY")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Write files under OUT/HOST/…",
)
@limit_option
@json_option
def render(inventory_ref: str, out_dir: Path, limit: tuple[str, ...], as_json: bool) -> None:
    """Write the files deploy would put on each host under OUT/HOST/ (secrets as placeholders)."""
    inv = inventory.load(inventory_ref)
    hosts = inv.select(limit)
    report: dict[str, list[dict[str, str]]] = {}
    for host in hosts:
        files = render_host(host)
        try:
            write_tree(files, out_dir / host.name)
        except OSError as exc:
            raise GpuctlError(f"--out {out_dir}: cannot write: {exc.strerror}") from None
        report[host.name] = [{"path": str(f.path), "mode": f.mode_str, "owner": f.owner} for f in files]
    if as_json:
        click.echo(json.dumps({"inventory": inv.label, "out": str(out_dir), "hosts": report}, indent=2))
        return
    out = console()
    for host_name, files in report.items():
        out.print(f"{host_name}: {len(files)} file(s) under {out_dir / host_name}", style="bold")
        for f in files:
            out.print(f"  {f['mode']} {f['owner']:<6} {f['path']}")


@main.command(name="deploy")
@click.argument("inventory_ref", metavar="INVENTORY")
@limit_option
@click.option("--dry", is_flag=True, help="Connect and show what would change; change nothing.")
@click.option("--diff", is_flag=True, help="With --dry: show file diffs (secret values masked).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation before changing hosts.")
@click.option("--verbose", "-v", is_flag=True, help="Show pyinfra's own log lines.")
@force_option
@json_option
def deploy_command(
    inventory_ref: str,
    limit: tuple[str, ...],
    dry: bool,
    diff: bool,
    yes: bool,
    verbose: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Install drivers, Docker and engines so each host matches the inventory (idempotent)."""
    from gpuctl import fleet

    inv = inventory.load(inventory_ref)
    hosts = inv.select(limit)
    capacity_gate(inv.label, hosts, force)
    err = console(stderr=True)
    for host in hosts:
        for engine in host.public_engines():
            label = f"vllm:{engine.name}" if hasattr(engine, "served_model_name") else "ollama"
            err.print(
                f"RISK: {host.name}: {label} listens on {engine.bind}:{engine.port} without a gateway "
                "(unsafe_public_bind=True): anyone who reaches that port uses the engine",
                style="bold red",
            )

    def progress(host: str, message: str) -> None:
        if not as_json:
            err.print(f"[{host}] {message}")

    def confirm(plan: list[fleet.HostOutcome]) -> bool:
        if yes or not sys.stdin.isatty() or not any(o.changes for o in plan):
            return True
        print_outcomes(plan, title="planned changes")
        return click.confirm("Apply these changes?", default=False, err=True)

    err.print(f"deploy {inv.label}: {', '.join(h.name for h in hosts)}" + (" (dry run)" if dry else ""))
    from gpuctl.keystore import Keystore

    keystore = Keystore.for_inventory(inv.path, write=not dry)
    outcomes = fleet.deploy(
        hosts, inv.base_dir, dry=dry, diff=diff, progress=progress, confirm=confirm, verbose=verbose, keystore=keystore
    )
    if as_json:
        click.echo(json.dumps({"inventory": inv.label, "dry": dry, "hosts": [o.as_dict() for o in outcomes]}, indent=2))
    else:
        for outcome in outcomes:
            for text in outcome.diffs:
                click.echo(text)
        print_outcomes(outcomes, title="dry run: nothing was changed" if dry else "summary")
    if any(o.status == "failed" for o in outcomes):
        sys.exit(EXIT_FAILED)


def print_outcomes(outcomes: list[Any], title: str) -> None:
    """The per-host summary table: status, changes, and for a failure the operation and its error."""
    table = Table(title=title, title_justify="left")
    for column in ("host", "status", "details"):
        table.add_column(column)
    for o in outcomes:
        if o.status == "failed":
            details = f"{o.failed_operation}: {o.error}"
        else:
            details = "\n".join(o.changes) if o.changes else "-"
        table.add_row(o.name, o.status, details)
    console().print(table)


@main.command()
@click.argument("target")
@click.option("--inventory", "-i", "inventory_ref", metavar="INVENTORY", help="Inventory holding TARGET.")
@limit_option
@click.option("--engine", type=click.Choice(["vllm", "ollama"]), help="URL targets: which API to expect.")
@click.option("--model", help="URL targets: the model name to expect and generate with.")
@click.option("--api-key-env", metavar="VAR", help="URL targets: environment variable holding the API key.")
@click.option("--expect-version", help="URL targets: the engine version to expect.")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0, 7200),
    default=0,
    metavar="SECONDS",
    help="Wait up to SECONDS for a cold start, with progress; give up early if the unit failed.",
)
@click.option(
    "--gen-timeout",
    type=click.FloatRange(1, 600),
    default=30,
    metavar="SECONDS",
    help="No token within SECONDS means 'engine not generating'.",
)
@json_option
def verify(
    target: str,
    inventory_ref: str | None,
    limit: tuple[str, ...],
    engine: str | None,
    model: str | None,
    api_key_env: str | None,
    expect_version: str | None,
    wait_s: float,
    gen_timeout: float,
    as_json: bool,
) -> None:
    """Check that endpoints really work: TARGET is a host name, an inventory, or a URL."""
    from gpuctl.verify import runner
    from gpuctl.verify.checks import unreachable

    options = runner.Options(wait_s=wait_s, generation_timeout_s=gen_timeout)
    err = console(stderr=True)

    def progress(host: str, message: str) -> None:
        err.print(f"[{host}] {message}")  # stderr, so --json on stdout stays clean

    if target.startswith(("http://", "https://")):
        reports = [verify_url(target, engine, model, api_key_env, expect_version, options)]
    else:
        from gpuctl.keystore import Keystore

        inv, hosts = resolve_verify_target(target, inventory_ref, limit)
        options.base_dir = inv.base_dir
        options.keystore = Keystore.for_inventory(inv.path, write=False)
        reports = runner.verify_hosts(hosts, options, progress)
    if as_json:
        click.echo(json.dumps({"ok": all(r.ok for r in reports), "engines": [r.as_dict() for r in reports]}, indent=2))
    else:
        print_reports(reports)
        if not target.startswith(("http://", "https://")) and any(unreachable(c) for r in reports for c in r.checks):
            limit_hint = f" --limit {target}" if target in inv.hosts else ""
            err.print(f"hint: nothing answered; to deploy it: gpuctl deploy {inv.label}{limit_hint}")
    sys.exit(EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED)


def resolve_verify_target(target: str, inventory_ref: str | None, limit: tuple[str, ...]) -> tuple[Any, list[HostSpec]]:
    """An inventory (all or --limit hosts), or a host name looked up in -i INVENTORY or inventories/*.py."""
    if inventory_ref:
        inv = inventory.load(inventory_ref)
        return inv, inv.select([target])
    try:
        inv = inventory.load(target)
        return inv, inv.select(limit)
    except GpuctlError as exc:
        if "not found" not in str(exc) and "no such file" not in str(exc):
            raise
    folder = Path.cwd() / "inventories"
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        try:
            inv = inventory.load(str(path))
        except GpuctlError:
            continue
        if target in inv.hosts:
            return inv, [inv.hosts[target]]
    raise GpuctlError(f"{target}: not a URL, an inventory, or a host in inventories/*.py (use -i INVENTORY)")


def verify_url(
    url: str, engine: str | None, model: str | None, api_key_env: str | None, expect_version: str | None, options: Any
) -> Any:
    from gpuctl.verify import ollama_api, openai_api, runner

    if engine is None:
        raise GpuctlError("a URL target needs --engine vllm or --engine ollama")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise GpuctlError(f"--api-key-env {api_key_env}: environment variable is not set")
    report = runner.EngineReport(url, engine, url)
    if engine == "vllm":
        if not model:
            raise GpuctlError("--engine vllm needs --model (the served model name)")
        expect = openai_api.VllmExpectations(
            base_url=url,
            model=model,
            api_key=api_key,
            version=expect_version,
            key_required=api_key is not None,
            generation_timeout_s=options.generation_timeout_s,
        )
        report.checks = openai_api.VllmChecker(expect).run()
    else:
        report.checks = ollama_api.OllamaChecker(
            ollama_api.OllamaExpectations(
                base_url=url,
                version=expect_version,
                models=[model] if model else [],
                generation_timeout_s=max(options.generation_timeout_s, 60),
            )
        ).run()
    return report


def print_reports(reports: list[Any]) -> None:
    out = console()
    for report in reports:
        table = Table(
            title=f"{report.host} {report.engine}" + (f" ({report.url})" if report.url else ""), title_justify="left"
        )
        for column in ("check", "result", "reason", "numbers"):
            table.add_column(column)
        for check in report.checks:
            numbers = ", ".join(f"{k}={v}" for k, v in check.numbers.items())
            table.add_row(check.name, "pass" if check.ok else "FAIL", check.reason, numbers)
        out.print(table)
        for check in report.checks:
            if not check.ok and check.details:
                out.print(f"  {check.name}: last lines:")
                for line in check.details:
                    out.print(f"    {line}")


@main.group()
def keys() -> None:
    """The gateway keys gpuctl generates (kept 0600 in INVENTORY_DIR/.gpuctl/NAME/)."""


def gateway_hosts(inv: Any, limit: tuple[str, ...]) -> list[HostSpec]:
    hosts = [h for h in inv.select(limit) if h.gateway is not None]
    if not hosts:
        raise GpuctlError(f"{inv.label}: no selected host has a gateway")
    return hosts


@keys.command(name="list")
@click.argument("inventory_ref", metavar="INVENTORY")
@limit_option
@json_option
def keys_list(inventory_ref: str, limit: tuple[str, ...], as_json: bool) -> None:
    """Where each gateway's key and CA are (never the values)."""
    from gpuctl.keystore import Keystore

    inv = inventory.load(inventory_ref)
    store = Keystore.for_inventory(inv.path, write=False)
    rows = []
    for host in gateway_hosts(inv, limit):
        assert host.gateway is not None
        generated = host.gateway.api_key is None
        key = str(store.path(store.api_key_name(host.name))) if generated else host.gateway.api_key.describe()  # type: ignore[union-attr]
        rows.append(
            {
                "host": host.name,
                "url": host.gateway_url(host.gateway_default_engine()) + "/v1",  # type: ignore[arg-type]
                "key": key,
                "key_exists": store.api_key(host.name) is not None if generated else None,
                "ca": str(store.ca_path) if host.gateway.tls == "private-ca" else host.gateway.ca_file or "system CAs",
            }
        )
    if as_json:
        click.echo(json.dumps({"inventory": inv.label, "gateways": rows}, indent=2))
        return
    table = Table(title=f"gateway keys of {inv.label}", title_justify="left")
    for column in ("host", "base URL", "key", "trust"):
        table.add_column(column)
    for row in rows:
        missing = " (not yet created: gpuctl deploy makes it)" if row["key_exists"] is False else ""
        table.add_row(row["host"], row["url"], row["key"] + missing, row["ca"])
    console().print(table)


@keys.command(name="rotate")
@click.argument("inventory_ref", metavar="INVENTORY")
@limit_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def keys_rotate(inventory_ref: str, limit: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Replace generated gateway keys: deploy the new key (nginx reloads, nothing restarts), then keep it.

    The local key file changes only for hosts whose deploy succeeded, so a failed host keeps working
    with its old key on both sides.
    """
    from gpuctl import fleet
    from gpuctl.keystore import Keystore

    inv = inventory.load(inventory_ref)
    hosts = gateway_hosts(inv, limit)
    pinned = [h.name for h in hosts if h.gateway is not None and h.gateway.api_key is not None]
    if pinned:
        raise GpuctlError(
            f"{inv.label}: {', '.join(pinned)}: the gateway key comes from the inventory's secret "
            "reference; change it there and run gpuctl deploy"
        )
    staged = Keystore.for_inventory(inv.path, write=False)
    missing = [h.name for h in hosts if staged.api_key(h.name) is None]
    if missing:
        raise GpuctlError(f"{inv.label}: {', '.join(missing)}: no key to rotate yet (gpuctl deploy creates it)")
    if (
        not yes
        and sys.stdin.isatty()
        and not click.confirm(
            f"Rotate the gateway key of {', '.join(h.name for h in hosts)}? Clients need the new key.", err=True
        )
    ):
        sys.exit(EXIT_FAILED)
    new_keys = {h.name: staged.rotate_api_key(h.name) for h in hosts}
    err = console(stderr=True)
    outcomes = fleet.deploy(
        hosts,
        inv.base_dir,
        keystore=staged,
        progress=None if as_json else lambda host, msg: err.print(f"[{host}] {msg}"),
    )
    store = Keystore.for_inventory(inv.path)
    rotated = []
    for outcome in outcomes:
        if outcome.status != "failed":
            store.store(store.api_key_name(outcome.name), new_keys[outcome.name] + "\n", 0o600)
            rotated.append(outcome.name)
    if as_json:
        click.echo(
            json.dumps({"inventory": inv.label, "rotated": rotated, "hosts": [o.as_dict() for o in outcomes]}, indent=2)
        )
    else:
        print_outcomes(outcomes, title="key rotation")
        for name in rotated:
            err.print(f"{name}: new key in {store.path(store.api_key_name(name))}")
        for outcome in outcomes:
            if outcome.status == "failed":
                err.print(
                    f"{outcome.name}: not rotated; if its gateway already reloaded, it expects a key that was "
                    "not kept: gpuctl deploy puts the kept key back"
                )
    if len(rotated) != len(hosts):
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("inventory_ref", metavar="INVENTORY")
@limit_option
@json_option
def status(inventory_ref: str, limit: tuple[str, ...], as_json: bool) -> None:
    """A fleet table: unit, health, version, model, requests, KV cache, GPU memory (no generation)."""
    from gpuctl.verify.status import fleet_status

    inv = inventory.load(inventory_ref)
    rows = fleet_status(inv.select(limit))
    if as_json:
        click.echo(json.dumps({"inventory": inv.label, "engines": [r.as_dict() for r in rows]}, indent=2))
    else:
        table = Table()
        for column in (
            "host",
            "engine",
            "unit",
            "health",
            "version",
            "model",
            "running",
            "waiting",
            "KV cache",
            "GPU memory",
        ):
            table.add_column(column)
        for r in rows:
            if r.error and r.engine == "-":
                table.add_row(r.host, "-", r.error, "", "", "", "", "", "", "")
                continue
            kv = f"{r.kv_cache_usage:.1%}" if r.kv_cache_usage is not None else "-"
            table.add_row(
                r.host,
                r.engine,
                r.unit,
                r.health,
                r.version,
                r.model,
                _num(r.running),
                _num(r.waiting),
                kv,
                r.gpu_memory,
            )
        console().print(table)
    sys.exit(EXIT_FAILED if any(r.error for r in rows) else EXIT_OK)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# -- formatting helpers --------------------------------------------------------------------------


def gpu_label(host: HostSpec) -> str:
    if host.gpus is None:
        return "none (CPU)"
    driver = f", driver {host.driver.branch}" if host.driver else ""
    return f"{host.gpus.count}× {host.gpus.model} ({host.gpus.memory_gib:g} GiB){driver}"


def engine_labels(host: HostSpec) -> list[str]:
    labels = [
        f"vllm:{e.name} {e.served_name} on {e.bind}:{e.port} (tp {e.tensor_parallel_size}, kv {e.kv_cache_dtype})"
        for e in host.vllm
    ]
    if host.ollama:
        o = host.ollama
        labels.append(f"ollama {o.version} on {o.bind}:{o.port} ({', '.join(o.models) or 'no models'})")
    return labels or ["none"]


def exposure_label(host: HostSpec) -> str:
    """How other machines reach the host's engines: its gateway URL, or loopback only (SSH tunnel)."""
    lines = []
    default = host.gateway_default_engine()
    if default is not None and host.gateway is not None:
        lines.append(f"{host.gateway_url(default)}/v1 ({host.gateway.tls})")
    elif host.engines():
        lines.append("loopback only (gpuctl verify uses an SSH tunnel)")
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


from gpuctl.bench.command import bench as bench_command  # noqa: E402 (registered last: it imports nothing heavy)

main.add_command(bench_command)

if __name__ == "__main__":
    main()
