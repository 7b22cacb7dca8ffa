"""The pyinfra driver: build pyinfra's state from host specs, run gpuctl's deploys, report per host.

Everything that can fail without a host (secrets, rendering) happens before any connection. Hosts
run in parallel; one host failing (unreachable, an operation erroring) never stops the others.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.files import FileContents, Sha256File

from gpuctl import access, monitoring
from gpuctl import pyinfra_adapter as pyinfra
from gpuctl.access import Connection
from gpuctl.errors import GpuctlError
from gpuctl.keystore import Keystore
from gpuctl.render import Draining, HostFiles, key_pattern, render_host
from gpuctl.spec import HostSpec, SecretRef

Status = Literal["changed", "unchanged", "failed", "would change"]
Progress = Callable[[str, str], None]
"""progress(host name, message): called as operations finish."""


@dataclass
class HostOutcome:
    """What a deploy did (or would do) to one host."""

    name: str
    status: Status = "unchanged"
    changes: list[str] = field(default_factory=list)
    failed_operation: str | None = None
    error: str | None = None
    diffs: list[str] = field(default_factory=list)
    commands: dict[str, list[str]] = field(default_factory=dict)
    """Dry run only: the commands each planned operation would run (secret values masked)."""

    def fail(self, operation: str, error: str) -> None:
        self.status, self.failed_operation, self.error = "failed", operation, error

    def collect(self, results: list[pyinfra.OpResult], mask: Callable[[str], str], stopped: str | None) -> None:
        """The outcome from the operations' results; STOPPED: why the run stopped before they all completed."""
        self.changes = []
        for result in results:
            if not result.complete:
                if stopped is not None:  # the run stopped here: the host failed at its first incomplete operation
                    self.fail(result.name, stopped)
                    return
                continue
            if not result.succeeded:
                self.fail(result.name, mask(result.output)[-2000:] or "the operation failed without output")
                return
            if result.changed:
                self.changes.append(result.name)
        self.status = "changed" if self.changes else "unchanged"

    def as_dict(self) -> dict[str, Any]:
        data = {
            "host": self.name,
            "status": self.status,
            "changes": self.changes,
            "failed_operation": self.failed_operation,
            "error": self.error,
        }
        if self.commands:
            data["commands"] = self.commands
        return data


@dataclass
class Plan:
    """Hosts with their rendered files (secrets resolved) and the secret values to mask in output."""

    hosts: list[HostSpec]
    files: dict[str, HostFiles]
    secrets: list[str]

    def mask(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "********")
        return text


def prepare(
    hosts: list[HostSpec], base_dir: Path, keystore: Keystore | None = None, draining: Draining | None = None
) -> Plan:
    """Resolve every secret and render every file before any connection (bad input touches nothing).

    KEYSTORE holds the gateway keys and certificates gpuctl generates (beside the inventory). DRAINING: by
    endpoint, the hosts a rolling deploy is changing, marked down there (gpuctl.drain).
    """
    secrets: list[str] = []

    def resolve(ref: SecretRef) -> str:
        value = ref.resolve(base_dir)
        secrets.append(value)
        return value

    files: dict[str, HostFiles] = {}
    for host in hosts:
        try:
            material = access.gateway_material(host, base_dir, keystore, resolve)
            if material is not None:
                secrets.extend([material.api_key, key_pattern(material.api_key)])
                secrets.extend(material.endpoint_keys + tuple(key_pattern(k) for k in material.endpoint_keys))
                if material.cert is not None:
                    secrets.append(material.cert.key_pem.strip())
            fronted = {e.name: access.endpoint_material(host, e, base_dir, keystore, resolve) for e in host.endpoints}
            for item in fronted.values():
                secrets.extend([item.api_key, key_pattern(item.api_key), item.upstream_key])
                secrets.extend([key_pattern(item.upstream_key)] + ([item.cert.key_pem.strip()] if item.cert else []))
            trust = scrape_trust(host, base_dir, keystore)
            files[host.name] = render_host(host, resolve, material, trust, fronted, draining)
        except GpuctlError as exc:
            raise GpuctlError(f"{host.name}: {exc}") from None
    return Plan(hosts, files, sorted(set(secrets), key=len, reverse=True))


def scrape_trust(host: HostSpec, base_dir: Path, keystore: Keystore | None) -> str | None:
    """On the monitoring host: the CAs of the gateways its Prometheus scrapes."""
    if host.monitoring is None:
        return None
    targets = host.scrape_targets
    ca_pem = None
    if keystore is not None and any(t.trust == "private-ca" for t in targets):
        ca_pem = keystore.ca_pem()
    return monitoring.trust_bundle(targets, ca_pem, base_dir)


