"""Render every file a host will receive from its spec, through the jinja2 templates in templates/.

Rendering is pure: the same spec (and the same secret values) gives the same bytes. `gpuctl render`
and `gpuctl deploy` call the same function; render passes no secrets, so placeholders stand where
the secret values will go.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import jinja2

from gpuctl import outside
from gpuctl.errors import GpuctlError
from gpuctl.host_layout import (
    ACME_WEBROOT,
    BLACKBOX_CONFIG,
    BLACKBOX_DEFAULTS,
    BLACKBOX_LISTEN,
    DCGM_EXPORTER_CONTAINER,
    DCGM_EXPORTER_UNIT_NAME,
    DOCKER_BIN,
    FIREWALL_RULES,
    FIREWALL_UNIT,
    GATEWAY_SECRETS,
    GATEWAY_TLS_CERT,
    GATEWAY_TLS_KEY,
    HEAL_ENGINES,
    HEAL_SERVICE,
    HEAL_STATE_DIR,
    HEAL_TIMER,
    HF_CACHE_DIR,
    NGINX_CONF,
    NODE_EXPORTER_DEFAULTS,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DEFAULTS,
    PROMETHEUS_RULES,
    PROMETHEUS_TRUST,
    WAIT_HEALTHY,
    endpoint_dir,
    endpoint_site,
    endpoint_tls,
    unit_path,
)
from gpuctl.monitoring import ScrapeTarget, keep_alive_windows
from gpuctl.spec import (
    API_KEY_RE,
    CONTAINER_PORT,
    OLLAMA_ADMIN_ROUTES,
    EndpointSpec,
    HostSpec,
    OllamaSpec,
    SecretRef,
    VllmSpec,
    bracketed,
    is_loopback,
    on_host_address,
)

if TYPE_CHECKING:
    from gpuctl.keystore import ServerCert  # cryptography: imported only where certificates are made

STOP_GRACE_S = 90
HEALTH_INTERVAL_S = 5
"""Docker probes an engine's /health this often: a restart is seen healthy at most this long after the
engine is (the unit waits for it), and a failing engine is unhealthy after three failed probes."""

SecretResolver = Callable[[SecretRef], str]
Draining = Mapping[str, frozenset[str]]
"""By fleet endpoint name: the hosts a rolling deploy marks down in it while it changes them (gpuctl.drain)."""


@dataclass(frozen=True)
class GatewayMaterial:
    """The gateway's secrets for one host, resolved before any connection: the clients' bearer key
    and (unless ACME) the TLS certificate chain and key."""

    api_key: str
    cert: ServerCert | None
    endpoint_keys: tuple[str, ...] = ()
    """The keys of the fleet endpoints' fronts this host serves behind (accepted besides its own)."""


@dataclass(frozen=True)
class EndpointMaterial:
    """A fleet endpoint's secrets, resolved before any connection: the clients' key, the key the front sends
    the hosts, its certificate (unless ACME) and the CA it checks the hosts' gateways by."""

    api_key: str
    upstream_key: str
    cert: ServerCert | None
    upstream_ca: str


@dataclass(frozen=True)
class RenderedFile:
    """One file for a host: where it goes, what it holds, who owns it."""

    path: PurePosixPath
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False

    @property
    def mode_str(self) -> str:
        return f"{self.mode:04o}"


def by_path(*files: RenderedFile | None) -> list[RenderedFile]:
    """FILES in the order deploy puts them (by path), without the absent ones."""
    return sorted((f for f in files if f is not None), key=lambda f: str(f.path))


@dataclass(frozen=True)
class VllmFiles:
    """One vLLM engine's files: compose file, 0600 env file, systemd unit."""

    compose: RenderedFile
    env: RenderedFile
    unit: RenderedFile

    def all(self) -> list[RenderedFile]:
        return by_path(self.compose, self.env, self.unit)


@dataclass(frozen=True)
class HealingFiles:
    """The script that restarts unhealthy vLLM engines, and the timer and service that run it."""

    script: RenderedFile
    service: RenderedFile
    timer: RenderedFile

    def all(self) -> list[RenderedFile]:
        return by_path(self.script, self.service, self.timer)


