"""Render every file a host will receive from its spec, through the jinja2 templates in templates/.

Rendering is pure: the same spec (and the same secret values) gives the same bytes. `gpuctl render`
and `gpuctl deploy` call the same function; render passes no secrets, so placeholders stand where
the secret values will go.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import jinja2

from gpuctl.errors import GpuctlError
from gpuctl.spec import (
    API_KEY_RE,
    CONTAINER_PORT,
    OLLAMA_ADMIN_ROUTES,
    HostSpec,
    OllamaSpec,
    SecretRef,
    VllmSpec,
    is_loopback,
)

if TYPE_CHECKING:
    from gpuctl.keystore import ServerCert  # cryptography: imported only where certificates are made

HF_CACHE_DIR = PurePosixPath("/var/lib/gpuctl/huggingface")
WAIT_HEALTHY = PurePosixPath("/usr/local/libexec/gpuctl/wait-healthy")
OLLAMA_UNIT = PurePosixPath("/etc/systemd/system/ollama.service")
STOP_GRACE_S = 90
NGINX_CONF = PurePosixPath("/etc/nginx/conf.d/gpuctl-gateway.conf")
GATEWAY_DIR = PurePosixPath("/etc/gpuctl/gateway")
GATEWAY_TLS_CERT = GATEWAY_DIR / "tls" / "fullchain.pem"
GATEWAY_TLS_KEY = GATEWAY_DIR / "tls" / "key.pem"
ACME_WEBROOT = PurePosixPath("/var/lib/gpuctl/acme")
FIREWALL_RULES = PurePosixPath("/etc/gpuctl/firewall.nft")
FIREWALL_UNIT = PurePosixPath("/etc/systemd/system/gpuctl-firewall.service")

SecretResolver = Callable[[SecretRef], str]


@dataclass(frozen=True)
class GatewayMaterial:
    """The gateway's secrets for one host, resolved before any connection: the clients' bearer key
    and (unless ACME) the TLS certificate chain and key."""

    api_key: str
    cert: ServerCert | None


@dataclass(frozen=True)
class RenderedFile:
    """One file for a host: where it goes, what it holds, who owns it."""

    path: PurePosixPath
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    component: str = ""
    secret: bool = False

    @property
    def mode_str(self) -> str:
        return f"{self.mode:04o}"


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
    host: HostSpec, resolve: SecretResolver | None = None, gateway: GatewayMaterial | None = None
) -> list[RenderedFile]:
    """Every file HOST receives, sorted by path. Without RESOLVE (and GATEWAY), secrets become placeholders."""
    resolve = resolve or placeholder
    files: list[RenderedFile] = []
    for engine in host.vllm:
        files += render_vllm(host, engine, resolve)
    if host.vllm:
        files.append(
            RenderedFile(
                WAIT_HEALTHY, (templates_dir() / "vllm" / "wait-healthy.sh").read_text(), 0o755, component="vllm"
            )
        )
    if host.ollama is not None:
        files += render_ollama(host, host.ollama)
    if host.gateway is not None:
        files += render_gateway(host, resolve, gateway)
    if host.firewall_enabled():
        files += render_firewall(host)
    return sorted(files, key=lambda f: str(f.path))


def render_vllm(host: HostSpec, engine: VllmSpec, resolve: SecretResolver) -> list[RenderedFile]:
    """The compose file, the 0600 env file and the systemd unit of one vLLM engine."""
    component = f"vllm:{engine.name}"
    bind = f"[{engine.bind}]" if ":" in engine.bind else engine.bind
    compose_file = engine.config_dir / "compose.yaml"
    context = {
        "host": host,
        "engine": engine,
        "published_port": f"{bind}:{engine.port}:{CONTAINER_PORT}",
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
        "compose": f"/usr/bin/docker compose --project-name {engine.project} --file {compose_file}",
        "wait_healthy": WAIT_HEALTHY,
        "secret_env": {key: env_file_value(key, resolve(ref)) for key, ref in engine.secret_env().items()},
    }
    unit = PurePosixPath("/etc/systemd/system") / engine.unit_name
    return [
        RenderedFile(compose_file, _template("vllm/compose.yaml.j2", **context), component=component),
        RenderedFile(
            engine.config_dir / "vllm.env",
            _template("vllm/vllm.env.j2", **context),
            0o600,
            component=component,
            secret=bool(engine.secret_env()),
        ),
        RenderedFile(unit, _template("vllm/vllm.service.j2", **context), component=component),
    ]


def env_file_value(key: str, value: str) -> str:
    """Quote a value for a compose env file: single quotes keep it literal (no interpolation)."""
    if "'" in value or "\n" in value or "\r" in value:
        raise GpuctlError(f"secret for {key}: contains a quote or a line break, which an env file cannot hold")
    return f"'{value}'"


def render_ollama(host: HostSpec, ollama: OllamaSpec) -> list[RenderedFile]:
    """Ollama's own unit (as its installer writes it) and gpuctl's drop-in with the settings."""
    context = {"host": host, "ollama": ollama}
    return [
        RenderedFile(OLLAMA_UNIT, _template("ollama/ollama.service.j2", **context), component="ollama"),
        RenderedFile(
            PurePosixPath(ollama.dropin_path), _template("ollama/override.conf.j2", **context), component="ollama"
        ),
    ]


def gateway_upstreams(host: HostSpec, resolve: SecretResolver) -> list[dict[str, object]]:
    """One upstream per engine: id, loopback port, gateway prefix and the Authorization it gets."""
    upstreams = []
    for engine in host.engines():
        is_vllm = isinstance(engine, VllmSpec)
        ident = f"vllm_{engine.name.replace('-', '_')}" if is_vllm else "ollama"
        key = resolve(engine.api_key) if is_vllm and engine.api_key is not None else None
        if key is not None and ('"' in key or "\\" in key or "$" in key or not key.isprintable()):
            raise GpuctlError(
                f"vllm[{engine.name}].api_key: contains a quote, backslash, $ or control character, "
                "which the gateway's nginx configuration cannot hold"
            )
        upstreams.append(
            {
                "id": ident,
                "port": engine.port,
                "label": f"vllm:{engine.name}" if is_vllm else "ollama",
                "address": _loopback_address(engine.bind),
                "prefix": host.gateway_prefix(engine),
                "authorization": f"Bearer {key}" if key else "",
                "admin_blocked": not is_vllm and not (host.gateway and host.gateway.allow_ollama_admin),
                "loopback": is_loopback(engine.bind),
            }
        )
    return upstreams


def _loopback_address(bind: str) -> str:
    """Where the gateway reaches an engine bound to BIND: itself if loopback, else 127.0.0.1 (or [::1])."""
    if bind in ("0.0.0.0", "::") or not is_loopback(bind):
        return "[::1]" if ":" in bind else "127.0.0.1"
    return f"[{bind}]" if ":" in bind else bind


BEARER_PATTERN = "[Bb][Ee][Aa][Rr][Ee][Rr]"
"""The auth scheme "Bearer" in any case (RFC 7235 §2.1: the scheme is case-insensitive; the key is not)."""


def key_pattern(key: str) -> str:
    """KEY as a case-sensitive nginx regex that matches exactly it (nginx's plain map strings ignore case)."""
    if not API_KEY_RE.match(key):
        raise GpuctlError("gateway.api_key: must be 20-512 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return "".join(f"[{c}]" if c in ".+" else c for c in key)


def render_gateway(host: HostSpec, resolve: SecretResolver, material: GatewayMaterial | None) -> list[RenderedFile]:
    """nginx's site (0644, no secrets), its secrets file (0600) and, unless ACME, the certificate."""
    gateway = host.gateway
    assert gateway is not None
    upstreams = gateway_upstreams(host, resolve)
    routes = [
        {
            "prefix": u["prefix"],
            "upstream": u["id"],
            "host": f"{u['address']}:{u['port']}",
            "admin_blocked": u["admin_blocked"],
        }
        for u in upstreams
    ]
    routes.sort(key=lambda r: (r["prefix"] == "", r["prefix"]))
    # With ACME these two are links that deploy points at certbot's files (a bootstrap certificate first).
    tls_cert, tls_key = GATEWAY_TLS_CERT, GATEWAY_TLS_KEY
    if material is not None:
        api_key_pattern = key_pattern(material.api_key)
    else:
        api_key_pattern = f"<secret gateway key: {gateway.api_key.describe() if gateway.api_key else 'generated'}>"
    secrets_conf = GATEWAY_DIR / "secrets.conf"
    context = {
        "host": host,
        "gateway": gateway,
        "upstreams": upstreams,
        "routes": routes,
        "secrets_conf": secrets_conf,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "acme_webroot": ACME_WEBROOT,
        "key_pattern": api_key_pattern,
        "scheme_pattern": BEARER_PATTERN,
        "admin_routes": "|".join(OLLAMA_ADMIN_ROUTES),
    }
    files = [
        RenderedFile(NGINX_CONF, _template("gateway/gpuctl-gateway.conf.j2", **context), component="gateway"),
        RenderedFile(
            secrets_conf, _template("gateway/secrets.conf.j2", **context), 0o600, component="gateway", secret=True
        ),
    ]
    if gateway.tls != "acme":
        cert = material.cert if material is not None else None
        chain = cert.chain_pem if cert else f"<certificate ({gateway.tls})>\n"
        key = cert.key_pem if cert else f"<secret certificate key ({gateway.tls})>\n"
        files += [
            RenderedFile(tls_cert, chain, component="gateway"),
            RenderedFile(tls_key, key, 0o600, component="gateway", secret=True),
        ]
    return files


def firewall_ports(host: HostSpec) -> list[int]:
    """TCP ports the firewall opens to everyone: SSH, the gateway (and 80 for ACME), listed ports,
    and engines bound beyond loopback by an explicit unsafe_public_bind."""
    ports = {host.ssh_port, *host.firewall.allow_tcp, *(e.port for e in host.public_engines())}
    if host.gateway is not None:
        ports.add(host.gateway.port)
        if host.gateway.tls == "acme":
            ports.add(80)
    return sorted(ports)


def render_firewall(host: HostSpec) -> list[RenderedFile]:
    """The nftables ruleset and the oneshot unit that loads it at boot."""
    nets = [ipaddress.ip_network(n, strict=False) for n in host.firewall.allow_from]
    context = {
        "host": host,
        "open_tcp": firewall_ports(host),
        "ruleset": FIREWALL_RULES,
        "public_ports": sorted({e.port for e in host.public_engines() if isinstance(e, VllmSpec)}),
        "allow_v4": [str(n) for n in nets if n.version == 4],
        "allow_v6": [str(n) for n in nets if n.version == 6],
    }
    return [
        RenderedFile(FIREWALL_RULES, _template("firewall/firewall.nft.j2", **context), component="firewall"),
        RenderedFile(FIREWALL_UNIT, _template("firewall/gpuctl-firewall.service.j2", **context), component="firewall"),
    ]


def write_tree(files: list[RenderedFile], root: Path) -> list[Path]:
    """Write rendered files under ROOT (ROOT/etc/…), with their modes, plus a manifest of owners."""
    written = []
    for item in files:
        target = root / str(item.path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content)
        target.chmod(item.mode)
        written.append(target)
    manifest = [
        {"path": str(f.path), "mode": f.mode_str, "owner": f.owner, "group": f.group, "component": f.component}
        for f in files
    ]
    (root / "gpuctl-files.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return written