def deploy(
    hosts: list[HostSpec],
    base_dir: Path,
    *,
    dry: bool = False,
    diff: bool = False,
    progress: Progress | None = None,
    confirm: Callable[[list[HostOutcome]], bool] | None = None,
    verbose: bool = False,
    keystore: Keystore | None = None,
    draining: Draining | None = None,
) -> list[HostOutcome]:
    """Deploy HOSTS (or, with DRY, only say what would change). Returns one outcome per host.

    Connect, add each host's operations (reading facts), execute them in parallel, collect. Only a dry run
    and a deploy that asks CONFIRM (given the planned changes) evaluate every operation before executing.
    DRAINING: see `prepare`."""
    plan = prepare(hosts, base_dir, keystore, draining)
    outcomes = {h.name: HostOutcome(h.name) for h in hosts}
    plan_first = dry or confirm is not None
    with pyinfra.pyinfra_logging(verbose) as errors:
        state = pyinfra.new_state([Connection.of(h).pyinfra_host() for h in hosts], verbose, plan_first)
        callbacks = pyinfra.Callbacks(progress)
        state.add_callback_handler(callbacks)
        try:
            pyinfra.connect(state)
            for name, error in callbacks.connect_errors.items():
                outcomes[name].fail("connect", plan.mask(error))
            _plan_hosts(state, plan, outcomes, errors, dry=dry, diff=diff, verbose=verbose, plan_first=plan_first)
            if not dry and (confirm is None or confirm(list(outcomes.values()))):
                _execute(state, plan, outcomes, verbose, progress)
        finally:
            pyinfra.disconnect(state)
    return list(outcomes.values())


def _plan_hosts(
    state: Any, plan: Plan, outcomes: dict[str, HostOutcome], errors: pyinfra.ErrorLog, **flags: bool
) -> None:
    """Add every connected host's operations, all hosts at once; a host whose preparation fails is failed,
    the others go on."""
    from gpuctl.deploy.host import deploy_host  # imported late: pyinfra's context must exist first

    by_name = {h.name: h for h in plan.hosts}

    def prepare_host(host: Any) -> bool:
        outcome = outcomes[pyinfra.gpuctl_name(host)]
        try:
            deploy_host(by_name[outcome.name], plan.files[outcome.name])
            if flags["diff"]:
                outcome.diffs = _diffs(host, plan, plan.files[outcome.name])
        except Exception as exc:  # noqa: BLE001 - a host's preparation failing must not stop the others
            explained = "; ".join(errors.for_host(host)[-3:]) if isinstance(exc, PyinfraError) else ""
            said = (
                str(exc) if isinstance(exc, GpuctlError) else f"{type(exc).__name__}: {exc}"
            )  # ours read as sentences
            outcome.fail("prepare", plan.mask(explained or said))
            if flags["verbose"]:
                logging.getLogger("gpuctl").exception("preparing %s failed", outcome.name)
            return False
        return True

    hosts = pyinfra.active_hosts(state)
    prepared = pyinfra.on_every_host(state, prepare_host)
    for host, ok in zip(hosts, prepared, strict=True):
        if not ok:
            pyinfra.fail_host(state, host)
    if not flags["plan_first"]:
        return
    for host in pyinfra.active_hosts(state):
        outcome = outcomes[pyinfra.gpuctl_name(host)]
        with pyinfra.operating_on(state, host):
            outcome.changes = pyinfra.planned_changes(state, host)
            if flags["dry"]:
                outcome.commands = {
                    name: [plan.mask(c) for c in commands]
                    for name, commands in pyinfra.planned_commands(state, host).items()
                }
        outcome.status = "would change" if outcome.changes else "unchanged"


def _execute(
    state: Any, plan: Plan, outcomes: dict[str, HostOutcome], verbose: bool, progress: Progress | None
) -> None:
    """Run the planned operations; then each host's outcome from pyinfra's results."""
    stopped: str | None = None
    raised: dict[tuple[str, str], str] = {}
    try:
        raised = pyinfra.execute(state, verbose, progress)
    except Exception as exc:  # noqa: BLE001 - an operation raising stops pyinfra's run; report it per host
        stopped = plan.mask(f"{type(exc).__name__}: {exc}")
        if verbose:
            logging.getLogger("gpuctl").exception("the deploy stopped")
    for host in state.inventory:
        outcome = outcomes[pyinfra.gpuctl_name(host)]
        if outcome.status == "failed" and outcome.failed_operation in ("connect", "prepare"):
            continue
        outcome.collect(pyinfra.results(state, host, raised), plan.mask, stopped)
        if outcome.status == "failed" and pyinfra.connection_lost(host):
            outcome.error = (
                f"the connection was lost: the host stopped answering (nothing acknowledged for "
                f"{pyinfra.SILENT_AFTER_S} s); {outcome.error}"
            )


def _diffs(host: Any, plan: Plan, files: HostFiles) -> list[str]:
    """Unified diffs between the host's files and the rendered ones, secret values masked; each names its host."""
    diffs = []
    name = host.data.gpuctl_name
    for item in files:
        if item.secret:  # compared by hash: the host's secret file is never read into this process or its log
            remote = host.get_fact(Sha256File, path=str(item.path))
            if remote != hashlib.sha256(item.content.encode()).hexdigest():
                diffs.append(f"--- {name}:{item.path} (secret, 0600): would change; content not shown\n")
            continue
        current = host.get_fact(FileContents, path=str(item.path))
        before = plan.mask("\n".join(current) + "\n") if current is not None else ""
        after = plan.mask(item.content)
        if before != after:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        before.splitlines(keepends=True),
                        after.splitlines(keepends=True),
                        fromfile=f"{name}:{item.path} (on the host)",
                        tofile=f"{name}:{item.path} (rendered)",
                    )
                )
            )
    return diffs