@dataclass(frozen=True)
class OllamaFiles:
    """Ollama's unit (as its installer writes it) and gpuctl's drop-in with the settings."""

    unit: RenderedFile
    dropin: RenderedFile

    def all(self) -> list[RenderedFile]:
        return by_path(self.unit, self.dropin)


@dataclass(frozen=True)
class MonitoringFiles:
    """Prometheus on the monitoring host: its config, gpuctl's alert rules, the CAs of the gateways it
    scrapes, and the service's arguments (listen address, retention)."""

    config: RenderedFile
    rules: RenderedFile
    trust: RenderedFile
    defaults: RenderedFile
    blackbox: RenderedFile
    blackbox_defaults: RenderedFile

    def all(self) -> list[RenderedFile]:
        return by_path(self.config, self.rules, self.trust, self.defaults, self.blackbox, self.blackbox_defaults)


@dataclass(frozen=True)
class GatewayFiles:
    """nginx's site (no secrets), its 0600 secrets file, and the certificate pair unless ACME makes it."""

    site: RenderedFile
    secrets: RenderedFile
    tls_cert: RenderedFile | None = None
    tls_key: RenderedFile | None = None

    def all(self) -> list[RenderedFile]:
        return by_path(self.site, self.secrets, self.tls_cert, self.tls_key)


@dataclass(frozen=True)
class EndpointFiles:
    """A fleet endpoint on its front host: nginx's site, its 0600 keys, its certificate pair, the hosts' CA."""

    site: RenderedFile
    servers: RenderedFile
    secrets: RenderedFile
    upstream_ca: RenderedFile
    tls_cert: RenderedFile | None = None
    """None with ACME: deploy links certbot's files there."""
    tls_key: RenderedFile | None = None

    def all(self) -> list[RenderedFile]:
        return by_path(self.site, self.servers, self.secrets, self.upstream_ca, self.tls_cert, self.tls_key)


@dataclass(frozen=True)
class FirewallFiles:
    """The nftables ruleset and the oneshot unit that loads it at boot."""

    rules: RenderedFile
    unit: RenderedFile

    def all(self) -> list[RenderedFile]:
        return by_path(self.rules, self.unit)


@dataclass(frozen=True)
class HostFiles:
    """Every file one host receives, by what it is for: the contract between render and deploy.

    Iterating gives every file sorted by path (what `gpuctl render` writes and lists).
    """

    vllm: dict[str, VllmFiles] = field(default_factory=dict)
    """By engine name."""
    wait_healthy: RenderedFile | None = None
    """Shared by every vLLM unit (ExecStartPost)."""
    healing: HealingFiles | None = None
    """Shared by every vLLM engine: restarts one whose container is unhealthy."""
    ollama: OllamaFiles | None = None
    gateway: GatewayFiles | None = None
    firewall: FirewallFiles | None = None
    monitoring: MonitoringFiles | None = None
    node_exporter: RenderedFile | None = None
    """On every host of an inventory with a monitoring host: the node exporter's arguments."""
    dcgm_exporter: RenderedFile | None = None
    """On every GPU host of an inventory with a monitoring host: the unit running NVIDIA's DCGM exporter."""
    endpoints: dict[str, EndpointFiles] = field(default_factory=dict)
    """On a front host: each fleet endpoint it runs, by name."""

    def components(self) -> Iterator[tuple[str, RenderedFile]]:
        """(component label, file) pairs: "vllm:NAME", "vllm", "ollama", "gateway", "firewall"."""
        for name, engine in self.vllm.items():
            yield from ((f"vllm:{name}", f) for f in engine.all())
        if self.wait_healthy is not None:
            yield "vllm", self.wait_healthy
        if self.healing is not None:
            yield from (("vllm", f) for f in self.healing.all())
        groups = (("ollama", self.ollama), ("gateway", self.gateway), ("firewall", self.firewall))
        for label, group in (*groups, ("monitoring", self.monitoring)):
            if group is not None:
                yield from ((label, f) for f in group.all())
        for extra in (self.node_exporter, self.dcgm_exporter):
            if extra is not None:
                yield "monitoring", extra
        for name, endpoint in self.endpoints.items():
            yield from ((f"endpoint:{name}", f) for f in endpoint.all())

    def __iter__(self) -> Iterator[RenderedFile]:
        return iter(sorted((f for _, f in self.components()), key=lambda f: str(f.path)))

    def __len__(self) -> int:
        return sum(1 for _ in self.components())


