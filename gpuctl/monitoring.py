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

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuctl.errors import GpuctlError
from gpuctl.spec import HostSpec, VllmSpec, bracketed

Job = Literal[
    "gpuctl-engines-https", "gpuctl-engines-https-public", "gpuctl-engines-http", "gpuctl-node", "gpuctl-gateways"
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
        if host.address is None:  # a local host without an address: nothing reaches it to scrape
            continue
        host._scraper = source
        host._node_exporter_port = monitor.monitoring.node_exporter_port
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
    if host.address is None:  # a local (laptop) host without an address: nothing reachable from elsewhere
        return []
    node = "127.0.0.1" if host is monitor else host.address
    port = monitor.monitoring.node_exporter_port
    found = [ScrapeTarget("gpuctl-node", host.name, f"{bracketed(node)}:{port}")]
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
    return found


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
