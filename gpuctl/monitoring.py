"""Monitoring from the inventory: one host runs Prometheus (the distribution's package) and scrapes every
vLLM engine's /metrics through its host's gateway and every host's node exporter; gpuctl's alert rules
come with it (templates/monitoring/).

When an inventory loads, `apply` gives every host the monitoring host's address (`HostSpec.scraper`): it
joins each gateway's `metrics_allow` (so no key is spread around) and each firewall admits the node
exporter's port from it alone. The monitoring host gets the list of what it scrapes
(`HostSpec.scrape_targets`), built from the whole inventory, so adding a host adds its targets on the next
deploy of the monitoring host, whatever `--limit` the deploy of the new host had.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuctl.errors import GpuctlError
from gpuctl.spec import HostSpec, VllmSpec, bracketed
from gpuctl.verify.ollama_api import duration_seconds, full_name

Job = Literal[
    "gpuctl-engines-https",
    "gpuctl-engines-https-public",
    "gpuctl-engines-http",
    "gpuctl-node",
    "gpuctl-dcgm",
    "gpuctl-gateways",
    "gpuctl-ollama-models",
]
"""gpuctl-engines-https trusts the gateways' own CAs (private or provided); -public the system's CAs (ACME,
or a provided certificate from a public CA): Prometheus' ca_file replaces the system's trust, it does not add."""


@dataclass(frozen=True)
class ScrapeTarget:
    job: Job
    host: str
    target: str
    """HOST:PORT as Prometheus connects to it."""
    metrics_path: str = "/metrics"
    engine: str | None = None
    trust: str | None = None
    """What its TLS certificate chains to: "private-ca" (the inventory's), a provided ca_file's path, or None
    (a public CA, or plain http)."""
    model: str | None = None
    """gpuctl-ollama-models: the model whose presence in /api/ps is probed, by the name applications send."""
    keep_alive: str | None = None
    """gpuctl-ollama-models: the host's OLLAMA_KEEP_ALIVE, as the spec gives it."""
    names: tuple[str, ...] = ()
    """gpuctl-ollama-models: every name the model may show in /api/ps (its aliases and its tag: it shows
    the name the request that loaded it used)."""
    budgets: tuple[tuple[int, float], ...] = ()
    """gpuctl-dcgm: (GPU index, share of its memory the engines may use) (gpu_memory_budgets)."""


def scraper_address(monitor: HostSpec) -> str | None:
    assert monitor.monitoring is not None
    return monitor.monitoring.scrape_from or monitor.address


def apply(hosts: dict[str, HostSpec], label: str) -> list[str]:
    """Wire the inventory's monitoring host into every host (see the module's docstring); its problems."""
    monitors = [h for h in hosts.values() if h.monitoring is not None]
    if not monitors:
        return []
    if len(monitors) > 1:
        names = ", ".join(h.name for h in monitors)
        return [f"{label}: monitoring is set on {names}: one host per inventory runs Prometheus"]
    monitor = monitors[0]
    source = scraper_address(monitor)
    try:
        VllmSpec._ip_address(source or "")
    except ValueError:
        return [
            f"{label}: {monitor.name}: monitoring.scrape_from: the other hosts admit its scrapes by IP address, "
            f"and its address is {source!r}: give scrape_from='IP' (the address its scrapes come from)"
        ]
    assert source is not None
    for host in hosts.values():
        if host.address is None or host.install == "user":  # nothing reaches it, or nothing runs there as root
            continue
        host._scraper = source
        host._node_exporter_port = monitor.monitoring.node_exporter_port
        if host.needs_nvidia():
            host._dcgm_exporter_port = monitor.monitoring.dcgm_exporter_port
        # The monitoring host scrapes its own gateway from its own address, whatever scrape_from says.
        admitted = [source, *([monitor.address] if host is monitor and monitor.address else [])]
        if host.gateway is not None:
            new = [a for a in dict.fromkeys(admitted) if a not in host.gateway.metrics_allow]
            host.gateway.metrics_allow = [*host.gateway.metrics_allow, *new]
    monitor._scrape_targets = [t for host in hosts.values() for t in targets_of(host, monitor)]
    return []


def targets_of(host: HostSpec, monitor: HostSpec) -> list[ScrapeTarget]:
    """What Prometheus scrapes on HOST: its node exporter and each vLLM engine (through the gateway, or
    directly when the engine is bound beyond loopback without one). Ollama has no /metrics."""
    assert monitor.monitoring is not None
    if host.address is None or host.install == "user":  # unreachable, or no exporter (it would need root)
        return []
    node = "127.0.0.1" if host is monitor else host.address
    port = monitor.monitoring.node_exporter_port
    found = [ScrapeTarget("gpuctl-node", host.name, f"{bracketed(node)}:{port}")]
    if host.dcgm_exporter_port is not None:
        where = f"{bracketed(node)}:{host.dcgm_exporter_port}"
        found.append(ScrapeTarget("gpuctl-dcgm", host.name, where, budgets=tuple(gpu_memory_budgets(host))))
    if host.gateway is not None:  # probed by the blackbox exporter: up, and its certificate's expiry
        name = bracketed(host.gateway.domain or host.address)
        trust = {"private-ca": "private-ca", "provided": host.gateway.ca_file}.get(host.gateway.tls)
        found.append(ScrapeTarget("gpuctl-gateways", host.name, f"https://{name}:{host.gateway.port}/", trust=trust))
    for engine in host.vllm:
        if host.gateway is not None:
            # Even from the monitoring host itself: its gateway admits scrapes by the address they come from.
            name = host.gateway.domain or host.address
            where = f"{bracketed(name)}:{host.gateway.port}"
            path = f"{host.gateway_prefix(engine)}/metrics"
            trust = {"private-ca": "private-ca", "provided": host.gateway.ca_file}.get(host.gateway.tls)
            job: Job = "gpuctl-engines-https" if trust else "gpuctl-engines-https-public"
            found.append(ScrapeTarget(job, host.name, where, path, engine.label, trust))
        elif engine in host.public_engines():
            target = f"{bracketed(host.address)}:{engine.port}"
            found.append(ScrapeTarget("gpuctl-engines-http", host.name, target, engine=engine.label))
    return found + ollama_models_of(host)


def ollama_models_of(host: HostSpec) -> list[ScrapeTarget]:
    """Each model of HOST's Ollama, probed in /api/ps (through the gateway, which admits the scraper there)
    so the rules can tell a model unloaded sooner than OLLAMA_KEEP_ALIVE says. Ollama has no /metrics."""
    ollama = host.ollama
    if ollama is None or host.address is None or duration_seconds(ollama.keep_alive) == 0:
        return []  # keep-alive 0: unloading after every request is what was asked for
    if host.gateway is not None:
        base = f"https://{bracketed(host.gateway.domain or host.address)}:{host.gateway.port}"
        trust = {"private-ca": "private-ca", "provided": host.gateway.ca_file}.get(host.gateway.tls)
        url = f"{base}{host.gateway_prefix(ollama)}/api/ps"
    elif ollama in host.public_engines():
        url, trust = f"http://{bracketed(host.address)}:{ollama.port}/api/ps", None
    else:
        return []
    found = []
    for tag in ollama.models:
        aliases = [a for a, t in ollama.aliases.items() if full_name(t) == full_name(tag)]
        names = tuple(dict.fromkeys([*(full_name(a) for a in aliases), full_name(tag)]))
        label = aliases[0] if aliases else full_name(tag)  # what applications send
        found.append(
            ScrapeTarget(
                "gpuctl-ollama-models",
                host.name,
                url,
                engine=ollama.label,
                trust=trust,
                model=label,
                keep_alive=ollama.keep_alive,
                names=names,
            )
        )
    return found


def gpu_memory_budgets(host: HostSpec) -> list[tuple[int, float]]:
    """(GPU index, share of its memory the engines may use) for each of HOST's GPUs that only vLLM uses: the
    sum of their gpu_memory_utilization (0 for a GPU no engine uses). A GPU Ollama may use has no budget:
    Ollama takes what each loaded model needs, so nothing tells its memory from another process'."""
    if host.gpus is None:
        return []
    ollama_gpus: set[int] = set()
    if host.ollama is not None:
        ollama_gpus = set(range(host.gpus.count)) if host.ollama.gpus is None else set(host.ollama.gpus)
    budgets = []
    for gpu in (g for g in range(host.gpus.count) if g not in ollama_gpus):
        share = sum(e.gpu_memory_utilization for e in host.vllm if e.device == "gpu" and gpu in e.gpu_indices())
        budgets.append((gpu, round(share, 4)))
    return budgets


def keep_alive_windows(targets: list[ScrapeTarget], scrape_interval: str) -> list[tuple[str, str | None]]:
    """(OLLAMA_KEEP_ALIVE, Prometheus range or None for forever) for each keep-alive the probed models have.
    A model that was loaded and unloaded within the range was unloaded sooner than its keep-alive: the
    range is the keep-alive less two scrapes, so a model that stayed its full keep-alive never matches."""
    interval = prometheus_seconds(scrape_interval)
    windows = []
    for keep_alive in dict.fromkeys(t.keep_alive for t in targets if t.keep_alive is not None):
        seconds = duration_seconds(keep_alive)
        if seconds < 0:
            windows.append((keep_alive, None))
        elif seconds > 2 * interval:
            windows.append((keep_alive, f"{int(seconds - 2 * interval)}s"))
    return windows


def prometheus_seconds(duration: str) -> float:
    """A Prometheus duration (15s, 1m30s, 2h, 1d) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


def trust_bundle(targets: list[ScrapeTarget], ca_pem: str | None, base_dir: Path) -> str:
    """The CAs Prometheus needs to trust the gateways it scrapes: the inventory's private CA (CA_PEM) and each
    provided certificate's ca_file; ACME certificates chain to a public CA the system trusts."""
    parts: list[str] = []
    for trust in dict.fromkeys(t.trust for t in targets if t.trust is not None):
        if trust == "private-ca":
            if ca_pem is None:
                raise GpuctlError("monitoring: the gateways' private CA is not in the keystore yet")
            parts.append(ca_pem)
            continue
        path = Path(trust).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            parts.append(path.read_text())
        except OSError as exc:
            raise GpuctlError(f"monitoring: a gateway's ca_file: cannot read {path}: {exc.strerror}") from None
    return "".join(dict.fromkeys(p.strip() + "\n" for p in parts))
