"""The gpuctl command line: click shells that parse, call the library, print, and set the exit code.

Exit codes: 0 all good, 1 a host failed, 2 bad input (one clear line, never a traceback). Every
workflow lives in its own module (fleet, verify.runner, keys, capacity, render); no module imports this one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import click

from gpuctl import __version__, inventory, views
from gpuctl.bench.command import bench as bench_command
from gpuctl.errors import GpuctlError, InventoryError
from gpuctl.options import (
    api_key_env_option,
    force_option,
    inventory_argument,
    inventory_option,
    json_option,
    limit_option,
)
from gpuctl.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, console, emit_json, finish, progress_printer
from gpuctl.parity import DEFAULT_REQUIRED, PROBES
from gpuctl.spec import HostSpec


class GpuctlGroup(click.Group):
    """Turns every GpuctlError into `error: …` lines on stderr and its exit code (2: bad input)."""

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
            sys.exit(EXIT_INTERRUPTED)


def capacity_gate(label: str, hosts: list[HostSpec], force: bool) -> None:
    """Refuse (exit 2) an engine the planner says cannot start, unless --force; print the warnings."""
    from gpuctl.capacity import gate

    err = console(stderr=True)
    for warning in gate(label, hosts, force):
        err.print(f"warning: {warning}")


@click.group(cls=GpuctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="gpuctl")
def main() -> None:
    """Turn GPU servers and laptops into verified LLM endpoints (vLLM, Ollama).

    INVENTORY is a name (inventories/NAME.py in the current folder) or a path to a .py file.
    """


@main.command()
@inventory_argument
@limit_option
@force_option
@json_option
def check(inventory_ref: str, limit: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Validate an inventory and list its hosts and engines (no connection)."""
    inv = inventory.load(inventory_ref)
    hosts = inv.select(limit)
    capacity_gate(inv.label, hosts, force)
    views.print_risks(hosts)
    if as_json:
        emit_json({"inventory": inv.label, "ok": True, "hosts": [views.host_summary(h) for h in hosts]})
    else:
        views.print_hosts(inv.label, hosts)


@main.command()
@inventory_argument
@limit_option
@json_option
def plan(inventory_ref: str, limit: tuple[str, ...], as_json: bool) -> None:
    """Capacity per engine: weights, KV pool, cache tokens, max concurrency, and a verdict."""
    from gpuctl.capacity import plan_host

    inv = inventory.load(inventory_ref)
    plans = [p for host in inv.select(limit) for p in plan_host(host)]
    if as_json:
        emit_json({"inventory": inv.label, "engines": [p.as_dict() for p in plans]})
    else:
        views.print_plans(inv.label, plans)
    # "Does not fit" is an inventory that cannot work: exit 2 (bad input), as check and deploy refuse it.
    if any(p.verdict == "does not fit" for p in plans):
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@inventory_argument
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Write files under OUT/HOST/…",
)
@limit_option
@click.option(
    "--target",
    type=click.Choice(["hosts", "kubernetes"]),
    default="hosts",
    show_default=True,
    help="hosts: what deploy installs; kubernetes: each vLLM engine as manifests (OUT/vllm-HOST-ENGINE.yaml), "
    "and OUT/production-stack-values.yaml for vLLM's production-stack Helm chart.",
)
@json_option
def render(inventory_ref: str, out_dir: Path, limit: tuple[str, ...], target: str, as_json: bool) -> None:
    """Write the files deploy would put on each host under OUT/HOST/ (secrets as placeholders), or with
    --target kubernetes the manifests of each vLLM engine (secrets by reference)."""
    from gpuctl.render import write_hosts

    inv = inventory.load(inventory_ref)
    if target == "kubernetes":
        from gpuctl import kubernetes, production_stack

        written = kubernetes.write(inv.select(limit), out_dir)
        chart_values, left_out = production_stack.write(inv.select(limit), out_dir)
        if as_json:
            extra = {"production_stack_values": str(chart_values), "left_out": left_out}
            emit_json({"inventory": inv.label, "out": str(out_dir), "manifests": written, **extra})
        else:
            for item in written:
                click.echo(f"{item['host']} {item['engine']}: {item['path']}")
            click.echo(f"production-stack chart values: {chart_values}")
            for why in left_out:
                click.echo(f"  left out: {why}")
        return
    report = write_hosts(inv.select(limit), out_dir)
    if as_json:
        emit_json({"inventory": inv.label, "out": str(out_dir), "hosts": report})
    else:
        views.print_rendered(out_dir, report)


