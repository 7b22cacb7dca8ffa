"""Render every file a host will receive from its spec, through the jinja2 templates in templates/.

Rendering is pure: the same spec (and the same secret values) gives the same bytes. `gpuctl render`
and `gpuctl deploy` call the same function; render passes no secrets, so placeholders stand where
the secret values will go.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath

import jinja2

from gpuctl.errors import GpuctlError
from gpuctl.spec import CONTAINER_PORT, HostSpec, OllamaSpec, SecretRef, VllmSpec

HF_CACHE_DIR = PurePosixPath("/var/lib/gpuctl/huggingface")
WAIT_HEALTHY = PurePosixPath("/usr/local/libexec/gpuctl/wait-healthy")
OLLAMA_UNIT = PurePosixPath("/etc/systemd/system/ollama.service")
STOP_GRACE_S = 90

SecretResolver = Callable[[SecretRef], str]


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


def render_host(host: HostSpec, resolve: SecretResolver | None = None) -> list[RenderedFile]:
    """Every file HOST receives, sorted by path. Without RESOLVE, secrets become placeholders."""
    resolve = resolve or placeholder
    files: list[RenderedFile] = []
    for engine in host.vllm:
        files += render_vllm(host, engine, resolve)
    if host.vllm:
        files.append(
            RenderedFile(WAIT_HEALTHY, (templates_dir() / "vllm" / "wait-healthy.sh").read_text(), 0o755, component="vllm")
        )
    if host.ollama is not None:
        files += render_ollama(host, host.ollama)
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
            "CMD", "python3", "-c",
            f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/health', timeout=5)",
        ],  # fmt: skip
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
            engine.config_dir / "vllm.env", _template("vllm/vllm.env.j2", **context), 0o600,
            component=component, secret=bool(engine.secret_env()),
        ),  # fmt: skip
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
