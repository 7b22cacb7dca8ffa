"""Every touch of pyinfra's API and internals that gpuctl makes, kept here alone.

Checked against pyinfra 3.10.0. What is internal (underscored, or not documented for API use):
- `ensure_shared_op_meta` is wrapped to record each host's own operation names (below);
- `OperationMeta._maybe_is_change` is set from gpuctl's plan, so --dry and the confirmed change list agree;
- `OperationMeta._combined_output` is read for a failed operation's stderr/stdout;
- gevent's hub prints a greenlet's exception as a traceback: silenced while gpuctl reports it in one line;
- the SSH connector's paramiko client (`host.connector.client`) gets keepalives and a TCP user timeout;
- `pyinfra.operations.util.packaging.ensure_packages` (what apt.packages runs) tells whether apt would
  install anything, before deciding to refresh the package index.

Each host's own operation names. In API mode pyinfra hashes an operation by its position in the host's
list, so different operations at the same position on different hosts share one hash, and
`state.op_meta[hash].names` is the union of their names (a vLLM host would be reported as changing
"Ollama | Directory …" on a mixed fleet). pyinfra keeps no per-host name, so `ensure_shared_op_meta` —
which every operation call goes through, with the current host in pyinfra's context — is wrapped once to
record (host, hash) → name.
Checked against pyinfra 3.10.0 (`pyinfra/api/operation.py`: `ensure_shared_op_meta(state, op_hash,
op_order, global_arguments, names)`, called from `_wrap_operation`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import gevent
from pyinfra import context
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_host_op
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.context import ctx_config, ctx_host, ctx_state
from pyinfra.operations.util.packaging import ensure_packages

# The module itself: `pyinfra.api.operation` as an attribute is the `operation` decorator it defines.
_operation = importlib.import_module("pyinfra.api.operation")

T = TypeVar("T")
_ATTRIBUTE = "_gpuctl_op_names"
_original = _operation.ensure_shared_op_meta


def _recording(state: Any, op_hash: str, op_order: Any, global_arguments: Any, names: set[str]) -> Any:
    try:
        host_name = context.host.name
    except (AttributeError, TypeError, LookupError):  # no host in pyinfra's context: nothing to record
        host_name = None
    if host_name is not None and names:
        if not hasattr(state, _ATTRIBUTE):
            setattr(state, _ATTRIBUTE, {})
        getattr(state, _ATTRIBUTE)[(host_name, op_hash)] = sorted(names)[0]
    return _original(state, op_hash, op_order, global_arguments, names)


if getattr(_operation.ensure_shared_op_meta, "__name__", "") != "_recording":
    _operation.ensure_shared_op_meta = _recording


def op_name(state: Any, host: Any, op_hash: str) -> str:
    """HOST's own name for the operation OP_HASH (the shared union only if none was recorded)."""
    own = getattr(state, _ATTRIBUTE, {}).get((host.name, op_hash))
    if own is not None:
        return own
    names = sorted(state.op_meta[op_hash].names)
    return names[0] if names else op_hash


# -- state, stages and callbacks ----------------------------------------------------------------------

CONNECT_TIMEOUT_S = 10
KEEPALIVE_S = 5
"""An idle SSH connection sends a keepalive this often, so a host that stops answering is noticed."""
SILENT_AFTER_S = 30
"""Data (a keepalive included) unacknowledged this long drops the connection (TCP_USER_TIMEOUT): a
silent host fails its current operation instead of holding the whole run. A long command on a live
host is not affected: the host's TCP stack acknowledges keepalives while the command runs."""
VERBOSE_FLAGS = (
    "print_input",
    "print_output",
    "print_fact_info",
    "print_fact_input",
    "print_fact_output",
    "print_noop_info",
)
"""pyinfra's most verbose output (its CLI's -vvv): commands, their output, facts."""


def new_state(hosts: list[tuple[str, dict[str, Any]]], verbose: bool, plan_first: bool) -> State:
    """A pyinfra State for HOSTS ((name, data) pairs) that never stops because some hosts failed.

    PLAN_FIRST: evaluate each operation as it is added, to know what would change before executing (a dry
    run, or a change list to confirm); pyinfra then evaluates it again when it executes. Without it, as
    pyinfra's CLI does with --yes, each operation is evaluated once, when it runs."""
    config = Config(FAIL_PERCENT=100, CONNECT_TIMEOUT=CONNECT_TIMEOUT_S, PARALLEL=max(1, len(hosts)))
    state = State(Inventory((hosts, {})), config, check_for_changes=plan_first)
    if verbose:
        for flag in VERBOSE_FLAGS:
            setattr(state, flag, True)
    return state