@main.command(name="deploy")
@inventory_argument
@limit_option
@click.option("--dry", is_flag=True, help="Connect and show what would change; change nothing.")
@click.option("--diff", is_flag=True, help="With --dry: show file diffs (secret values masked).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation before changing hosts.")
@click.option("--verbose", "-v", is_flag=True, help="Show pyinfra's own log lines.")
@click.option(
    "--rolling",
    "rolling",
    metavar="N|N%",
    help="Change N hosts (or N% of them) at a time; verify each batch, roll a failed host back to the release "
    "it ran before and stop there.",
)
@click.option(
    "--max-failed",
    type=click.IntRange(0),
    metavar="N",
    help="With --rolling (or over a group's Rollout setting): go on past N failed hosts, each rolled back.",
)
@click.option("--verify", "verify_after", is_flag=True, help="Verify every host after the deploy; roll back failures.")
@click.option(
    "--gen-timeout",
    type=click.FloatRange(1, 600),
    default=30,
    metavar="SECONDS",
    help="With --rolling / --verify: no token within SECONDS means 'engine not generating'.",
)
@force_option
@json_option
def deploy_command(
    inventory_ref: str,
    limit: tuple[str, ...],
    dry: bool,
    diff: bool,
    yes: bool,
    verbose: bool,
    rolling: str | None,
    max_failed: int | None,
    verify_after: bool,
    gen_timeout: float,
    force: bool,
    as_json: bool,
) -> None:
    """Install drivers, Docker and engines so each host matches the inventory (idempotent).

    Groups with a Rollout(...) setting, --rolling and --verify change hosts in verified batches and roll a
    failed host back to the release it ran before (see the README's "Upgrading")."""
    from gpuctl import rollout

    inv = inventory.load(inventory_ref)
    if inventory_ref.startswith(inventory.EXAMPLE_PREFIX) and not dry:
        raise InventoryError(
            [
                f"{inventory_ref} is an example shipped with gpuctl (documentation addresses): copy {inv.path} "
                "into inventories/ (or $GPUCTL_INVENTORIES), edit it, and deploy that"
            ]
        )
    hosts = inv.select(limit)
    phases = rollout.plan(hosts, rolling, max_failed, verify_after)
    capacity_gate(inv.label, hosts, force)
    views.print_risks(hosts)
    if phases is not None and not dry:
        deploy_in_phases(inv, phases, gen_timeout, yes=yes, as_json=as_json)
    else:
        deploy_plain(inv, hosts, phases, dry=dry, diff=diff, yes=yes, verbose=verbose, as_json=as_json)


