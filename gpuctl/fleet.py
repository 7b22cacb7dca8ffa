"""The pyinfra driver: build pyinfra's state from host specs, run gpuctl's deploys, report per host.

Everything that can fail without a host (secrets, rendering) happens before any connection. Hosts
run in parallel; one host failing (unreachable, an operation erroring) never stops the others.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.files import FileContents

from gpuctl.errors import GpuctlError
from gpuctl.render import RenderedFile, render_host
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

    def as_dict(self) -> dict[str, Any]:
        data = {
            "host": self.name, "status": self.status, "changes": self.changes,
            "failed_operation": self.failed_operation, "error": self.error,
        }  # fmt: skip
        if self.commands:
            data["commands"] = self.commands
        return data


@dataclass
class Plan:
    """Hosts with their rendered files (secrets resolved) and the secret values to mask in output."""

    hosts: list[HostSpec]
    files: dict[str, list[RenderedFile]]
    secrets: list[str]

    def mask(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "********")
        return text


def prepare(hosts: list[HostSpec], base_dir: Path) -> Plan:
    """Resolve every secret and render every file before any connection (bad input touches nothing)."""
    secrets: list[str] = []

    def resolve(ref: SecretRef) -> str:
        value = ref.resolve(base_dir)
        secrets.append(value)
        return value

    files: dict[str, list[RenderedFile]] = {}
    for host in hosts:
        try:
            files[host.name] = render_host(host, resolve)
        except GpuctlError as exc:
            raise GpuctlError(f"{host.name}: {exc}") from None
    return Plan(hosts, files, sorted(set(secrets), key=len, reverse=True))


def pyinfra_host(spec: HostSpec) -> tuple[str, dict[str, Any]]:
    """The (name, data) pair pyinfra's Inventory takes for one host."""
    data: dict[str, Any] = {"gpuctl_name": spec.name}
    if spec.local:
        return "@local", data
    data.update(ssh_hostname=spec.address, ssh_user=spec.ssh_user, ssh_port=spec.ssh_port,
                ssh_strict_host_key_checking=spec.ssh_strict_host_key_checking)  # fmt: skip
    if spec.ssh_key:
        data["ssh_key"] = str(Path(spec.ssh_key).expanduser())
    if spec.ssh_known_hosts_file:
        data["ssh_known_hosts_file"] = str(Path(spec.ssh_known_hosts_file).expanduser())
    if spec.sudo if spec.sudo is not None else spec.ssh_user != "root":
        data["_sudo"] = True
    return spec.name, data