def placeholder(ref: SecretRef) -> str:
    """What `gpuctl render` writes where a secret value will go."""
    return f"<secret {ref.describe()}>"


def templates_dir() -> Path:
    """The templates shipped with gpuctl (inside the wheel, or templates/ in a checkout)."""
    return Path(str(resources.files("gpuctl.templates")))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["tojson"] = compose_json
    env.filters["systemd_quote"] = systemd_quote
    env.filters["systemd_escape"] = systemd_escape
    return env


def compose_json(value: object) -> str:
    """A YAML-safe JSON value for a compose file, with `$` escaped against interpolation."""
    return json.dumps(value).replace("$", "$$")


def systemd_quote(value: str) -> str:
    """Quote one word for a systemd directive such as Environment=."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def systemd_escape(value: str) -> str:
    """Escape specifiers in free text (Description=)."""
    return value.replace("%", "%%")


def _template(name: str, **context: object) -> str:
    return _environment().get_template(name).render(**context)


def render_host(
    host: HostSpec,
    resolve: SecretResolver | None = None,
    gateway: GatewayMaterial | None = None,
    trust: str | None = None,
    endpoints: dict[str, EndpointMaterial] | None = None,
    draining: Draining | None = None,
) -> HostFiles:
    """Every file HOST receives. Without RESOLVE (and GATEWAY), secrets become placeholders. TRUST: the CAs of
    the gateways a monitoring host scrapes (gpuctl.monitoring.trust_bundle)."""
    resolve = resolve or placeholder
    return HostFiles(
        vllm={engine.name: render_vllm(host, engine, resolve) for engine in host.vllm},
        wait_healthy=(
            RenderedFile(WAIT_HEALTHY, (templates_dir() / "vllm" / "wait-healthy.sh").read_text(), 0o755)
            if host.vllm
            else None
        ),
        healing=render_healing(host) if host.vllm else None,
        ollama=render_ollama(host, host.ollama) if host.ollama is not None else None,
        gateway=render_gateway(host, resolve, gateway) if host.gateway is not None else None,
        firewall=render_firewall(host) if host.firewall_enabled() else None,
        monitoring=render_monitoring(host, trust or "") if host.monitoring is not None else None,
        node_exporter=(
            RenderedFile(NODE_EXPORTER_DEFAULTS, _template("monitoring/node-exporter.default.j2", host=host))
            if host.scraper is not None
            else None
        ),
        dcgm_exporter=render_dcgm_exporter(host) if host.dcgm_exporter_port is not None else None,
        endpoints={
            e.name: render_endpoint(host, e, (endpoints or {}).get(e.name), (draining or {}).get(e.name, frozenset()))
            for e in host.endpoints
        },
    )


def endpoint_servers(host: HostSpec, endpoint: EndpointSpec, draining: frozenset[str] = frozenset()) -> RenderedFile:
    """The hosts of ENDPOINT's upstream on its front HOST; those in DRAINING marked `down` (new requests go to
    the others; open streams finish), as a rolling deploy changes them (gpuctl.drain)."""
    lines = [
        f"server {address} max_fails=1 fail_timeout={endpoint.fail_timeout_s}s{' down' if name in draining else ''};"
        f"  # {name}"
        for name, address in host.endpoint_members[endpoint.name].items()
    ]
    header = f"# The hosts of fleet endpoint {endpoint.name} (managed by gpuctl: a rolling deploy marks some down)\n"
    return RenderedFile(endpoint_dir(endpoint.name) / "servers.conf", header + "\n".join(lines) + "\n")


def render_endpoint(
    host: HostSpec, endpoint: EndpointSpec, material: EndpointMaterial | None, draining: frozenset[str] = frozenset()
) -> EndpointFiles:
    """A fleet endpoint on its front HOST (gpuctl.endpoints): without MATERIAL, secrets are placeholders."""
    folder = endpoint_dir(endpoint.name)
    servers = endpoint_servers(host, endpoint, draining)
    model = {"id": endpoint.model, "object": "model", "created": 0, "owned_by": f"gpuctl endpoint {endpoint.name}"}
    context = {
        "host": host,
        "endpoint": endpoint,
        "ident": endpoint.name.replace("-", "_"),
        "servers_conf": servers.path,
        "secrets_conf": folder / "secrets.conf",
        "tls_cert": endpoint_tls(endpoint.name)[0],
        "tls_key": endpoint_tls(endpoint.name)[1],
        "acme_webroot": ACME_WEBROOT,
        "upstream_ca": folder / "hosts-ca.pem",
        "models_json": json.dumps({"object": "list", "data": [model]}),
        "scheme_pattern": BEARER_PATTERN,
        "key_pattern": key_pattern(material.api_key) if material else "<secret endpoint key>",
        "upstream_key": material.upstream_key if material else "<secret key for the hosts>",
    }
    cert = material.cert if material is not None else None
    files = EndpointFiles(
        site=RenderedFile(endpoint_site(endpoint.name), _template("endpoint/endpoint.conf.j2", **context)),
        servers=servers,
        secrets=RenderedFile(
            folder / "secrets.conf", _template("endpoint/endpoint-secrets.conf.j2", **context), 0o600, secret=True
        ),
        upstream_ca=RenderedFile(context["upstream_ca"], material.upstream_ca if material else "<gpuctl's CA>\n"),
    )
    if endpoint.tls == "acme":
        return files
    return replace(
        files,
        tls_cert=RenderedFile(context["tls_cert"], cert.chain_pem if cert else "<certificate>\n"),
        tls_key=RenderedFile(context["tls_key"], cert.key_pem if cert else "<secret key>\n", 0o600, secret=True),
    )


def render_dcgm_exporter(host: HostSpec) -> RenderedFile:
    """The unit that runs NVIDIA's DCGM exporter container (pinned image) on the host's network, so the
    firewall's input rules apply to its port as to the node exporter's."""
    context = {
        "host": host,
        "image": outside.DCGM_EXPORTER_IMAGE,
        "container": DCGM_EXPORTER_CONTAINER,
        "docker": DOCKER_BIN,
    }
    unit = _template("monitoring/gpuctl-dcgm-exporter.service.j2", **context)
    return RenderedFile(unit_path(DCGM_EXPORTER_UNIT_NAME), unit)


def ollama_probes(targets: list[ScrapeTarget], scrape_interval: str) -> dict[str, object]:
    """The blackbox modules that look for each Ollama model in /api/ps (one per model and trust), the probes
    that use them, and the keep-alive windows of the OllamaModelUnloaded rules."""
    probes, modules = [], {}
    for target in (t for t in targets if t.job == "gpuctl-ollama-models"):
        key = (target.names, target.trust is not None)
        if key not in modules:
            name = f"gpuctl_ollama_model_{len(modules) + 1}"
            body = '"name":\\s*"(' + "|".join(re.escape(n) for n in target.names) + ')"'
            modules[key] = {"name": name, "model": target.model, "body": body, "private": target.trust is not None}
        probes.append({"target": target, "module": modules[key]["name"]})
    windows = keep_alive_windows([p["target"] for p in probes], scrape_interval)
    return {"ollama_probes": probes, "ollama_modules": list(modules.values()), "keep_alive_windows": windows}


def render_monitoring(host: HostSpec, trust: str) -> MonitoringFiles:
    """Prometheus' config from the inventory's scrape targets (gpuctl.monitoring), rules and arguments."""

    monitoring = host.monitoring
    assert monitoring is not None
    targets: list[ScrapeTarget] = host.scrape_targets
    gateways = [t for t in targets if t.job == "gpuctl-gateways"]
    jobs = []
    names = ("gpuctl-engines-https", "gpuctl-engines-https-public", "gpuctl-engines-http", "gpuctl-node", "gpuctl-dcgm")
    for name in names:
        members = [t for t in targets if t.job == name]
        if members:
            ca_file = PROMETHEUS_TRUST if name == "gpuctl-engines-https" and trust else None
            https = name.startswith("gpuctl-engines-https")
            jobs.append({"name": name, "https": https, "ca_file": ca_file, "targets": members})
    listen = f"{bracketed(monitoring.bind)}:{monitoring.port}"
    context = {
        "host": host,
        "monitoring": monitoring,
        "rules_file": PROMETHEUS_RULES,
        "jobs": jobs,
        "self_target": on_host_address(monitoring.bind, monitoring.port),
        "listen": listen,
        "gateways": gateways,
        "blackbox_listen": BLACKBOX_LISTEN,
        "blackbox_config": BLACKBOX_CONFIG,
        "trust_file": PROMETHEUS_TRUST if trust else None,
        **ollama_probes(targets, monitoring.scrape_interval),
        "gpu_budgets": [(t.host, gpu, share) for t in targets if t.job == "gpuctl-dcgm" for gpu, share in t.budgets],
    }
    return MonitoringFiles(
        config=RenderedFile(PROMETHEUS_CONFIG, _template("monitoring/prometheus.yml.j2", **context)),
        rules=RenderedFile(PROMETHEUS_RULES, _template("monitoring/gpuctl-alerts.yml.j2", **context)),
        trust=RenderedFile(PROMETHEUS_TRUST, trust or "# no private CA: every gateway scraped has a public one\n"),
        defaults=RenderedFile(PROMETHEUS_DEFAULTS, _template("monitoring/prometheus.default.j2", **context)),
        blackbox=RenderedFile(BLACKBOX_CONFIG, _template("monitoring/blackbox.yml.j2", **context)),
        blackbox_defaults=RenderedFile(BLACKBOX_DEFAULTS, _template("monitoring/blackbox.default.j2", **context)),
    )


def render_vllm(host: HostSpec, engine: VllmSpec, resolve: SecretResolver) -> VllmFiles:
    """The compose file, the 0600 env file and the systemd unit of one vLLM engine."""
    compose_file = engine.config_dir / "compose.yaml"
    context = {
        "host": host,
        "engine": engine,
        "published_port": f"{bracketed(engine.bind)}:{engine.port}:{CONTAINER_PORT}",
        "hf_cache_dir": f"{HF_CACHE_DIR}:/root/.cache/huggingface",
        "vllm_cache_dir": f"{engine.cache_dir}/cache:/root/.cache/vllm",
        "healthcheck": [
            "CMD",
            "python3",
            "-c",
            f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/health', timeout=5)",
        ],
        "gpu_ids": [str(i) for i in engine.gpu_indices()],
        "cdi_devices": [f"nvidia.com/gpu={i}" for i in engine.gpu_indices()],
        "stop_grace_s": STOP_GRACE_S,
        "health_interval_s": HEALTH_INTERVAL_S,
        "compose": f"{DOCKER_BIN} compose --project-name {engine.project} --file {compose_file}",
        "wait_healthy": WAIT_HEALTHY,
        "secret_env": {key: env_file_value(key, resolve(ref)) for key, ref in engine.secret_env().items()},
    }
    return VllmFiles(
        compose=RenderedFile(compose_file, _template("vllm/compose.yaml.j2", **context)),
        env=RenderedFile(
            engine.config_dir / "vllm.env",
            _template("vllm/vllm.env.j2", **context),
            0o600,
            secret=bool(engine.secret_env()),
        ),
        unit=RenderedFile(unit_path(engine.unit_name), _template("vllm/vllm.service.j2", **context)),
    )


HEAL_INTERVAL_S = 30


def render_healing(host: HostSpec) -> HealingFiles:
    """gpuctl-heal.timer runs heal-engines every HEAL_INTERVAL_S for all of HOST's vLLM engines."""
    context = {"host": host, "heal_engines": HEAL_ENGINES, "state_dir": HEAL_STATE_DIR, "interval_s": HEAL_INTERVAL_S}
    return HealingFiles(
        script=RenderedFile(HEAL_ENGINES, (templates_dir() / "vllm" / "heal-engines.sh").read_text(), 0o755),
        service=RenderedFile(HEAL_SERVICE, _template("vllm/gpuctl-heal.service.j2", **context)),
        timer=RenderedFile(HEAL_TIMER, _template("vllm/gpuctl-heal.timer.j2", **context)),
    )