def gpuctl_name(host: Any) -> str:
    return host.data.gpuctl_name


def tolerate_all_failed(func: Callable[..., Any], *args: Any) -> None:
    """Run a pyinfra step; 'No hosts remaining!' is a per-host outcome here, not an error."""
    try:
        func(*args)
    except PyinfraError as exc:
        if "No hosts remaining" not in str(exc):
            raise


def connect(state: State) -> None:
    state.set_stage(StateStage.Connect)
    tolerate_all_failed(connect_all, state)
    bound_connections(state)


def bound_connections(state: State) -> None:
    """Keepalives, a bound on unacknowledged data, and no Nagle delay on every SSH connection."""
    for host in active_hosts(state):
        client = getattr(host.connector, "client", None)  # pyinfra's SSH connector: a paramiko SSHClient
        transport = client.get_transport() if client is not None else None
        if transport is None:
            continue
        transport.set_keepalive(KEEPALIVE_S)
        sock = transport.sock
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, SILENT_AFTER_S * 1000)


def connection_lost(host: Any) -> bool:
    """Whether HOST's SSH connection died during the run (the host stopped answering or went away)."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    return transport is not None and not transport.is_active()


def disconnect(state: State) -> None:
    state.set_stage(StateStage.Disconnect)
    disconnect_all(state)


def active_hosts(state: State) -> list[Any]:
    return list(state.inventory.get_active_hosts())


def fail_host(state: State, host: Any) -> None:
    tolerate_all_failed(state.fail_hosts, {host})


def on_every_host(state: State, func: Callable[[Any], T]) -> list[T]:
    """FUNC(host) for every active host at once, each in its own greenlet with pyinfra's context for that
    host and a copy of the config, as pyinfra's CLI prepares hosts; their results in the hosts' order.
    The hosts' SSH round trips overlap when gevent has patched the process (gpuctl.entry); FUNC must not
    raise (a host's failure is its own)."""
    assert state.pool is not None

    def run(host: Any) -> T:
        with ctx_config.use(state.config.copy()), ctx_host.use(host):
            return func(host)

    with ctx_state.use(state):
        greenlets = [state.pool.spawn(run, host) for host in active_hosts(state)]
        gevent.joinall(greenlets)
    return [g.get() for g in greenlets]


@contextlib.contextmanager
def operating_on(state: State, host: Any) -> Iterator[None]:
    """pyinfra's context for adding HOST's operations (and reading its facts)."""
    with ctx_state.use(state), ctx_host.use(host):
        yield


def execute(
    state: State, verbose: bool, progress: Callable[[str, str], None] | None = None
) -> dict[tuple[str, str], str]:
    """Run every planned operation, one at a time, on all active hosts in parallel (pyinfra's default
    order, as its `run_ops` does). Unlike `run_ops`, an exception on one host (an operation that raises,
    a fact that fails on a host whose connection died) fails that host alone; the others go on.

    PROGRESS(gpuctl host name, message) hears of each operation that changed something, as it finishes.
    Returns {(pyinfra host name, op hash): "ExceptionType: message"} for the operations that raised."""
    state.set_stage(StateStage.Execute)
    state.is_executing = True
    raised: dict[tuple[str, str], str] = {}
    hub = gevent.get_hub()
    print_exception = hub.print_exception
    if not verbose:  # gevent prints a greenlet's exception as a traceback; the summary says it in one line
        hub.print_exception = lambda *args: None  # type: ignore[method-assign]
    try:
        with ctx_state.use(state):
            for op_hash in state.get_op_order():
                if not _run_everywhere(state, op_hash, raised, progress):
                    break
    finally:
        hub.print_exception = print_exception  # type: ignore[method-assign]
    return raised


def _run_everywhere(state: State, op_hash: str, raised: dict[tuple[str, str], str], progress: Any) -> bool:
    """Run OP_HASH on every active host at once; fail those where it failed. False when none is left."""
    state.trigger_callbacks("operation_start", op_hash)
    hosts = active_hosts(state)
    assert state.pool is not None
    runs = {state.pool.spawn(_run_isolated, state, host, op_hash, raised, progress): host for host in hosts}
    gevent.joinall(list(runs))
    tolerate_all_failed(state.fail_hosts, {host for run, host in runs.items() if not run.value})
    state.trigger_callbacks("operation_end", op_hash)
    return bool(active_hosts(state))


def _run_isolated(
    state: State, host: Any, op_hash: str, raised: dict[tuple[str, str], str], progress: Any = None
) -> bool:
    with ctx_host.use(host):
        try:
            succeeded = run_host_op(state, host, op_hash)
        except Exception as exc:  # noqa: BLE001 - one host's exception is that host's failure
            raised[(host.name, op_hash)] = f"{type(exc).__name__}: {exc}"
            return False
    data = state.ops[host].get(op_hash)
    if succeeded and progress is not None and data is not None and data.operation_meta.did_change():
        progress(gpuctl_name(host), f"done: {op_name(state, host, op_hash)}")
    return succeeded


class ErrorLog(logging.Handler):
    """Keeps pyinfra's warning/error log lines, to explain a host that pyinfra failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def for_host(self, host: Any) -> list[str]:
        prefix = f"[{host.name}] "
        return [line.removeprefix(prefix) for line in self.lines if line.startswith(prefix)]


@contextlib.contextmanager
def pyinfra_logging(verbose: bool) -> Iterator[ErrorLog]:
    """pyinfra's log: shown with VERBOSE, else only kept (warnings and errors) for the summary."""
    log = logging.getLogger("pyinfra")
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = verbose
    errors = ErrorLog()
    log.addHandler(errors)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        yield errors
    finally:
        log.removeHandler(errors)


class Callbacks(BaseStateCallback):
    """Connection errors, and failed operations as they fail: on_progress(gpuctl host name, message)."""

    def __init__(self, on_progress: Callable[[str, str], None] | None) -> None:
        self.on_progress = on_progress
        self.connect_errors: dict[str, str] = {}

    def host_connect_error(self, state: State, host: Any, error: Any) -> None:  # type: ignore[override]
        self.connect_errors[gpuctl_name(host)] = str(error)

    def operation_host_error(  # type: ignore[override]
        self, state: State, host: Any, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        if self.on_progress:
            self.on_progress(gpuctl_name(host), f"FAILED: {op_name(state, host, op_hash)}")


def apt_would_install(host: Any, packages: list[str], installed: dict[str, Any]) -> bool:
    """Whether apt.packages(PACKAGES) would install or change anything on HOST: pyinfra's own comparison of
    the packages (NAME or NAME=VERSION) with INSTALLED, the host's dpkg list (its DebPackages fact)."""
    commands = ensure_packages(
        host,
        packages,
        installed,
        True,
        install_command="install",
        uninstall_command="remove",
        upgrade_command="upgrade",
        version_join="=",
    )
    return next(iter(commands), None) is not None


# -- plans and results --------------------------------------------------------------------------------


def planned_changes(state: State, host: Any) -> list[str]:
    """Names of the operations that would change HOST, marked as such for progress and --dry.

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
    return [op_name(state, host, op_hash) for op_hash in state.get_op_order() if op_hash in planned]


def planned_commands(state: State, host: Any) -> dict[str, list[str]]:
    """The commands of each operation that would change HOST (after planned_changes), unmasked."""
    commands = {}
    for op_hash in state.get_op_order():
        data = state.ops[host].get(op_hash)
        if data is not None and data.operation_meta._maybe_is_change:  # noqa: SLF001 - set by planned_changes
            commands[op_name(state, host, op_hash)] = [str(c) for c in data.command_generator()]
    return commands


@dataclass(frozen=True)
class OpResult:
    """One operation of one host after the run."""

    name: str
    complete: bool
    succeeded: bool
    changed: bool
    output: str
    """stderr (else stdout) of a failed operation."""


def results(state: State, host: Any, raised: dict[tuple[str, str], str]) -> list[OpResult]:
    """HOST's operations in order, as pyinfra recorded them (RAISED: those that raised, from `execute`)."""
    found = []
    for op_hash in state.get_op_order():
        data = state.ops[host].get(op_hash)
        if data is None:
            continue
        if (host.name, op_hash) in raised:
            found.append(OpResult(op_name(state, host, op_hash), True, False, False, raised[(host.name, op_hash)]))
            continue
        meta = data.operation_meta
        complete = meta.is_complete()
        succeeded = complete and meta.did_succeed()
        output = ""
        if complete and not succeeded:
            combined = meta._combined_output  # noqa: SLF001 - pyinfra keeps the command output here
            output = ((combined.stderr or combined.stdout) if combined is not None else "").strip()
        found.append(
            OpResult(op_name(state, host, op_hash), complete, succeeded, succeeded and meta.did_change(), output)
        )
    return found