class _PyinfraErrors(logging.Handler):
    """Keeps pyinfra's warning/error log lines per host, to explain a host that pyinfra failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def for_host(self, pyinfra_name: str, plan: Plan) -> str:
        prefix = f"[{pyinfra_name}] "
        mine = [plan.mask(line.removeprefix(prefix)) for line in self.lines if line.startswith(prefix)]
        return "; ".join(mine[-3:])


class _Recorder(BaseStateCallback):
    """Collects connection errors and reports progress as operations finish."""

    def __init__(self, plan: Plan, progress: Progress | None) -> None:
        self.plan = plan
        self.progress = progress
        self.connect_errors: dict[str, str] = {}

    def host_connect_error(self, state: State, host: Any, error: Any) -> None:  # type: ignore[override]
        self.connect_errors[host.data.gpuctl_name] = self.plan.mask(str(error))

    def operation_host_success(self, state: State, host: Any, op_hash: str, retry_count: int = 0) -> None:  # type: ignore[override]
        meta = state.ops[host][op_hash].operation_meta
        # The result is not recorded yet when pyinfra calls this; the plan's answer is.
        if self.progress and meta._maybe_is_change:  # noqa: SLF001
            self.progress(host.data.gpuctl_name, f"done: {_op_name(state, op_hash)}")

    def operation_host_error(self, state: State, host: Any, op_hash: str, retry_count: int = 0, max_retries: int = 0) -> None:  # type: ignore[override]
        if self.progress:
            self.progress(host.data.gpuctl_name, f"FAILED: {_op_name(state, op_hash)}")


def _op_name(state: State, op_hash: str) -> str:
    names = sorted(state.op_meta[op_hash].names)
    return names[0] if names else op_hash


def deploy(
    hosts: list[HostSpec],
    base_dir: Path,
    *,
    dry: bool = False,
    diff: bool = False,
    progress: Progress | None = None,
    confirm: Callable[[list[HostOutcome]], bool] | None = None,
    verbose: bool = False,
) -> list[HostOutcome]:
    """Deploy HOSTS (or, with DRY, only say what would change). Returns one outcome per host."""
    from gpuctl.deploy.host import deploy_host  # imported late: pyinfra context must exist first

    plan = prepare(hosts, base_dir)
    pyinfra_log = logging.getLogger("pyinfra")
    pyinfra_log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    pyinfra_log.propagate = verbose
    errors = _PyinfraErrors()
    pyinfra_log.addHandler(errors)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    inventory = Inventory(([pyinfra_host(h) for h in hosts], {}))
    state = State(inventory, Config(FAIL_PERCENT=100, CONNECT_TIMEOUT=10, PARALLEL=max(1, len(hosts))))
    if verbose:  # pyinfra's most verbose output (its CLI's -vvv): commands, their output, facts
        for flag in ("print_input", "print_output", "print_fact_info", "print_fact_input", "print_fact_output",
                     "print_noop_info"):  # fmt: skip
            setattr(state, flag, True)
    recorder = _Recorder(plan, progress)
    state.add_callback_handler(recorder)
    outcomes = {h.name: HostOutcome(h.name) for h in hosts}
    by_name = {h.name: h for h in hosts}
    state.set_stage(StateStage.Connect)
    _tolerate_all_failed(connect_all, state)
    for name, error in recorder.connect_errors.items():
        outcomes[name].status, outcomes[name].failed_operation, outcomes[name].error = "failed", "connect", error
    state.set_stage(StateStage.Prepare)
    for host in list(state.inventory.get_active_hosts()):
        name = host.data.gpuctl_name
        try:
            with ctx_state.use(state), ctx_host.use(host):
                deploy_host(by_name[name], plan.files[name])
                if diff:
                    outcomes[name].diffs = _diffs(host, plan, plan.files[name])
        except Exception as exc:  # noqa: BLE001 - a host's preparation failing must not stop the others
            outcomes[name].status, outcomes[name].failed_operation = "failed", "prepare"
            explained = errors.for_host(host.name, plan) if isinstance(exc, PyinfraError) else ""
            outcomes[name].error = explained or plan.mask(f"{type(exc).__name__}: {exc}")
            if verbose:
                logging.getLogger("gpuctl").exception("preparing %s failed", name)
            _tolerate_all_failed(state.fail_hosts, {host})
    for host in state.inventory.get_active_hosts():
        outcome = outcomes[host.data.gpuctl_name]
        with ctx_state.use(state), ctx_host.use(host):
            outcome.changes = _planned_changes(state, host)
            if dry:
                outcome.commands = _planned_commands(state, host, plan)
        outcome.status = "would change" if outcome.changes else "unchanged"
    if dry or (confirm is not None and not confirm(list(outcomes.values()))):
        disconnect_all(state)
        pyinfra_log.removeHandler(errors)
        return list(outcomes.values())
    state.set_stage(StateStage.Execute)
    _tolerate_all_failed(run_ops, state)
    state.set_stage(StateStage.Disconnect)
    for host in state.inventory:
        name = host.data.gpuctl_name
        if outcomes[name].status == "failed" and outcomes[name].failed_operation in ("connect", "prepare"):
            continue
        _collect_results(state, host, outcomes[name], plan)
    disconnect_all(state)
    pyinfra_log.removeHandler(errors)
    return list(outcomes.values())


def _planned_changes(state: State, host: Any) -> list[str]:
    """Names of the operations that would change HOST.

    Operations guarded by `_if` (daemon-reload, restarts) only run when an earlier one changes
    something; pyinfra cannot tell before executing, so they count only if an unguarded one changes.
    """
    unguarded, guarded = [], []
    for op_hash in state.get_op_order():
        data = state.ops[host].get(op_hash)
        if data is None or not data.operation_meta.will_change:
            continue
        (guarded if data.global_arguments.get("_if") else unguarded).append(op_hash)
    planned = unguarded + guarded if unguarded else []
    for op_hash in state.ops[host]:
        state.ops[host][op_hash].operation_meta._maybe_is_change = op_hash in planned  # noqa: SLF001
    return [_op_name(state, op_hash) for op_hash in state.get_op_order() if op_hash in planned]


def _planned_commands(state: State, host: Any, plan: Plan) -> dict[str, list[str]]:
    """The commands of each operation that would change HOST, as text with secrets masked."""
    commands = {}
    for op_hash in state.get_op_order():
        data = state.ops[host].get(op_hash)
        if data is not None and data.operation_meta._maybe_is_change:  # noqa: SLF001 - set by _planned_changes
            commands[_op_name(state, op_hash)] = [plan.mask(str(c)) for c in data.command_generator()]
    return commands


def _tolerate_all_failed(func: Callable[..., Any], *args: Any) -> None:
    """Run a pyinfra step; 'No hosts remaining!' is a per-host outcome here, not an error."""
    try:
        func(*args)
    except PyinfraError as exc:
        if "No hosts remaining" not in str(exc):
            raise


def _collect_results(state: State, host: Any, outcome: HostOutcome, plan: Plan) -> None:
    outcome.changes = []
    for op_hash in state.get_op_order():
        data = state.ops[host].get(op_hash)
        if data is None:
            continue
        meta = data.operation_meta
        if not meta.is_complete():
            continue
        if not meta.did_succeed():
            outcome.status = "failed"
            outcome.failed_operation = _op_name(state, op_hash)
            output = meta._combined_output  # noqa: SLF001 - pyinfra keeps the command output here
            text = (output.stderr or output.stdout) if output is not None else ""
            outcome.error = plan.mask(text.strip())[-2000:] or "the operation failed without output"
            return
        if meta.did_change():
            outcome.changes.append(_op_name(state, op_hash))
    outcome.status = "changed" if outcome.changes else "unchanged"


def _diffs(host: Any, plan: Plan, files: list[RenderedFile]) -> list[str]:
    """Unified diffs between the host's files and the rendered ones, secret values masked."""
    diffs = []
    for item in files:
        current = host.get_fact(FileContents, path=str(item.path))
        before = plan.mask("\n".join(current) + "\n") if current is not None else ""
        after = plan.mask(item.content)
        if before != after:
            diffs.append("".join(difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True),
                fromfile=f"{item.path} (on host)", tofile=f"{item.path} (rendered)",
            )))  # fmt: skip
    return diffs