def env_file_value(key: str, value: str) -> str:
    """Quote a value for a compose env file: single quotes keep it literal (no interpolation)."""
    if "'" in value or "\n" in value or "\r" in value:
        raise GpuctlError(f"secret for {key}: contains a quote or a line break, which an env file cannot hold")
    return f"'{value}'"


def render_ollama(host: HostSpec, ollama: OllamaSpec) -> OllamaFiles:
    """Ollama's own unit (as its installer writes it) and gpuctl's drop-in with the settings."""
    context = {"host": host, "ollama": ollama}
    owner = "~" if ollama.layout.user_level else "root"  # ~: the deploying user, as in the paths
    return OllamaFiles(
        unit=RenderedFile(
            ollama.layout.unit, _template("ollama/ollama.service.j2", **context), owner=owner, group=owner
        ),
        dropin=RenderedFile(
            ollama.layout.dropin, _template("ollama/override.conf.j2", **context), owner=owner, group=owner
        ),
    )


def gateway_upstreams(host: HostSpec, resolve: SecretResolver) -> list[dict[str, object]]:
    """One upstream per engine: id, loopback port, gateway prefix and the Authorization it gets."""
    upstreams = []
    for engine in host.engines():
        is_vllm = isinstance(engine, VllmSpec)
        ident = engine.label.replace(":", "_").replace("-", "_")
        key = resolve(engine.api_key) if is_vllm and engine.api_key is not None else None
        if key is not None and ('"' in key or "\\" in key or "$" in key or not key.isprintable()):
            raise GpuctlError(
                f"vllm[{engine.name}].api_key: contains a quote, backslash, $ or control character, "
                "which the gateway's nginx configuration cannot hold"
            )
        upstreams.append(
            {
                "id": ident,
                "server": on_host_address(engine.bind, engine.port),
                "label": engine.label,
                "prefix": host.gateway_prefix(engine),
                "authorization": f"Bearer {key}" if key else "",
                "admin_blocked": not is_vllm and not (host.gateway and host.gateway.allow_ollama_admin),
                "loopback": is_loopback(engine.bind),
            }
        )
    return upstreams