def deploy_plain(
    inv: inventory.Inventory,
    hosts: list[HostSpec],
    phases: list[Any] | None,
    *,
    dry: bool,
    diff: bool,
    yes: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """A deploy of every host at once (or a dry run, showing a rollout's batches), then its summary."""
    from gpuctl import fleet
    from gpuctl.keystore import Keystore

    def confirm(planned: list[fleet.HostOutcome]) -> bool:
        if not any(o.changes for o in planned):
            return True
        views.print_outcomes(planned, title="planned changes")
        return click.confirm("Apply these changes?", default=False, err=True)

    asking = not yes and sys.stdin.isatty()  # only then is every change evaluated before any runs

    console(stderr=True).print(
        f"deploy {inv.label}: {', '.join(h.name for h in hosts)}" + (" (dry run)" if dry else "")
    )
    planned_batches = [[h.name for h in batch] for phase in phases or [] for batch in phase.batches()]
    if phases:
        views.print_phases(phases)
    keystore = Keystore.for_inventory(inv.path, write=not dry)
    outcomes = fleet.deploy(
        hosts,
        inv.base_dir,
        dry=dry,
        diff=diff,
        progress=progress_printer(quiet=as_json),
        confirm=confirm if asking else None,
        verbose=verbose,
        keystore=keystore,
    )
    if as_json:
        batches = planned_batches or [[h.name for h in hosts]]
        emit_json({"inventory": inv.label, "dry": dry, "batches": batches, "hosts": [o.as_dict() for o in outcomes]})
    else:
        for text in (text for outcome in outcomes for text in outcome.diffs):
            click.echo(text)
        views.print_outcomes(outcomes, title="dry run: nothing was changed" if dry else "summary")
    finish(all(o.status != "failed" for o in outcomes))


def deploy_in_phases(
    inv: inventory.Inventory, phases: list[Any], gen_timeout: float, *, yes: bool, as_json: bool
) -> None:
    """A deploy in verified batches (gpuctl.rollout), then its summary."""
    from gpuctl import rollout
    from gpuctl.keystore import Keystore
    from gpuctl.verify import runner

    console(stderr=True).print(f"deploy {inv.label}:")
    views.print_phases(phases)
    if not yes and sys.stdin.isatty() and not click.confirm("Go on?", default=False, err=True):
        finish(False)
    keystore = Keystore.for_inventory(inv.path, write=True)
    options = runner.Options(
        wait_s=ROLLOUT_WAIT_S, generation_timeout_s=gen_timeout, base_dir=inv.base_dir, keystore=keystore
    )
    result = rollout.roll_out(
        phases, inv.base_dir, options, keystore=keystore, progress=progress_printer(quiet=as_json), hosts=inv.hosts
    )
    if as_json:
        emit_json({"inventory": inv.label, **result.as_dict()})
    else:
        views.print_rollout(result)
    finish(result.ok)


ROLLOUT_WAIT_S = 300
"""How long a batch's verify waits for an engine's cold start (the unit already waited for its healthcheck)."""


@main.command()
@click.argument("target")
@inventory_option
@limit_option
@click.option("--engine", type=click.Choice(["vllm", "ollama"]), help="URL targets: which API to expect.")
@click.option("--model", help="URL targets: the model name to expect and generate with.")
@api_key_env_option
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
    """Check that endpoints really work: TARGET is a host name, an inventory, a fleet endpoint, or a URL."""
    from gpuctl.access import key_from_env
    from gpuctl.keystore import Keystore
    from gpuctl.verify import runner

    options = runner.Options(wait_s=wait_s, generation_timeout_s=gen_timeout)
    if target.startswith(("http://", "https://")):
        reports = [runner.verify_url(target, engine, model, key_from_env(api_key_env), expect_version, options)]
        hint = None
    elif (found := inventory.find_endpoint(target, inventory_ref)) is not None:
        from gpuctl.verify.endpoint import verify_endpoint

        inv, endpoint = found
        options.base_dir, options.keystore = inv.base_dir, Keystore.for_inventory(inv.path, write=False)
        reports = verify_endpoint(inv, endpoint, options, progress_printer())
        hint = None
    else:
        from gpuctl.verify.endpoint import endpoint_report

        inv, hosts = inventory.find_hosts(target, inventory_ref, limit)
        options.base_dir, options.keystore = inv.base_dir, Keystore.for_inventory(inv.path, write=False)
        reports = runner.verify_hosts(hosts, options, progress_printer())
        whole = not limit and inventory_ref is None and target not in inv.hosts  # the inventory, every host
        reports += [endpoint_report(inv, e, options) for e in inv.endpoints.values() if whole]
        hint = runner.deploy_hint(target, inv, reports)
    if as_json:
        emit_json({"ok": all(r.ok for r in reports), "engines": [r.as_dict() for r in reports]})
    else:
        views.print_reports(reports)
        if hint:
            console(stderr=True).print(f"hint: {hint}")
    finish(all(r.ok for r in reports))


@main.command(name="env")
@click.argument("target")
@inventory_option
@click.option("--model", help="The engine serving this model (the first one, in inventory order).")
@click.option("--engine", "engine_name", metavar="ENGINE", help="The engine by name (vllm:NAME, NAME or ollama).")
@click.option("--format", "fmt", type=click.Choice(["shell", "dotenv", "json"]), default="shell", show_default=True)
@click.option("--reveal", is_flag=True, help="Write the API key's value instead of where it is.")
def env_command(
    target: str, inventory_ref: str | None, model: str | None, engine_name: str | None, fmt: str, reveal: bool
) -> None:
    """What an application needs for TARGET (a host, an inventory or a fleet endpoint): OPENAI_BASE_URL,
    OPENAI_API_KEY (by reference), SSL_CERT_FILE, OPENAI_MODEL. `eval "$(gpuctl env dev-laptop)"` switches an
    app to the laptop."""
    from gpuctl import client_env
    from gpuctl.keystore import Keystore

    found = inventory.find_endpoint(target, inventory_ref)
    if found is not None:
        inv, endpoint = found
        keystore = Keystore.for_inventory(inv.path, write=False)
        env = client_env.endpoint_env(inv.hosts[endpoint.on], endpoint, keystore, inv.base_dir, model)
    else:
        inv, hosts = inventory.find_hosts(target, inventory_ref)
        host, engine, note = client_env.pick(hosts, target, model, engine_name)
        keystore = Keystore.for_inventory(inv.path, write=False)
        env = client_env.app_env(host, engine, keystore, inv.base_dir, note, model)
    click.echo(client_env.render(env, fmt, reveal), nl=False)  # type: ignore[arg-type]


@main.command(
    help="Run the same OpenAI-client requests against FIRST and SECOND (hosts, inventories or URLs) and show "
    "what each does with every parameter: works, ignored or error. Names: " + ", ".join(PROBES) + "."
)
@click.argument("first")
@click.argument("second")
@inventory_option
@click.option("--model", help="The model to use on both (default: each target's own).")
@api_key_env_option
@click.option(
    "--require",
    default=",".join(DEFAULT_REQUIRED),
    show_default=True,
    metavar="NAMES",
    help="Comma list of what the application uses; exit 1 unless each works on both targets.",
)
@click.option("--only", metavar="NAMES", help="Probe only these (comma list).")
@json_option
def parity(
    first: str,
    second: str,
    inventory_ref: str | None,
    model: str | None,
    api_key_env: str | None,
    require: str,
    only: str | None,
    as_json: bool,
) -> None:
    from gpuctl import parity as parity_checks
    from gpuctl.access import key_from_env

    names = split_names(only, "--only") if only else list(PROBES)
    required = split_names(require, "--require")
    key = key_from_env(api_key_env)
    targets = [parity_checks.resolve(t, inventory_ref, model, key) for t in (first, second)]
    matrix = parity_checks.compare(targets, names)
    failing = parity_checks.failing(matrix, required)
    if as_json:
        rows = {n: [{"status": o.status, "detail": o.detail} for o in outs] for n, outs in matrix.items()}
        emit_json({"targets": [t.label for t in targets], "matrix": rows, "failing": failing, "ok": not failing})
    else:
        views.print_parity([t.label for t in targets], matrix, failing)
    finish(not failing)


def split_names(value: str, option: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise GpuctlError(f"{option}: unknown {', '.join(unknown)} (known: {', '.join(PROBES)})")
    return names


@main.group()
def keys() -> None:
    """The gateway keys gpuctl generates (kept 0600 in INVENTORY_DIR/.gpuctl/NAME/)."""


@keys.command(name="list")
@inventory_argument
@limit_option
@json_option
def keys_list(inventory_ref: str, limit: tuple[str, ...], as_json: bool) -> None:
    """Where each gateway's key and CA are (never the values)."""
    from gpuctl import keys as gateway_keys

    inv = inventory.load(inventory_ref)
    rows = gateway_keys.key_rows(inv, gateway_keys.gateway_hosts(inv, limit))
    if as_json:
        emit_json({"inventory": inv.label, "gateways": rows})
    else:
        views.print_keys(inv.label, rows)


@keys.command(name="rotate")
@inventory_argument
@limit_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def keys_rotate(inventory_ref: str, limit: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Replace generated gateway keys: deploy the new key (nginx reloads, nothing restarts), then keep it.

    The local key file changes only for hosts whose deploy succeeded, so a failed host keeps working
    with its old key on both sides.
    """
    from gpuctl import keys as gateway_keys

    inv = inventory.load(inventory_ref)
    hosts = gateway_keys.gateway_hosts(inv, limit)
    gateway_keys.check_rotatable(inv, hosts)
    names = ", ".join(h.name for h in hosts)
    question = f"Rotate the gateway key of {names}? Clients need the new key."
    if not yes and sys.stdin.isatty() and not click.confirm(question, err=True):
        sys.exit(EXIT_FAILED)
    rotation = gateway_keys.rotate(inv, hosts, progress_printer(quiet=as_json))
    if as_json:
        emit_json(
            {"inventory": inv.label, "rotated": rotation.rotated, "hosts": [o.as_dict() for o in rotation.outcomes]}
        )
    else:
        views.print_rotation(rotation)
    finish(rotation.ok)


@main.command()
@inventory_argument
@limit_option
@click.option(
    "--interval", type=click.FloatRange(0.5, 3600), default=2.0, metavar="SECONDS", help="Refresh every SECONDS."
)
@click.option("--once", is_flag=True, help="Take two samples INTERVAL apart (rates need two), print them, exit.")
@json_option
def top(inventory_ref: str, limit: tuple[str, ...], interval: float, once: bool, as_json: bool) -> None:
    """A live view of every engine: health, requests running/waiting, KV cache, tokens/s, TTFT p50/p95,
    GPU memory (Ctrl-C ends it)."""
    from rich.live import Live

    from gpuctl.top import refresh, watching

    inv = inventory.load(inventory_ref)
    if as_json and not once:
        raise InventoryError(["--json needs --once (a live screen is not JSON)"])
    with watching(inv.select(limit)) as watches:
        refresh(watches)  # the first sample: rates need a second one
        if once:
            time.sleep(interval)
            rows = refresh(watches)
            if as_json:
                emit_json({"inventory": inv.label, "interval_s": interval, "engines": [r.as_dict() for r in rows]})
            else:
                console().print(views.top_table(rows, f"gpuctl top {inv.label}"))
            return
        with Live(console=console(), auto_refresh=False, screen=False) as live, contextlib.suppress(KeyboardInterrupt):
            for _ in range(TOP_MAX_REFRESHES):
                time.sleep(interval)
                title = f"gpuctl top {inv.label}  (every {interval:g} s, {time.strftime('%H:%M:%S')}; Ctrl-C ends)"
                live.update(views.top_table(refresh(watches), title), refresh=True)


@main.command()
@click.argument("address", required=False)
@click.option("--local", is_flag=True, help="This machine (no SSH).")
@click.option("--user", "ssh_user", default="root", show_default=True, help="SSH user.")
@click.option("--port", "ssh_port", type=click.IntRange(1, 65535), default=22, show_default=True, help="SSH port.")
@click.option("--key", "ssh_key", type=click.Path(dir_okay=False), help="SSH private key.")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file to check the host against.")
@click.option("--name", help="The host's name in the inventory (default: from the address).")
@click.option(
    "--users", type=click.IntRange(1, 100_000), default=1, show_default=True, help="Concurrent users to plan for."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the inventory entry to FILE (e.g. inventories/NAME.py; an existing file is kept).",
)
@json_option
def discover(
    address: str | None,
    local: bool,
    ssh_user: str,
    ssh_port: int,
    ssh_key: str | None,
    known_hosts: str | None,
    name: str | None,
    users: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """Read a bare host (read-only: distribution, GPUs, driver, CUDA, Docker, disk, RAM, CPU) and print a
    ready inventory entry for it, with the engine and model the planner fits there."""
    from gpuctl import discover as found_out
    from gpuctl.spec import HostSpec

    if local == (address is not None):
        raise InventoryError(["give an ADDRESS to reach over SSH, or --local for this machine"])
    if out is not None and out.exists():
        raise InventoryError([f"--out {out}: exists already (gpuctl does not overwrite an inventory)"])
    label = name or (found_out.host_name(address) if address else "local")
    reach: dict[str, Any] = {"local": True} if local else {"address": address, "ssh_user": ssh_user}
    if not local:
        reach |= {"ssh_port": ssh_port, "ssh_key": ssh_key, "ssh_known_hosts_file": known_hosts}
    try:
        target = HostSpec(name=label, **reach)
    except ValueError as exc:
        raise InventoryError([f"{address}: {str(exc).splitlines()[-1].strip()}"]) from None
    found = found_out.run_facts(target)
    proposal = found_out.propose(label, address, found, users, local=local)
    if out is not None:
        try:
            out.write_text(proposal.as_dict()["entry"])
        except OSError as exc:
            raise GpuctlError(f"--out {out}: cannot write: {exc.strerror}") from None
    if as_json:
        emit_json({"host": label, "found": found.as_dict(), "proposal": proposal.as_dict()})
    else:
        views.print_discovered(label, found, proposal)


@main.command(name="dashboard")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write it to FILE (default: stdout).")
def dashboard_command(out: Path | None) -> None:
    """The Grafana dashboard for the Prometheus that Monitoring(...) installs (JSON, to import in Grafana):
    engines up, requests, KV cache, tokens/s, TTFT and latency, preemptions, prefix cache, GPUs, hosts."""
    import json

    from gpuctl.dashboard import dashboard

    text = json.dumps(dashboard(), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise GpuctlError(f"--out {out}: cannot write: {exc.strerror}") from None
    console(stderr=True).print(f"wrote {out}: import it in Grafana (Dashboards > New > Import)")


TOP_MAX_REFRESHES = 1_000_000
"""A bound on `gpuctl top`'s loop (at 2 s, about 23 days)."""


@main.command()
@inventory_argument
@limit_option
@click.option(
    "--no-probe",
    is_flag=True,
    help="Send nothing that generates (by default each healthy vLLM engine is asked for one token: "
    "/health answers 200 while a hung engine gives none).",
)
@json_option
def status(inventory_ref: str, limit: tuple[str, ...], no_probe: bool, as_json: bool) -> None:
    """A fleet table: unit, health, version, model, requests, KV cache, GPU memory."""
    from gpuctl.verify.status import Probe, fleet_status

    inv = inventory.load(inventory_ref)
    rows = fleet_status(inv.select(limit), Probe(inv.base_dir, seconds=None) if no_probe else Probe(inv.base_dir))
    if as_json:
        emit_json({"inventory": inv.label, "engines": [r.as_dict() for r in rows]})
    else:
        views.print_status(rows)
    finish(not any(r.error or r.generating is False for r in rows))


@main.command()
@inventory_argument
@limit_option
@json_option
def history(inventory_ref: str, limit: tuple[str, ...], as_json: bool) -> None:
    """The releases recorded on each host for each engine: time, image or Ollama version, verify outcome, the
    live one."""
    from gpuctl.rollback import fleet_history

    inv = inventory.load(inventory_ref)
    rows = fleet_history(inv.select(limit))
    if as_json:
        emit_json({"inventory": inv.label, "engines": [r.as_dict() for r in rows]})
    else:
        views.print_history(rows)
    finish(not any(r.error for r in rows))


@main.command()
@inventory_argument
@limit_option
@click.option(
    "--to",
    "to",
    metavar="RELEASE",
    help="The release to restore (default: the newest verified one older than the live one; see gpuctl history).",
)
@click.option(
    "--engine",
    "engines",
    multiple=True,
    metavar="LABEL",
    help="Only this engine (vllm:NAME or ollama, as gpuctl history names them); repeat for more.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def rollback(
    inventory_ref: str, limit: tuple[str, ...], to: str | None, engines: tuple[str, ...], yes: bool, as_json: bool
) -> None:
    """Restore a recorded release of each engine (vLLM: its files and image; Ollama: its binary, unit and
    drop-in), restart it and verify it.

    The inventory is not changed: the next `gpuctl deploy` applies it again."""
    from gpuctl.keystore import Keystore
    from gpuctl.rollback import named_or_previous
    from gpuctl.rollback import rollback as roll_back
    from gpuctl.verify import runner

    inv = inventory.load(inventory_ref)
    hosts = inv.select(limit)
    known = {e.label for h in hosts for e in h.engines()}
    unknown = [label for label in engines if label not in known]
    if unknown:
        raise InventoryError(
            [
                f"--engine {unknown[0]}: no such engine on {', '.join(h.name for h in hosts)} "
                f"(engines: {', '.join(sorted(known)) or 'none'})"
            ]
        )
    which = ", ".join(engines) if engines else "the engines"
    if not yes and sys.stdin.isatty():
        click.confirm(f"Roll back {which} of {', '.join(h.name for h in hosts)}?", abort=True, err=True)
    keystore = Keystore.for_inventory(inv.path, write=False)
    options = runner.Options(wait_s=ROLLOUT_WAIT_S, base_dir=inv.base_dir, keystore=keystore)
    outcomes = roll_back(hosts, named_or_previous(to), options, only=set(engines) or None)
    if as_json:
        emit_json(
            {"inventory": inv.label, "ok": all(o.ok for o in outcomes), "engines": [o.as_dict() for o in outcomes]}
        )
    else:
        views.print_rollback(outcomes)
    finish(all(o.ok for o in outcomes))


main.add_command(bench_command)

if __name__ == "__main__":
    main()
