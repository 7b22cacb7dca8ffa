"""Load Python inventories into validated `HostSpec`s, with errors that name file, host and field.

An inventory is a Python file. As in pyinfra, every module-level list of hosts is a group. Defaults
apply in this order, later winning: `defaults` (every host), `<group>_defaults` (the group's hosts,
in the order the groups appear), then the host's own settings. Nested settings merge key by key, so
a host can override one vLLM field of its group's engine.

    from gpuctl.inventory import Defaults, Gpu, Host, Secret, Vllm

    defaults = Defaults(driver=Driver(branch=580))
    rtx4090 = [Host("gpu-01", address="10.0.0.11"), Host("gpu-02", address="10.0.0.12")]
    rtx4090_defaults = Defaults(gpus=Gpu(model="RTX 4090", count=1, memory_gib=24),
                                vllm=Vllm(image="vllm/vllm-openai:v0.11.0", model="…"))

The builders (`Host`, `Vllm`, …) only record their arguments; validation happens when the loader
knows which host a value belongs to, so an error can name it. For editors and type checkers they
are the spec models themselves, so fields complete and get checked while typing.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import traceback
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from gpuctl import endpoints, monitoring
from gpuctl.errors import GpuctlError, InventoryError
from gpuctl.spec import (
    DockerSpec,
    DriverSpec,
    EndpointSpec,
    FirewallSpec,
    GatewaySpec,
    GpuSpec,
    HostSpec,
    ModelArchitecture,
    ModelSpec,
    MonitoringSpec,
    OllamaSpec,
    RolloutSpec,
    SecretRef,
    VllmSpec,
)

__all__ = [
    # builders, used inside inventory files
    "Architecture",
    "Defaults",
    "Docker",
    "Driver",
    "Endpoint",
    "Firewall",
    "Gateway",
    "Gpu",
    "Host",
    "Model",
    "Monitoring",
    "Ollama",
    "Rollout",
    "Secret",
    "Vllm",
    # loading
    "Inventory",
    "find_hosts",
    "load",
    "resolve_path",
]

# ---------------------------------------------------------------------------------------------
# Builders used inside inventory files
# ---------------------------------------------------------------------------------------------


class Partial:
    """Arguments for a spec model, kept unvalidated until the loader knows the host."""

    def __init__(self, model: type[BaseModel], kwargs: dict[str, Any], name: str | None = None):
        self.model = model
        self.kwargs = kwargs
        self.name = name

    def to_data(self) -> dict[str, Any]:
        """The arguments as plain data (nested builders become dicts)."""
        return {key: _to_data(value) for key, value in self.kwargs.items()}

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"{self.model.__name__}({label}{', '.join(self.kwargs)})"


class WholeValue(dict):  # type: ignore[type-arg]
    """Data that merges as one value, never key by key (a Model: its name and weights belong together)."""


def _to_data(value: Any) -> Any:
    if isinstance(value, Partial):
        return WholeValue(value.to_data()) if value.model is ModelSpec else value.to_data()
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, list | tuple):
        return [_to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_data(v) for k, v in value.items()}
    return value


def _builder(model: type[BaseModel]) -> Any:
    def build(**kwargs: Any) -> Partial:
        return Partial(model, kwargs)

    build.__name__ = model.__name__.removesuffix("Spec")
    build.__doc__ = model.__doc__
    return build


class Secret:
    """A reference to a secret on the machine that runs gpuctl (never the value itself)."""

    @staticmethod
    def env(name: str) -> SecretRef:
        """The secret is the value of environment variable NAME at deploy time."""
        return Partial(SecretRef, {"env": name})  # type: ignore[return-value]

    @staticmethod
    def file(path: str) -> SecretRef:
        """The secret is the content of PATH (relative paths: to the inventory's folder)."""
        return Partial(SecretRef, {"file": path})  # type: ignore[return-value]


if TYPE_CHECKING:
    Vllm = VllmSpec
    Ollama = OllamaSpec
    Gpu = GpuSpec
    Driver = DriverSpec
    Docker = DockerSpec
    Architecture = ModelArchitecture
    Gateway = GatewaySpec
    Firewall = FirewallSpec
    Rollout = RolloutSpec
    Monitoring = MonitoringSpec
    Defaults = HostSpec

    def Host(name: str, **fields: Any) -> HostSpec:  # noqa: N802
        ...

    def Model(name: str, *, vllm: str | None = None, ollama: str | None = None) -> str:  # noqa: N802
        ...

    def Endpoint(name: str, *, hosts: Any, model: Any, on: Any, **fields: Any) -> EndpointSpec:  # noqa: N802
        ...

else:
    Vllm = _builder(VllmSpec)
    Ollama = _builder(OllamaSpec)
    Gpu = _builder(GpuSpec)
    Driver = _builder(DriverSpec)
    Docker = _builder(DockerSpec)
    Architecture = _builder(ModelArchitecture)
    Gateway = _builder(GatewaySpec)
    Firewall = _builder(FirewallSpec)
    Rollout = _builder(RolloutSpec)
    Monitoring = _builder(MonitoringSpec)
    Defaults = _builder(HostSpec)

    def Host(name: str, **fields: Any) -> Partial:  # noqa: N802
        """One host of a group: its name and its own settings (overriding the defaults)."""
        return Partial(HostSpec, fields, name=name)

    def Model(name: str, *, vllm: str | None = None, ollama: str | None = None) -> Partial:  # noqa: N802
        """One model under one NAME on every engine: Vllm(model=Model(...)) serves the VLLM weights as NAME;
        Ollama(models=[Model(...)]) pulls the OLLAMA tag and copies it to NAME (gpuctl.spec.ModelSpec)."""
        given = {"vllm": vllm, "ollama": ollama}
        return Partial(ModelSpec, {"name": name, **{k: v for k, v in given.items() if v is not None}})

    def Endpoint(name: str, *, hosts: Any, model: Any, on: Any, **fields: Any) -> Partial:  # noqa: N802
        """One https://…/v1 on the front host ON for HOSTS (a group, Host(...)s or names) serving MODEL (a
        name or a Model(...)): gpuctl.spec.EndpointSpec, gpuctl.endpoints."""
        members = hosts if isinstance(hosts, list | tuple) else [hosts]
        data = {
            "name": name,
            "hosts": [h.name if _is_host(h) else h for h in members],
            "model": model.kwargs["name"] if isinstance(model, Partial) and model.model is ModelSpec else model,
            "on": on.name if _is_host(on) else on,
        }
        return Partial(EndpointSpec, data | fields, name=name)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass
class Inventory:
    """A loaded, validated inventory."""

    path: Path
    label: str
    hosts: dict[str, HostSpec]
    groups: dict[str, list[str]] = field(default_factory=dict)
    endpoints: dict[str, EndpointSpec] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def base_dir(self) -> Path:
        """Folder that relative secret files are read from."""
        return self.path.parent

    def select(self, limit: tuple[str, ...] | list[str] = ()) -> list[HostSpec]:
        """Hosts matching --limit patterns (host names, group names or globs); all if none."""
        if not limit:
            return list(self.hosts.values())
        chosen: list[str] = []
        for pattern in limit:
            if pattern in self.groups:
                matches = self.groups[pattern]
            else:
                matches = [h for h in self.hosts if fnmatch.fnmatchcase(h, pattern)]
            if not matches:
                known = ", ".join(self.hosts)
                raise GpuctlError(f"{self.label}: --limit {pattern}: no such host or group (hosts: {known})")
            chosen += [m for m in matches if m not in chosen]
        return [self.hosts[h] for h in chosen]


def resolve_path(ref: str, cwd: Path | None = None) -> Path:
    """An inventory reference: a path to a .py file, a NAME looked up in `search_folders` (NAME.py), or
    example:NAME, one of the examples shipped with gpuctl."""
    cwd = cwd or Path.cwd()
    candidate = Path(ref).expanduser()
    path = candidate if candidate.is_absolute() else cwd / candidate
    if path.is_dir() and (os.sep in ref or not (cwd / "inventories" / f"{ref}.py").is_file()):
        inside = sorted(p.name for p in path.glob("*.py") if not p.name.startswith("_"))
        hint = f": give one of its files ({', '.join(inside)})" if inside else ""
        raise GpuctlError(f"inventory {ref}: is a folder; an inventory is one Python file (.py){hint}")
    if path.suffix and path.suffix != ".py" and (path.is_file() or os.sep in ref or "." in ref):
        raise GpuctlError(
            f"inventory {ref}: gpuctl inventories are Python files (.py) holding Host(...) lists, "
            f"not {path.suffix} files (see inventories/prod.py)"
        )
    if ref.endswith(".py") or os.sep in ref:
        if not path.is_file():
            raise GpuctlError(f"inventory {ref}: no such file")
        return path
    if ref.startswith(EXAMPLE_PREFIX):
        return example_path(ref.removeprefix(EXAMPLE_PREFIX))
    folders = search_folders(cwd)
    for folder in folders:
        if (folder / f"{ref}.py").is_file():
            return folder / f"{ref}.py"
    known = sorted(
        {p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.py") if not p.name.startswith("_")}
    )
    looked = ", ".join(_shown(folder, cwd) for folder in folders)
    available = f"available: {', '.join(known)}" if known else "none there"
    raise GpuctlError(
        f"inventory {ref}: not found as {ref}.py in {looked} ({available}; examples shipped with gpuctl: "
        f"{', '.join(EXAMPLE_PREFIX + n for n in examples())})"
    )


EXAMPLE_PREFIX = "example:"
INVENTORIES_ENV = "GPUCTL_INVENTORIES"


def search_folders(cwd: Path) -> list[Path]:
    """Where a bare inventory NAME is looked for, in order: ./inventories, each folder of
    $GPUCTL_INVENTORIES (separated by ':'), then $XDG_CONFIG_HOME/gpuctl/inventories (~/.config/...)."""
    folders = [cwd / "inventories"]
    folders += [Path(f).expanduser() for f in os.environ.get(INVENTORIES_ENV, "").split(os.pathsep) if f]
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    folders.append(config / "gpuctl" / "inventories")
    return list(dict.fromkeys(folders))


def _shown(folder: Path, cwd: Path) -> str:
    """A searched folder as the message names it: absolute, with ~ for the home folder."""
    text = str(folder if folder.is_absolute() else cwd / folder)
    home = str(Path.home())
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def examples_dir() -> Path:
    """The example inventories shipped with gpuctl (inventories/ of the repository, inside the wheel)."""
    return Path(str(resources.files("gpuctl.examples")))


def examples() -> list[str]:
    return sorted(p.stem for p in examples_dir().glob("*.py") if not p.name.startswith("_"))


def example_path(name: str) -> Path:
    path = examples_dir() / f"{name}.py"
    if not path.is_file():
        raise GpuctlError(f"inventory {EXAMPLE_PREFIX}{name}: no such example (examples: {', '.join(examples())})")
    return path


def load(ref: str, cwd: Path | None = None) -> Inventory:
    """Load and validate an inventory; raise InventoryError with one line per problem."""
    path = resolve_path(ref, cwd)
    label = ref if ref.startswith(EXAMPLE_PREFIX) else _label(path, cwd or Path.cwd())
    namespace = _execute(path, label)
    entries, groups, defaults = _collect(namespace, label)
    hosts: dict[str, HostSpec] = {}
    problems: list[str] = []
    for name, entry in entries.items():
        data = _merged_data(name, entry, groups, defaults)
        try:
            hosts[name] = HostSpec.model_validate(data)
        except ValidationError as exc:
            problems += [f"{label}: {name}: {line}" for line in describe_errors(exc, data)]
    problems += _shared_addresses(hosts, label)
    found_endpoints = _endpoints(namespace, label, problems)
    if not problems:
        problems += monitoring.apply(hosts, label)
        problems += endpoints.apply(hosts, found_endpoints, label)
    if problems:
        raise InventoryError(problems)
    if not hosts:
        raise InventoryError([f"{label}: defines no hosts (a module-level list of Host(...) is a group)"])
    by_name = {e.name: e for e in found_endpoints}
    return Inventory(path=path, label=label, hosts=hosts, groups=groups, endpoints=by_name)


def _endpoints(namespace: dict[str, Any], label: str, problems: list[str]) -> list[EndpointSpec]:
    """The module's Endpoint(...)s (alone or in lists), validated; their errors added to PROBLEMS."""
    found: list[EndpointSpec] = []
    seen: set[int] = set()
    for key, value in namespace.items():
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if key.startswith("_") or not (isinstance(item, Partial) and item.model is EndpointSpec):
                continue
            if id(item) in seen:
                continue
            seen.add(id(item))
            data = item.to_data()
            try:
                found.append(EndpointSpec.model_validate(data))
            except ValidationError as exc:
                problems += [f"{label}: endpoint {item.name}: {line}" for line in describe_errors(exc, data)]
    return found


def find_hosts(
    target: str, inventory_ref: str | None = None, limit: tuple[str, ...] = ()
) -> tuple[Inventory, list[HostSpec]]:
    """What a TARGET of verify, status or bench names: an inventory (all or LIMIT hosts), a host of
    INVENTORY_REF, or a host found in inventories/*.py of the current folder."""
    if inventory_ref:
        inv = load(inventory_ref)
        return inv, inv.select([target])
    try:
        inv = load(target)
        return inv, inv.select(limit)
    except GpuctlError as exc:
        if "not found" not in str(exc) and "no such file" not in str(exc):
            raise
    for inv in _inventories_here():
        if target in inv.hosts:
            return inv, [inv.hosts[target]]
    raise GpuctlError(f"{target}: not a URL, an inventory, or a host in inventories/*.py (use -i INVENTORY)")


def find_endpoint(target: str, inventory_ref: str | None = None) -> tuple[Inventory, EndpointSpec] | None:
    """The fleet endpoint TARGET names: in INVENTORY_REF, or in inventories/*.py of the current folder (None
    when TARGET names none; a host or inventory of that name wins)."""
    if inventory_ref:
        inv = load(inventory_ref)
        return (inv, inv.endpoints[target]) if target in inv.endpoints and target not in inv.hosts else None
    for inv in _inventories_here():
        if target in inv.hosts or target == inv.name:
            return None
        if target in inv.endpoints:
            return inv, inv.endpoints[target]
    return None


def _inventories_here() -> Iterator[Inventory]:
    """The inventories in ./inventories/*.py that load (the others are skipped here: `check` names them)."""
    folder = Path.cwd() / "inventories"
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        try:
            yield load(str(path))
        except GpuctlError:
            continue


def _shared_addresses(hosts: dict[str, HostSpec], label: str) -> list[str]:
    """Two hosts reaching one machine (same address and SSH port, or both local) would fight over its
    files and engines: an error unless both say shared_address=True."""
    first: dict[tuple[str, int], str] = {}
    problems = []
    for name, host in hosts.items():
        key = ("this machine", 0) if host.local else ((host.address or "").lower(), host.ssh_port)
        other = first.setdefault(key, name)
        if other != name and not (host.shared_address and hosts[other].shared_address):
            where = "local=True" if host.local else f"{host.address} port {host.ssh_port}"
            problems.append(
                f"{label}: {name}: address: {where} is also host {other}'s (one machine deployed as two "
                "hosts fights itself): fix the address, or set shared_address=True on both"
            )
    return problems


def _label(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)


def _execute(path: Path, label: str) -> dict[str, Any]:
    """Run the inventory file; turn any error in it into one line with file and line number."""
    try:
        source = path.read_text()
    except OSError as exc:
        raise InventoryError([f"{label}: cannot read: {exc.strerror}"]) from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise InventoryError([f"{label}:{exc.lineno}: syntax error: {exc.msg}"]) from None
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": f"gpuctl_inventory_{path.stem}"}
    try:
        exec(code, namespace)  # noqa: S102 - inventories are the user's own Python, like pyinfra's
    except Exception as exc:  # noqa: BLE001 - any error in the user's file becomes one clear line
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        where = f"{label}:{frames[-1].lineno}" if frames else label
        raise InventoryError([f"{where}: {type(exc).__name__}: {exc}"]) from None
    return namespace


def _collect(
    namespace: dict[str, Any], label: str
) -> tuple[dict[str, Partial], dict[str, list[str]], dict[str, Partial | dict]]:
    """Find groups (lists of hosts), host entries and defaults among the module's names."""
    entries: dict[str, Partial] = {}
    groups: dict[str, list[str]] = {}
    defaults: dict[str, Partial | dict] = {}
    problems: list[str] = []
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if key == "defaults" or key.endswith("_defaults"):
            if not (
                isinstance(value, dict) or (isinstance(value, Partial) and value.model is HostSpec and not value.name)
            ):
                problems.append(f"{label}: {key}: must be Defaults(...)")
                continue
            defaults[key] = value
        elif isinstance(value, list | tuple) and any(_is_host(v) for v in value):
            bad = [v for v in value if not _is_host(v)]
            if bad:
                problems.append(f"{label}: group {key}: every item must be Host(...), got {bad[0]!r}")
                continue
            groups[key] = []
            for host in value:
                known = entries.get(host.name)
                if known is not None and known is not host and known.kwargs != host.kwargs:
                    problems.append(
                        f"{label}: {host.name}: defined twice with different settings "
                        f"(define it once and put the same Host in several groups)"
                    )
                entries.setdefault(host.name, host)
                if host.name not in groups[key]:
                    groups[key].append(host.name)
    grouped = {id(host) for key, value in namespace.items() if key in groups for host in value}
    for key, value in namespace.items():
        if _is_host(value) and id(value) not in grouped and not key.startswith("_"):
            problems.append(
                f"{label}: {value.name}: the variable {key} = Host(...) is in no group, so it would not be "
                f"deployed: put it in a list (e.g. hosts = [{key}, ...]) or remove it"
            )
    for key in defaults:
        group = key.removesuffix("_defaults")
        if key != "defaults" and group not in groups:
            problems.append(f"{label}: {key}: there is no group named {group!r}")
    if problems:
        raise InventoryError(problems)
    return entries, groups, defaults


def _is_host(value: Any) -> bool:
    return isinstance(value, Partial) and value.model is HostSpec and value.name is not None


def _merged_data(
    name: str, entry: Partial, groups: dict[str, list[str]], defaults: dict[str, Partial | dict]
) -> dict[str, Any]:
    layers = [defaults.get("defaults")]
    layers += [defaults.get(f"{group}_defaults") for group, members in groups.items() if name in members]
    data: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            data = deep_merge(data, _to_data(layer))
    data = deep_merge(data, entry.to_data())
    data["name"] = name
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge OVERRIDE onto BASE: dicts key by key, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not isinstance(value, WholeValue):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
        if key == "model" and isinstance(value, WholeValue) and "served_model_name" not in override:
            merged.pop("served_model_name", None)  # the host's Model names the engine, not the group's name
    return merged


# ---------------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------------


def describe_errors(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    """One line per validation error: 'field.path: what is wrong' (values of secrets never shown)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if message.startswith("@") and ": " in message:
            field_path, message = message[1:].split(": ", 1)
            path = _join(_display_loc(loc, data), field_path)
        else:
            path = _display_loc(loc, data)
        if error["type"] == "extra_forbidden":
            message = "unknown field" + _suggestion(loc)
        elif error["type"] == "missing":
            message = "is required"
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _join(prefix: str, suffix: str) -> str:
    return f"{prefix}.{suffix}" if prefix else suffix


def _display_loc(loc: list[Any], data: dict[str, Any]) -> str:
    """Render a pydantic location, naming vLLM engines as `vllm` (one) or `vllm[NAME]` (several)."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] == "vllm":
            engines = data.get("vllm")
            if isinstance(engines, list) and len(engines) > 1:
                engine = engines[part] if part < len(engines) else {}
                label = engine.get("name", part) if isinstance(engine, dict) else part
                parts[-1] += f"[{label}]"
            continue
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts)


def _suggestion(loc: list[Any]) -> str:
    """' (did you mean 'x'?)' for an unknown field close to a real one."""
    model: type[BaseModel] | None = HostSpec
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info else None
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