BEARER_PATTERN = "[Bb][Ee][Aa][Rr][Ee][Rr]"
"""The auth scheme "Bearer" in any case (RFC 7235 §2.1: the scheme is case-insensitive; the key is not)."""


def key_pattern(key: str) -> str:
    """KEY as a case-sensitive nginx regex that matches exactly it (nginx's plain map strings ignore case)."""
    if not API_KEY_RE.match(key):
        raise GpuctlError("gateway.api_key: must be 20-512 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return "".join(f"[{c}]" if c in ".+" else c for c in key)


def render_gateway(host: HostSpec, resolve: SecretResolver, material: GatewayMaterial | None) -> GatewayFiles:
    """nginx's site (0644, no secrets), its secrets file (0600) and, unless ACME, the certificate."""
    gateway = host.gateway
    assert gateway is not None
    upstreams = gateway_upstreams(host, resolve)
    routes = [
        {
            "prefix": u["prefix"],
            "upstream": u["id"],
            "host": u["server"],
            "admin_blocked": u["admin_blocked"],
        }
        for u in upstreams
    ]
    routes.sort(key=lambda r: (r["prefix"] == "", r["prefix"]))
    if material is not None:
        api_key_pattern = key_pattern(material.api_key)
    else:
        api_key_pattern = f"<secret gateway key: {gateway.api_key.describe() if gateway.api_key else 'generated'}>"
    context = {
        "host": host,
        "gateway": gateway,
        "upstreams": upstreams,
        "routes": routes,
        "secrets_conf": GATEWAY_SECRETS,
        # With ACME these two are links that deploy points at certbot's files (a bootstrap certificate first).
        "tls_cert": GATEWAY_TLS_CERT,
        "tls_key": GATEWAY_TLS_KEY,
        "acme_webroot": ACME_WEBROOT,
        "key_pattern": api_key_pattern,
        "endpoint_key_patterns": [key_pattern(k) for k in material.endpoint_keys] if material else [],
        "scheme_pattern": BEARER_PATTERN,
        "admin_routes": "|".join(OLLAMA_ADMIN_ROUTES),
    }
    site = RenderedFile(NGINX_CONF, _template("gateway/gpuctl-gateway.conf.j2", **context))
    secrets = RenderedFile(GATEWAY_SECRETS, _template("gateway/secrets.conf.j2", **context), 0o600, secret=True)
    if gateway.tls == "acme":
        return GatewayFiles(site, secrets)
    cert = material.cert if material is not None else None
    chain = cert.chain_pem if cert else f"<certificate ({gateway.tls})>\n"
    key = cert.key_pem if cert else f"<secret certificate key ({gateway.tls})>\n"
    return GatewayFiles(
        site, secrets, RenderedFile(GATEWAY_TLS_CERT, chain), RenderedFile(GATEWAY_TLS_KEY, key, 0o600, secret=True)
    )


def firewall_ports(host: HostSpec) -> list[int]:
    """TCP ports the firewall opens to everyone: SSH, the gateway (and 80 for ACME), listed ports,
    and engines bound beyond loopback by an explicit unsafe_public_bind."""
    ports = {host.ssh_port, *host.firewall.allow_tcp, *(e.port for e in host.public_engines())}
    if host.gateway is not None:
        ports.add(host.gateway.port)
        if host.gateway.tls == "acme":
            ports.add(80)
    ports |= {endpoint.port for endpoint in host.endpoints}
    ports |= {80 for endpoint in host.endpoints if endpoint.tls == "acme"}
    return sorted(ports)


def scraper_rule(host: HostSpec) -> dict[str, object] | None:
    """The monitoring host may reach this host's node exporter (no one else)."""
    if host.scraper is None or host.monitoring is not None:
        return None
    family = "ip6" if ipaddress.ip_address(host.scraper).version == 6 else "ip"
    ports = [host.node_exporter_port, *([host.dcgm_exporter_port] if host.dcgm_exporter_port else [])]
    return {"family": family, "address": host.scraper, "ports": ports}


def render_firewall(host: HostSpec) -> FirewallFiles:
    """The nftables ruleset and the oneshot unit that loads it at boot."""
    nets = [ipaddress.ip_network(n, strict=False) for n in host.firewall.allow_from]
    context = {
        "host": host,
        "open_tcp": firewall_ports(host),
        "ruleset": FIREWALL_RULES,
        "public_ports": sorted({e.port for e in host.public_engines() if isinstance(e, VllmSpec)}),
        "allow_v4": [str(n) for n in nets if n.version == 4],
        "allow_v6": [str(n) for n in nets if n.version == 6],
        "scraper": scraper_rule(host),
    }
    return FirewallFiles(
        rules=RenderedFile(FIREWALL_RULES, _template("firewall/firewall.nft.j2", **context)),
        unit=RenderedFile(FIREWALL_UNIT, _template("firewall/gpuctl-firewall.service.j2", **context)),
    )


def write_hosts(hosts: list[HostSpec], out_dir: Path) -> dict[str, list[dict[str, str]]]:
    """`gpuctl render`: each host's files under OUT_DIR/HOST/ (secrets as placeholders); what was written."""
    report: dict[str, list[dict[str, str]]] = {}
    for host in hosts:
        files = render_host(host)
        try:
            write_tree(files, out_dir / host.name)
        except OSError as exc:
            raise GpuctlError(f"--out {out_dir}: cannot write: {exc.strerror}") from None
        report[host.name] = [{"path": str(f.path), "mode": f.mode_str, "owner": f.owner} for f in files]
    return report


def write_tree(files: HostFiles, root: Path) -> list[Path]:
    """Write rendered files under ROOT (ROOT/etc/…), with their modes, plus a manifest of owners."""
    written = []
    for item in files:
        target = root / str(item.path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content)
        target.chmod(item.mode)
        written.append(target)
    manifest = [
        {"path": str(f.path), "mode": f.mode_str, "owner": f.owner, "group": f.group, "component": component}
        for component, f in sorted(files.components(), key=lambda pair: str(pair[1].path))
    ]
    (root / "gpuctl-files.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return written
