#!/usr/bin/env python3
"""STAND-IN FOR THE REAL OLLAMA SERVER AND CLI -- FOR TESTS ONLY.

!!! THIS IS NOT OLLAMA !!!  The real Ollama binary cannot be installed or run in gpuctl's
test environment (no GPU, no internet, no registry that ships it), so the tests copy this single
file (Python 3.11 standard library only) onto a minimal test host as ``/usr/local/bin/ollama``
and run ``ollama serve`` under systemd, exactly where the real binary would go.  It produces
deterministic text ("The quick brown fox ...", one word = one token); it never runs a model.

Behaviours reproduced (checked against ollama/ollama ``server/routes.go``, ``envconfig`` and
``docs/api.md``):

* CLI: ``serve``; ``--version``/``-v`` (asks the running server, prints
  ``ollama version is X`` and the ``Warning: ...`` lines the real client prints);
  ``list``/``ls``, ``pull NAME``, ``ps``, ``rm NAME``, ``run NAME [PROMPT]``, ``stop NAME``
  talk to the server over HTTP like the real client.
* Environment read by ``serve``: OLLAMA_HOST (``127.0.0.1:11434`` default; ``0.0.0.0``,
  ``host:port``, ``:port``, ``http://host:port``), OLLAMA_MODELS (manifests and small blobs are
  written there in the real layout, so pulled models survive a restart), OLLAMA_KEEP_ALIVE (Go
  duration or seconds, negative = forever), OLLAMA_NUM_PARALLEL (concurrent generations per
  model, others queue), OLLAMA_MAX_QUEUE (512; 503 when full), OLLAMA_MAX_LOADED_MODELS,
  OLLAMA_FLASH_ATTENTION, OLLAMA_KV_CACHE_TYPE (only effective with flash attention),
  OLLAMA_CONTEXT_LENGTH, OLLAMA_ORIGINS.
* Routes: ``GET|HEAD /``, ``/api/version``, ``/api/tags``, ``/api/ps``, ``POST /api/pull``
  (NDJSON progress or one JSON), ``/api/generate``, ``/api/chat`` (NDJSON streaming by default,
  nanosecond timings, ``options.num_predict``, ``keep_alive``, empty prompt = load/unload),
  ``/api/show``, ``DELETE /api/delete``, ``/api/copy``, ``/api/create`` (minimal: FROM an
  installed model), ``/api/embed``, ``/api/embeddings``; OpenAI shim ``GET /v1/models``,
  ``POST /v1/chat/completions`` (JSON or SSE, ``stream_options.include_usage``; its parameters as
  Ollama's OpenAI layer treats them: see ``ShimOptions``),
  ``/v1/completions``, ``/v1/embeddings``.  Error bodies are ``{"error": "..."}`` (OpenAI
  shape ``{"error": {"message", "type", "param", "code"}}`` on ``/v1``) with the real status
  codes and messages: unknown model 404 ``model 'x' not found`` (generate/chat/show/delete,
  current releases; embed keeps ``model "x" not found, try pulling it first``), malformed JSON
  400, queue full 503.  No authentication at all, like the real server.
* Pull cannot reach a registry: names in a fixed catalog (env ``OLLAMA_STANDIN_CATALOG``,
  comma list) "download" instantly; any other name fails with the real
  ``pull model manifest: file does not exist`` error.

STAND-IN-ONLY knobs (never present in real Ollama):
  ``GET /api/standin/config``       the settings the process effectively read (env, uid, pid,
                                     user, models dir...) plus live queue state
  OLLAMA_STANDIN_VERSION             version to report (to fake an old/wrong install)
  OLLAMA_STANDIN_CATALOG             comma list of pullable model names
  OLLAMA_STANDIN_TTFT                seconds before the first token (default 0.02)
  OLLAMA_STANDIN_TOKEN_DELAY         seconds between tokens (default 0.005)
  OLLAMA_STANDIN_LOAD_DELAY          seconds to "load" a model that is not loaded (default 0)
  OLLAMA_STANDIN_DEFAULT_TOKENS      reply length when num_predict is not set (default 24)
  OLLAMA_STANDIN_FAST=1              all delays zero
  OLLAMA_STANDIN_VRAM=0              report models as loaded on the CPU (size_vram 0)
  OLLAMA_STANDIN_FAULT=runner-exit   every model load fails the way a release whose runner cannot start on
                                     the machine does: 500 ``llama runner process has terminated: exit
                                     status 2`` (the server itself starts and answers /api/version), as
                                     upgrades have done on some machines (ollama/ollama#8770, #11447)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

OLLAMA_VERSION = "0.12.6"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434
FOREVER = float("inf")
GO_MAX_DURATION_S = (2**63 - 1) / 1e9  # time.Duration(math.MaxInt64): "forever" lands in ~2318
ENV_PREFIXES_SHOWN = ("OLLAMA_", "CUDA_", "HIP_", "ROCR_", "GPU_", "GGML_")
MAX_QUEUE_ERROR = "server busy, please try again.  maximum pending requests exceeded"
REGISTRY = "registry.ollama.ai"

WORDS = (
    "The quick brown fox jumps over the lazy dog while a small model answers every prompt "
    "with the same steady stream of simple words so that tests can count tokens and measure "
    "latency without any real weights ."
).split()

# name -> (family, parameter_size, quantization_level, size_bytes, context_length, capabilities)
KNOWN_MODELS: dict[str, tuple[str, str, str, int, int, tuple[str, ...]]] = {
    "llama3.1:8b": ("llama", "8.0B", "Q4_K_M", 4920753328, 131072, ("completion", "tools")),
    "llama3.1:latest": ("llama", "8.0B", "Q4_K_M", 4920753328, 131072, ("completion", "tools")),
    "llama3.2:1b": ("llama", "1.2B", "Q8_0", 1321098329, 131072, ("completion", "tools")),
    "llama3.2:3b": ("llama", "3.2B", "Q4_K_M", 2019393189, 131072, ("completion", "tools")),
    "qwen2.5:0.5b": ("qwen2", "494.03M", "Q4_K_M", 397821319, 32768, ("completion", "tools")),
    "tinyllama:latest": ("llama", "1B", "Q4_0", 637700138, 2048, ("completion",)),
    "nomic-embed-text:latest": ("nomic-bert", "137M", "F16", 274302450, 2048, ("embedding",)),
}
DEFAULT_CATALOG = ",".join(KNOWN_MODELS)


# --------------------------------------------------------------------------------------------
# Small parsers: Go durations, booleans, OLLAMA_HOST, model names
# --------------------------------------------------------------------------------------------

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string ("5m", "1h30m", "-1s", "0") into seconds."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _GO_PART.match(body, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def keep_alive_from_env(raw: str | None) -> float:
    """OLLAMA_KEEP_ALIVE like envconfig.KeepAlive: duration or integer seconds; <0 = forever."""
    value = 300.0
    if raw:
        try:
            value = parse_go_duration(raw)
        except ValueError:
            try:
                value = float(int(raw.strip()))
            except ValueError:
                value = 300.0
    return FOREVER if value < 0 else value


def keep_alive_from_request(raw: Any) -> float | None:
    """Per-request ``keep_alive`` (api.Duration): number = seconds, string = Go duration."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise ValueError("json: cannot unmarshal bool into Go value of type api.Duration")
    if isinstance(raw, (int, float)):
        seconds = float(raw)
    elif isinstance(raw, str):
        try:
            seconds = parse_go_duration(raw)
        except ValueError:
            if re.fullmatch(r"[+-]?\d+", raw.strip()):
                seconds = float(raw)
            else:
                raise
    else:
        raise ValueError(f"Unsupported type: '{type(raw).__name__}'")
    return FOREVER if seconds < 0 else seconds


def env_bool(raw: str | None) -> bool:
    """Go strconv.ParseBool semantics (invalid values count as true when set, like envconfig)."""
    if raw is None or raw.strip() == "":
        return False
    v = raw.strip().lower()
    return v not in ("0", "f", "false")


def env_int(raw: str | None, default: int) -> int:
    """Integer env var with a default for empty or invalid values."""
    try:
        return int(raw) if raw not in (None, "") else default
    except ValueError:
        return default


def parse_ollama_host(raw: str | None) -> tuple[str, str, int]:
    """Parse OLLAMA_HOST like envconfig.Host(): returns (scheme, host, port)."""
    s = (raw or "").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.split("/", 1)[0]
    host, port_text = DEFAULT_HOST, ""
    if hostport.startswith("["):  # [v6]:port or [v6]
        inside, _, rest = hostport[1:].partition("]")
        host, port_text = inside, rest.lstrip(":")
    elif hostport.count(":") == 1:  # host:port or :port
        host, port_text = hostport.split(":")
    elif hostport:  # bare name, IPv4 or unbracketed IPv6
        host = hostport
    port = int(port_text) if port_text.isdigit() else default_port
    if not 0 <= port <= 65535:
        port = default_port
    return scheme, host, port


def normalize_name(name: str) -> str:
    """Canonical short model name: lower-cased, ``:latest`` added, registry prefix dropped."""
    n = name.strip()
    for prefix in (f"{REGISTRY}/library/", f"{REGISTRY}/", "library/"):
        if n.lower().startswith(prefix):
            n = n[len(prefix) :]
    if ":" not in n.rsplit("/", 1)[-1]:
        n += ":latest"
    return n.lower()


def valid_name(name: str) -> bool:
    """Loose check of the model-name grammar (namespace/model:tag)."""
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?:[a-z0-9][a-z0-9._-]*", name))


# --------------------------------------------------------------------------------------------
# Time and token helpers
# --------------------------------------------------------------------------------------------


def go_time(t: float | None = None, utc: bool = False) -> str:
    """Format a timestamp like Go's RFC3339Nano (trailing zeros trimmed)."""
    if t is None:
        t = time.time()
    if t == FOREVER:
        t = time.time() + GO_MAX_DURATION_S
    base = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t)
    stamp = base if utc else base.astimezone()
    frac = f"{stamp.microsecond:06d}".rstrip("0")
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "")
    offset = stamp.strftime("%z")
    if utc or offset in ("+0000", ""):
        return text + "Z"
    return text + offset[:3] + ":" + offset[3:]


def count_tokens(text: str) -> int:
    """Approximate token count: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text or ""))


def stop_cut(text: str, token: str, stop: list[str]) -> str | None:
    """When TEXT + TOKEN reaches a stop sequence: the part of TOKEN before it (maybe ""); else None."""
    joined = text + token
    hits = [joined.find(s) for s in stop if s and s in joined]
    return joined[len(text) : min(hits)] if hits else None


def word_at(i: int) -> str:
    """The i-th generated token (deterministic word stream, leading space after the first)."""
    w = WORDS[i % len(WORDS)]
    return w if i == 0 else " " + w


def sha256_hex(data: bytes | str) -> str:
    """Hex sha256 of bytes or text."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def embedding_for(text: str, dims: int = 384) -> list[float]:
    """Deterministic, L2-normalised pseudo-embedding of a text."""
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vec = values[:dims]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 7) for v in vec]


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """Everything ``ollama serve`` read from its environment."""

    scheme: str
    host: str
    port: int
    models_dir: Path
    keep_alive: float
    keep_alive_raw: str
    num_parallel: int
    max_loaded_models: int
    max_queue: int
    flash_attention: bool
    kv_cache_type: str
    context_length: int
    origins: str
    version: str
    catalog: list[str]
    ttft: float
    token_delay: float
    load_delay: float
    default_tokens: int
    vram: bool
    fault: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        """Read settings the way the real envconfig does (plus the stand-in knobs)."""
        scheme, host, port = parse_ollama_host(env.get("OLLAMA_HOST"))
        models = env.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")
        fast = env_bool(env.get("OLLAMA_STANDIN_FAST"))

        def delay(name: str, default: float) -> float:
            if fast:
                return 0.0
            try:
                return max(0.0, float(env.get(name, default)))
            except ValueError:
                return default

        catalog_raw = env.get("OLLAMA_STANDIN_CATALOG") or DEFAULT_CATALOG
        return cls(
            scheme=scheme,
            host=host,
            port=port,
            models_dir=Path(models),
            keep_alive=keep_alive_from_env(env.get("OLLAMA_KEEP_ALIVE")),
            keep_alive_raw=env.get("OLLAMA_KEEP_ALIVE", ""),
            num_parallel=max(1, env_int(env.get("OLLAMA_NUM_PARALLEL"), 1)),
            max_loaded_models=env_int(env.get("OLLAMA_MAX_LOADED_MODELS"), 0),
            max_queue=max(1, env_int(env.get("OLLAMA_MAX_QUEUE"), 512)),
            flash_attention=env_bool(env.get("OLLAMA_FLASH_ATTENTION")),
            kv_cache_type=env.get("OLLAMA_KV_CACHE_TYPE", ""),
            context_length=env_int(env.get("OLLAMA_CONTEXT_LENGTH"), 4096),
            origins=env.get("OLLAMA_ORIGINS", ""),
            version=env.get("OLLAMA_STANDIN_VERSION") or OLLAMA_VERSION,
            catalog=[normalize_name(n) for n in catalog_raw.split(",") if n.strip()],
            ttft=delay("OLLAMA_STANDIN_TTFT", 0.02),
            token_delay=delay("OLLAMA_STANDIN_TOKEN_DELAY", 0.005),
            load_delay=delay("OLLAMA_STANDIN_LOAD_DELAY", 0.0),
            default_tokens=max(1, env_int(env.get("OLLAMA_STANDIN_DEFAULT_TOKENS"), 24)),
            vram=env.get("OLLAMA_STANDIN_VRAM", "1") != "0",
            fault=env.get("OLLAMA_STANDIN_FAULT", ""),
        )

    def effective_kv_cache_type(self) -> str:
        """KV cache quantisation only applies with flash attention; otherwise f16."""
        if self.flash_attention and self.kv_cache_type in ("f16", "q8_0", "q4_0"):
            return self.kv_cache_type
        return "f16"

    def max_loaded(self) -> int:
        """OLLAMA_MAX_LOADED_MODELS=0 means automatic (3 per GPU; one fake GPU here)."""
        return self.max_loaded_models if self.max_loaded_models > 0 else 3

    def as_json(self) -> dict[str, Any]:
        """The effective configuration, for ``GET /api/standin/config``."""
        return {
            "standin": True,
            "version": self.version,
            "scheme": self.scheme,
            "host": self.host,
            "port": self.port,
            "models_dir": str(self.models_dir),
            "keep_alive": self.keep_alive_raw,
            "keep_alive_seconds": None if self.keep_alive == FOREVER else self.keep_alive,
            "keep_alive_forever": self.keep_alive == FOREVER,
            "num_parallel": self.num_parallel,
            "max_loaded_models": self.max_loaded_models,
            "max_queue": self.max_queue,
            "flash_attention": self.flash_attention,
            "kv_cache_type": self.kv_cache_type,
            "effective_kv_cache_type": self.effective_kv_cache_type(),
            "context_length": self.context_length,
            "origins": self.origins,
            "catalog": self.catalog,
            "delays": {"ttft": self.ttft, "token": self.token_delay, "load": self.load_delay},
            "env": {
                k: v
                for k, v in sorted(os.environ.items())
                if k.startswith(ENV_PREFIXES_SHOWN) or k in ("HOME", "USER", "PATH")
            },
            "pid": os.getpid(),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "user": _user_name(),
            "cwd": os.getcwd(),
            "home": os.environ.get("HOME", ""),
        }


def _user_name() -> str:
    """Name of the effective user (falls back to the uid)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


# --------------------------------------------------------------------------------------------
# Model store (manifests + small blobs on disk, real directory layout)
# --------------------------------------------------------------------------------------------


@dataclass
class ModelInfo:
    """A locally installed model as read back from its manifest."""

    name: str
    digest: str
    size: int
    modified_at: float
    family: str
    parameter_size: str
    quantization_level: str
    context_length: int
    capabilities: list[str]
    system: str = ""
    parent: str = ""

    def details(self) -> dict[str, Any]:
        """The ``details`` object used by /api/tags, /api/ps and /api/show."""
        return {
            "parent_model": self.parent,
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


def catalog_entry(name: str) -> tuple[str, str, str, int, int, tuple[str, ...]]:
    """Details of a catalog model: known table, else derived from the name."""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    base, _, tag = name.rpartition(":")
    family = re.sub(r"[\d.]+$", "", base.rsplit("/", 1)[-1]) or "llama"
    m = re.search(r"(\d+(?:\.\d+)?)([bm])", tag)
    params = float(m.group(1)) * (1e9 if m.group(2) == "b" else 1e6) if m else 7e9
    size_label = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    caps = ("embedding",) if "embed" in base else ("completion",)
    return family, size_label, "Q4_K_M", int(params * 0.6), 8192, caps


def model_config(name: str, system: str, parent: str, like: ModelInfo | None) -> tuple[dict[str, Any], int]:
    """The config blob of model ``name`` and its total size: from ``like`` (a copy) or the catalog."""
    if like is not None:
        entry = (
            like.family,
            like.parameter_size,
            like.quantization_level,
            like.size,
            like.context_length,
            tuple(like.capabilities),
        )
    else:
        entry = catalog_entry(name)
    family, psize, quant, size, ctx, caps = entry
    config = {
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family],
        "model_type": psize,
        "file_type": quant,
        "architecture": "amd64",
        "os": "linux",
        "context_length": ctx,
        "capabilities": list(caps),
        "system": system,
        "parent_model": parent,
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return config, size


class ModelStore:
    """Manifests under ``<models>/manifests/registry.ollama.ai/<ns>/<model>/<tag>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()

    def ensure_dirs(self) -> None:
        """Create the models directory tree (like the real server at start-up)."""
        (self.root / "manifests").mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)

    def manifest_path(self, name: str) -> Path:
        """Path of a model's manifest file."""
        repo, _, tag = name.rpartition(":")
        ns, _, model = repo.rpartition("/")
        return self.root / "manifests" / REGISTRY / (ns or "library") / model / tag

    def _write_blob(self, data: bytes) -> tuple[str, int]:
        """Store a blob by digest; return (digest, size)."""
        digest = "sha256:" + sha256_hex(data)
        path = self.root / "blobs" / digest.replace(":", "-")
        if not path.exists():
            path.write_bytes(data)
        return digest, len(data)

    def install(self, name: str, system: str = "", parent: str = "", like: ModelInfo | None = None) -> ModelInfo:
        """Write manifest + config/template/params blobs for ``name``."""
        config, size = model_config(name, system, parent, like)
        with self.lock:
            self.ensure_dirs()
            cfg_digest, cfg_size = self._write_blob(json.dumps(config).encode())
            tmpl_digest, tmpl_size = self._write_blob(b"{{ .System }}\n{{ .Prompt }}")
            params_digest, params_size = self._write_blob(b'{"stop":["<|eot_id|>"]}')
            layers = [
                {
                    "mediaType": "application/vnd.ollama.image.model",
                    "digest": "sha256:" + sha256_hex("weights:" + (parent or name)),
                    "size": size - tmpl_size - params_size,
                },
                {"mediaType": "application/vnd.ollama.image.template", "digest": tmpl_digest, "size": tmpl_size},
                {"mediaType": "application/vnd.ollama.image.params", "digest": params_digest, "size": params_size},
            ]
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": cfg_digest,
                    "size": cfg_size,
                },
                "layers": layers,
            }
            path = self.manifest_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(manifest))
            tmp.replace(path)
        info = self.get(name)
        assert info is not None
        return info

    def copy(self, src: str, dst: str) -> None:
        """The manifest of SRC written byte for byte as DST's, overwriting it: as Ollama's CopyModel does
        (server/images.go, v0.13.0 and v0.32.15), so /api/tags shows both names with one digest."""
        data = self.manifest_path(src).read_bytes()
        with self.lock:
            path = self.manifest_path(dst)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

    def get(self, name: str) -> ModelInfo | None:
        """Read one installed model, or None."""
        path = self.manifest_path(name)
        try:
            raw = path.read_bytes()
            manifest = json.loads(raw)
            cfg_path = self.root / "blobs" / manifest["config"]["digest"].replace(":", "-")
            config = json.loads(cfg_path.read_text())
        except (OSError, ValueError, KeyError):
            return None
        size = sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))
        return ModelInfo(
            name=name,
            digest=sha256_hex(raw),
            size=size,
            modified_at=path.stat().st_mtime,
            family=config.get("model_family", ""),
            parameter_size=config.get("model_type", ""),
            quantization_level=config.get("file_type", ""),
            context_length=int(config.get("context_length", 4096)),
            capabilities=list(config.get("capabilities", ["completion"])),
            system=config.get("system", ""),
            parent=config.get("parent_model", ""),
        )

    def list(self) -> list[ModelInfo]:
        """All installed models, most recently modified first."""
        base = self.root / "manifests" / REGISTRY
        found: list[ModelInfo] = []
        if base.is_dir():
            for path in base.glob("*/*/*"):
                if not path.is_file() or path.name.endswith(".tmp"):
                    continue
                ns, model, tag = path.parts[-3:]
                name = f"{model}:{tag}" if ns == "library" else f"{ns}/{model}:{tag}"
                info = self.get(name)
                if info:
                    found.append(info)
        return sorted(found, key=lambda m: m.modified_at, reverse=True)

    def delete(self, name: str) -> bool:
        """Remove a model's manifest; True if it existed."""
        with self.lock:
            path = self.manifest_path(name)
            if not path.is_file():
                return False
            path.unlink()
            return True


# --------------------------------------------------------------------------------------------
# Scheduler: loaded models, keep-alive expiry, per-model parallel slots, queue limit
# --------------------------------------------------------------------------------------------


RUNNER_EXIT_ERROR = "llama runner process has terminated: exit status 2"


class QueueFull(Exception):
    """Raised when more than OLLAMA_MAX_QUEUE requests are pending."""


@dataclass
class Loaded:
    """A model currently 'in memory' (what /api/ps shows)."""

    info: ModelInfo
    keep_alive: float
    expires_at: float
    context_length: int
    refs: int = 0
    last_used: float = field(default_factory=time.time)


class Scheduler:
    """Tracks loaded models and limits concurrent generations per model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Condition()
        self.loaded: dict[str, Loaded] = {}
        self.slots: dict[str, threading.Semaphore] = {}
        self.pending = 0

    def _expire(self) -> None:
        """Drop idle models whose keep-alive ran out (caller holds the lock)."""
        now = time.time()
        for name in [n for n, lm in self.loaded.items() if lm.refs == 0 and lm.expires_at <= now]:
            del self.loaded[name]

    def _make_room(self) -> None:
        """Evict the least recently used idle model when too many are loaded."""
        while len(self.loaded) >= self.settings.max_loaded():
            idle = [lm for lm in self.loaded.values() if lm.refs == 0]
            if not idle:
                return
            victim = min(idle, key=lambda lm: lm.last_used)
            del self.loaded[victim.info.name]

    def acquire(self, info: ModelInfo, keep_alive: float | None, num_ctx: int | None) -> tuple[Loaded, float]:
        """Load ``info`` if needed and take a generation slot; returns (entry, load seconds)."""
        if self.settings.fault == "runner-exit":
            raise HttpError(500, RUNNER_EXIT_ERROR)
        ka = self.settings.keep_alive if keep_alive is None else keep_alive
        with self.lock:
            if self.pending >= self.settings.max_queue:
                raise QueueFull(MAX_QUEUE_ERROR)
            self.pending += 1
            sem = self.slots.setdefault(info.name, threading.Semaphore(self.settings.num_parallel))
        try:
            sem.acquire()
        finally:
            with self.lock:
                self.pending -= 1
        load_s = 0.0
        with self.lock:
            self._expire()
            entry = self.loaded.get(info.name)
            needs_load = entry is None
            if needs_load:
                self._make_room()
        if needs_load and self.settings.load_delay:
            time.sleep(self.settings.load_delay)
            load_s = self.settings.load_delay
        with self.lock:
            entry = self.loaded.get(info.name)
            if entry is None:
                ctx = num_ctx or min(self.settings.context_length, info.context_length)
                entry = Loaded(info=info, keep_alive=ka, expires_at=time.time() + ka, context_length=ctx)
                self.loaded[info.name] = entry
            entry.refs += 1
            entry.keep_alive = ka
            entry.expires_at = time.time() + ka
            entry.last_used = time.time()
        return entry, load_s

    def release(self, entry: Loaded) -> None:
        """Give the slot back and restart the keep-alive timer (0 = unload now)."""
        with self.lock:
            entry.refs -= 1
            entry.last_used = time.time()
            entry.expires_at = time.time() + entry.keep_alive
            if entry.refs == 0 and entry.keep_alive == 0:
                self.loaded.pop(entry.info.name, None)
        sem = self.slots.get(entry.info.name)
        if sem is not None:
            sem.release()

    def unload(self, name: str) -> None:
        """Expire a model immediately (keep_alive 0 with an empty prompt)."""
        with self.lock:
            entry = self.loaded.get(name)
            if entry is not None:
                if entry.refs == 0:
                    del self.loaded[name]
                else:
                    entry.keep_alive = 0

    def forget(self, name: str) -> None:
        """Drop a deleted model from memory."""
        with self.lock:
            self.loaded.pop(name, None)

    def snapshot(self) -> list[Loaded]:
        """Currently loaded models, longest remaining keep-alive first."""
        with self.lock:
            self._expire()
            return sorted(self.loaded.values(), key=lambda lm: lm.expires_at, reverse=True)


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class HttpError(Exception):
    """An error answered as ``{"error": message}`` with a status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed the connection in the middle of a streamed answer."""


def go_json_error(exc: json.JSONDecodeError, body: str) -> str:
    """A Go encoding/json style message for a malformed body."""
    if exc.pos >= len(body.rstrip()):
        return "unexpected EOF"
    char = body[exc.pos]
    return f"invalid character '{char}' looking for beginning of value"


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the OllamaApp (one instance per connection)."""

    protocol_version = "HTTP/1.1"
    app: OllamaApp

    def setup(self) -> None:
        """TCP_NODELAY like Go's net/http (on by default for every TCP connection): each NDJSON line
        leaves at once instead of waiting, by Nagle's algorithm, for the client's delayed ACK (~40 ms)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- low-level helpers ---------------------------------------------------------------
    def send_response(self, code: int, message: str | None = None) -> None:
        """Like the base class, minus the Server header (gin sends none)."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Gin-style access log on stderr."""
        stamp = time.strftime("%Y/%m/%d - %H:%M:%S")
        sys.stderr.write(
            f"[GIN] {stamp} | {args[1] if len(args) > 1 else '-':>3} | "
            f'{self.client_address[0]:>15} | {self.command:<7} "{self.path}"\n'
        )

    def read_body(self) -> bytes:
        """Request body (Content-Length or chunked)."""
        self.body_consumed = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def json_body(self) -> dict[str, Any]:
        """Parse the JSON body; 400 with Go-like messages when missing or malformed."""
        raw = self.read_body().decode("utf-8", "replace")
        if not raw.strip():
            raise HttpError(400, "missing request body")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise HttpError(400, go_json_error(exc, raw)) from None
        if not isinstance(data, dict):
            raise HttpError(400, f"json: cannot unmarshal {type(data).__name__} into Go value of type api.Request")
        return data

    def send_bytes(self, status: int, body: bytes, ctype: str) -> None:
        """Send a complete response with Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any) -> None:
        """Send a JSON response (gin's c.JSON)."""
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_bytes(status, body, "application/json; charset=utf-8")

    def start_stream(self, ctype: str) -> None:
        """Begin a chunked 200 response."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        if ctype == "text/event-stream":
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "keep-alive")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        """Write one HTTP chunk and flush; raise ClientGone if the client left."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ClientGone() from exc

    def end_stream(self) -> None:
        """Terminate a chunked response."""
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    # -- dispatch --------------------------------------------------------------------------
    body_consumed = False
    UNREAD_BODY_LIMIT = 256 * 1024

    def discard_unread_body(self) -> None:
        """As the real server does after a handler that did not read the request body (Go's net/http
        discards up to 256 KiB, uvicorn/h11 the same or closes): drain it, or close the connection, so a
        kept-alive connection never reads that body as the next request."""
        if self.body_consumed:
            return
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length > self.UNREAD_BODY_LIMIT:
            self.close_connection = True
        elif length:
            self.rfile.read(length)

    def dispatch(self) -> None:
        """Handle one request, then discard what the handler left of its body."""
        self.body_consumed = False
        try:
            self.route()
        finally:
            self.discard_unread_body()

    def route(self) -> None:
        """Find the route and run it, turning HttpError into JSON errors."""
        path = self.path.split("?", 1)[0]
        routes = self.app.routes
        handler = routes.get((self.command, path))
        if handler is None:
            if any(p == path for (_, p) in routes):
                self.send_bytes(405, b"405 method not allowed", "text/plain")
            else:
                self.send_bytes(404, b"404 page not found", "text/plain")
            return
        try:
            handler(self)
        except HttpError as exc:
            if path.startswith("/v1/"):
                self.send_json(exc.status, openai_error(exc.status, exc.message))
            else:
                self.send_json(exc.status, {"error": exc.message})
        except ClientGone:
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = dispatch

    def do_OPTIONS(self) -> None:
        """CORS preflight: 204 like gin-contrib/cors for allowed origins."""
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
        self.send_header("Access-Control-Allow-Methods", "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Authorization,Content-Type,User-Agent")
        self.send_header("Content-Length", "0")
        self.end_headers()


def openai_error(status: int, message: str) -> dict[str, Any]:
    """Error body of Ollama's OpenAI compatibility layer (openai.NewError)."""
    etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": etype, "param": None, "code": None}}


# --------------------------------------------------------------------------------------------
# The application: route handlers
# --------------------------------------------------------------------------------------------


@dataclass
class Generation:
    """Timings and counts of one finished generation (all durations in seconds)."""

    text: str
    eval_count: int
    prompt_eval_count: int
    done_reason: str
    total: float
    load: float
    prompt_eval: float
    eval: float
    tokens: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The nanosecond metrics of the final NDJSON line."""
        return {
            "total_duration": int(self.total * 1e9),
            "load_duration": int(self.load * 1e9),
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": int(self.prompt_eval * 1e9),
            "eval_count": self.eval_count,
            "eval_duration": int(self.eval * 1e9),
        }


def openai_prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """Prompt tokens of an OpenAI-style body: chat ``messages`` (content + 4 each) or ``prompt``; 400 if malformed."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(400, "[] is too short - 'messages'")
        return sum(count_tokens(str(m.get("content", ""))) + 4 for m in messages if isinstance(m, dict))
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise HttpError(400, f"invalid type for 'prompt' field: {type(prompt).__name__}")
    return count_tokens(prompt)


@dataclass
class ShimOptions:
    """What Ollama's OpenAI layer does with a chat request's parameters (openai/openai.go, FromChatRequest and
    ChatCompletionRequest, at v0.13.0 and v0.32.15; read 2026-12-05): ``stop`` (a string or a list) is
    honoured; ``n``, ``tool_choice`` and ``max_completion_tokens`` are not in its request struct, so ignored
    (one choice; only ``max_tokens`` limits); ``logprobs``/``top_logprobs`` are honoured (top_logprobs outside
    0..20 is a 400); ``response_format`` json_object and json_schema (its schema) become the output format;
    ``tools`` are honoured, a 400 for a model without the tools capability (CheckCapabilities)."""

    stop: list[str]
    logprobs: int | None
    """None: not asked; else how many alternatives per token."""
    schema: dict[str, Any] | None
    """The JSON the answer must be: {} for any object (json_object), else a JSON schema."""
    tools: list[dict[str, Any]]


def shim_options(body: dict[str, Any]) -> ShimOptions:
    raw_stop = body.get("stop")
    stop = [raw_stop] if isinstance(raw_stop, str) else [s for s in raw_stop or [] if isinstance(s, str)]
    top = body.get("top_logprobs")
    if top is not None and not 0 <= int(top) <= 20:
        raise HttpError(400, "top_logprobs must be between 0 and 20")
    logprobs = int(top or 0) if body.get("logprobs") else None
    fmt = body.get("response_format") or {}
    schema = None
    if fmt.get("type") == "json_object":
        schema = {}
    elif fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        schema = fmt["json_schema"].get("schema") or {}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    return ShimOptions(stop, logprobs, schema, tools)


def value_of(schema: dict[str, Any]) -> Any:
    """A value that satisfies a (simple) JSON schema: what a model constrained to it would write."""
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: value_of(sub) for name, sub in (schema.get("properties") or {}).items()}
    return {"string": "yes", "integer": 1, "number": 1.5, "boolean": True, "array": []}.get(kind, "yes")


def structured_tokens(schema: dict[str, Any]) -> list[str]:
    """The constrained answer's text, in token-sized pieces: an object for json_object, else the schema's."""
    text = json.dumps(value_of(schema) if schema else {"response": "yes"})
    return [text[i : i + 4] for i in range(0, len(text), 4)]


def token_logprobs(token: str, top: int) -> dict[str, Any]:
    """One token's entry in ``logprobs.content`` (OpenAI's shape, as Ollama's ToChatCompletion writes it)."""
    alternatives = [{"token": token, "logprob": -0.05, "bytes": list(token.encode())}]
    alternatives += [{"token": " the", "logprob": -3.0 - i, "bytes": list(b" the")} for i in range(max(0, top - 1))]
    return {"token": token, "logprob": -0.05, "bytes": list(token.encode()), "top_logprobs": alternatives[:top]}


def tool_call_message(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message of a model that calls the first tool, its arguments from the tool's schema."""
    function = tools[0].get("function") or {}
    arguments = json.dumps(value_of(function.get("parameters") or {}))
    call = {
        "id": f"call_{int(time.time() * 1000) % 100000}",
        "index": 0,
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": arguments},
    }
    return {"role": "assistant", "content": "", "tool_calls": [call]}


class OpenAIReply:
    """The JSON shapes of one ``/v1/chat/completions`` (``chat``) or ``/v1/completions`` answer."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.ident = ("chatcmpl-" if chat else "cmpl-") + str(int(time.time() * 1000) % 1000)
        self.created = int(time.time())

    def choice(
        self, text: str, finish: str | None, delta: bool, logprobs: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """One choice: a chat ``delta`` (streamed) or ``message``, or a completion's ``text``; with the
        tokens' ``logprobs`` when they were asked for."""
        if self.chat and delta:
            found = {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish}
        elif self.chat:
            found = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        else:
            found = {"text": text, "index": 0, "finish_reason": finish}
        if logprobs is not None:
            found["logprobs"] = {"content": logprobs}
        return found

    def envelope(self, choices: list[dict[str, Any]], *, chunk: bool) -> dict[str, Any]:
        """The object around ``choices``: one ``chunk`` of a stream, or the whole answer."""
        obj = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {
            "id": self.ident,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": choices,
        }

    @staticmethod
    def usage(gen: Generation) -> dict[str, int]:
        """Token counts of a finished generation."""
        return {
            "prompt_tokens": gen.prompt_eval_count,
            "completion_tokens": gen.eval_count,
            "total_tokens": gen.prompt_eval_count + gen.eval_count,
        }


class OllamaApp:
    """State and route handlers of the stand-in server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.models_dir)
        self.sched = Scheduler(settings)
        self.routes: dict[tuple[str, str], Callable[[Handler], None]] = {}
        add = self._add
        add("GET", "/", self.root)
        add("HEAD", "/", self.root)
        add("GET", "/api/version", self.version)
        add("HEAD", "/api/version", self.version)
        add("GET", "/api/tags", self.tags)
        add("HEAD", "/api/tags", self.tags)
        add("GET", "/api/ps", self.ps)
        add("POST", "/api/pull", self.pull)
        add("POST", "/api/generate", self.generate)
        add("POST", "/api/chat", self.chat)
        add("POST", "/api/show", self.show)
        add("DELETE", "/api/delete", self.delete)
        add("POST", "/api/copy", self.copy)
        add("POST", "/api/create", self.create)
        add("POST", "/api/embed", self.embed)
        add("POST", "/api/embeddings", self.embeddings_legacy)
        add("GET", "/v1/models", self.v1_models)
        add("POST", "/v1/chat/completions", self.v1_chat)
        add("POST", "/v1/completions", self.v1_completions)
        add("POST", "/v1/embeddings", self.v1_embeddings)
        add("GET", "/api/standin/config", self.standin_config)

    def _add(self, method: str, path: str, fn: Callable[[Handler], None]) -> None:
        """Register a route."""
        self.routes[(method, path)] = fn

    # -- helpers ---------------------------------------------------------------------------
    def require_model(self, raw: Any, status_if_missing: int = 404) -> ModelInfo:
        """Look a requested model up; 404 ``model 'x' not found`` like GetModel."""
        name = raw if isinstance(raw, str) else ""
        if not name.strip():
            if status_if_missing == 400:
                raise HttpError(400, "model is required")
            raise HttpError(404, f"model '{name}' not found")
        info = self.store.get(normalize_name(name))
        if info is None:
            raise HttpError(404, f"model '{name}' not found")
        return info

    def run_tokens(
        self,
        info: ModelInfo,
        prompt_tokens: int,
        num_predict: int | None,
        keep_alive: float | None,
        num_ctx: int | None,
        emit: Callable[[str], None],
        stop: list[str] | None = None,
        fixed: list[str] | None = None,
    ) -> Generation:
        """Schedule the model, produce tokens through ``emit`` and return the timings. FIXED: the tokens to
        produce (a constrained answer) instead of the word stream; STOP: sequences that end the answer,
        left out of it."""
        start = time.monotonic()
        try:
            entry, load_s = self.sched.acquire(info, keep_alive, num_ctx)
        except QueueFull as exc:
            raise HttpError(503, str(exc)) from None
        try:
            loaded_at = time.monotonic()
            limit = self.settings.default_tokens
            reason = "stop"
            if num_predict is not None and num_predict >= 0:
                limit, reason = num_predict, "length"
            if self.settings.ttft:
                time.sleep(self.settings.ttft)
            first_at = time.monotonic()
            parts: list[str] = []
            if fixed is not None:
                limit, reason = min(limit, len(fixed)), ("length" if len(fixed) > limit else "stop")
            for i in range(limit):
                if i and self.settings.token_delay:
                    time.sleep(self.settings.token_delay)
                token = fixed[i] if fixed is not None else word_at(i)
                cut = stop_cut("".join(parts), token, stop or [])
                if cut is not None:
                    if cut:
                        parts.append(cut)
                        emit(cut)
                    reason = "stop"
                    break
                parts.append(token)
                emit(token)
            end = time.monotonic()
        finally:
            self.sched.release(entry)
        return Generation(
            text="".join(parts),
            tokens=parts,
            eval_count=len(parts),
            prompt_eval_count=max(1, prompt_tokens),
            done_reason=reason,
            total=end - start,
            load=max(load_s, loaded_at - start),
            prompt_eval=first_at - loaded_at,
            eval=end - first_at,
        )

    @staticmethod
    def options_of(body: dict[str, Any]) -> tuple[int | None, int | None]:
        """(num_predict, num_ctx) from ``options``."""
        opts = body.get("options") or {}
        if not isinstance(opts, dict):
            raise HttpError(400, "json: cannot unmarshal options")
        num_predict = opts.get("num_predict")
        num_ctx = opts.get("num_ctx")
        return (int(num_predict) if num_predict is not None else None, int(num_ctx) if num_ctx is not None else None)

    @staticmethod
    def keep_alive_of(body: dict[str, Any]) -> float | None:
        """Per-request keep_alive, 400 if malformed."""
        try:
            return keep_alive_from_request(body.get("keep_alive"))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None

    @staticmethod
    def check_capability(info: ModelInfo, requested: str, what: str) -> None:
        """400 ``"x" does not support generate`` for embedding-only models."""
        if "completion" not in info.capabilities:
            raise HttpError(400, f'"{requested}" does not support {what}')

    # -- general routes ----------------------------------------------------------------------
    def root(self, h: Handler) -> None:
        """``GET|HEAD /`` -> "Ollama is running"."""
        h.send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")

    def version(self, h: Handler) -> None:
        """``GET /api/version``."""
        h.send_json(200, {"version": self.settings.version})

    def standin_config(self, h: Handler) -> None:
        """STAND-IN ONLY: the effective settings of this process (+ live scheduler state)."""
        out = self.settings.as_json()
        with self.sched.lock:
            out["runtime"] = {
                "pending_requests": self.sched.pending,
                "active": {n: lm.refs for n, lm in self.sched.loaded.items()},
            }
        h.send_json(200, out)

    def tags(self, h: Handler) -> None:
        """``GET /api/tags``: installed models."""
        models = [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": go_time(m.modified_at),
                "size": m.size,
                "digest": m.digest,
                "details": m.details(),
            }
            for m in self.store.list()
        ]
        h.send_json(200, {"models": models})

    def ps(self, h: Handler) -> None:
        """``GET /api/ps``: models in memory with their keep-alive expiry."""
        models = []
        for lm in self.sched.snapshot():
            m = lm.info
            models.append(
                {
                    "name": m.name,
                    "model": m.name,
                    "size": m.size,
                    "digest": m.digest,
                    "details": m.details(),
                    "expires_at": go_time(lm.expires_at),
                    "size_vram": m.size if self.settings.vram else 0,
                    "context_length": lm.context_length,
                }
            )
        h.send_json(200, {"models": models})

    # -- model management ----------------------------------------------------------------------
    def pull(self, h: Handler) -> None:
        """``POST /api/pull``: NDJSON progress (or one JSON with stream=false)."""
        body = h.json_body()
        raw = body.get("model") or body.get("name") or ""
        name = normalize_name(raw) if raw else ""
        if not name or not valid_name(name):
            raise HttpError(400, "invalid model name")
        stream = body.get("stream", True) is not False
        events = self.pull_events(name)
        if not stream:
            last: dict[str, Any] = {}
            for event in events:
                if "error" in event:
                    raise HttpError(500, event["error"])
                last = event
            h.send_json(200, last)
            return
        h.start_stream("application/x-ndjson")
        for event in events:
            h.write_chunk(json.dumps(event, separators=(",", ":")).encode() + b"\n")
            if "error" in event:
                break
        h.end_stream()

    def pull_events(self, name: str) -> Iterator[dict[str, Any]]:
        """The progress sequence of a pull; installs the model at the end."""
        yield {"status": "pulling manifest"}
        if name not in self.settings.catalog:
            yield {"error": "pull model manifest: file does not exist"}
            return
        family, _, _, size, _, _ = catalog_entry(name)
        layers = [
            ("sha256:" + sha256_hex("weights:" + name), size - 1500),
            ("sha256:" + sha256_hex("template:" + name), 1400),
            ("sha256:" + sha256_hex("params:" + name), 100),
        ]
        for digest, total in layers:
            short = digest[7:19]
            yield {"status": f"pulling {short}", "digest": digest, "total": total}
            for frac in (0.5, 1.0):
                yield {"status": f"pulling {short}", "digest": digest, "total": total, "completed": int(total * frac)}
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        self.store.install(name)
        yield {"status": "success"}

    def show(self, h: Handler) -> None:
        """``POST /api/show``: model details and a generated Modelfile."""
        body = h.json_body()
        raw = body.get("model") or body.get("name") or ""
        if not raw:
            raise HttpError(400, "model is required")
        info = self.store.get(normalize_name(raw))
        if info is None:
            raise HttpError(404, f"model '{raw}' not found")
        modelfile = (
            f'# Modelfile generated by "ollama show"\n# To build a new Modelfile based '
            f"on this, replace FROM with:\n# FROM {info.name}\n\nFROM {info.name}\n"
            f'TEMPLATE "{{{{ .System }}}}\n{{{{ .Prompt }}}}"\n'
        )
        if info.system:
            modelfile += f'SYSTEM "{info.system}"\n'
        h.send_json(
            200,
            {
                "license": "Stand-in model: no license, no weights.",
                "modelfile": modelfile,
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .System }}\n{{ .Prompt }}",
                "system": info.system,
                "details": info.details(),
                "model_info": {
                    "general.architecture": info.family,
                    "general.file_type": 15,
                    "general.parameter_count": _param_count(info.parameter_size),
                    f"{info.family}.context_length": info.context_length,
                },
                "capabilities": info.capabilities,
                "modified_at": go_time(info.modified_at),
            },
        )

    def delete(self, h: Handler) -> None:
        """``DELETE /api/delete``: 200 with empty body, 404 when unknown."""
        body = h.json_body()
        raw = body.get("model") or body.get("name") or ""
        if not raw:
            raise HttpError(400, f"name {raw!r} is invalid")
        name = normalize_name(raw)
        if not self.store.delete(name):
            raise HttpError(404, f"model '{raw}' not found")
        self.sched.forget(name)
        h.send_bytes(200, b"", "text/plain; charset=utf-8")

    def copy(self, h: Handler) -> None:
        """``POST /api/copy`` {source, destination}."""
        body = h.json_body()
        src, dst = body.get("source") or "", body.get("destination") or ""
        if not src or not valid_name(normalize_name(src)):
            raise HttpError(400, f"source {src!r} is invalid")
        if not dst or not valid_name(normalize_name(dst)):
            raise HttpError(400, f"destination {dst!r} is invalid")
        info = self.store.get(normalize_name(src))
        if info is None:
            raise HttpError(404, f'model "{src}" not found')
        self.store.copy(normalize_name(src), normalize_name(dst))
        h.send_bytes(200, b"", "text/plain; charset=utf-8")

    def create(self, h: Handler) -> None:
        """``POST /api/create`` (minimal): ``from`` an installed model, optional ``system``."""
        body = h.json_body()
        raw = body.get("model") or body.get("name") or ""
        if not raw or not valid_name(normalize_name(raw)):
            raise HttpError(400, "model is required")
        base = body.get("from") or ""
        if not base and isinstance(body.get("modelfile"), str):
            m = re.search(r"^\s*FROM\s+(\S+)", body["modelfile"], re.I | re.M)
            base = m.group(1) if m else ""
        system = body.get("system") or ""
        if not system and isinstance(body.get("modelfile"), str):
            m = re.search(r'^\s*SYSTEM\s+"?([^"\n]*)"?', body["modelfile"], re.I | re.M)
            system = m.group(1) if m else ""
        if not base:
            raise HttpError(400, "neither 'from' or 'files' was specified")
        parent = self.store.get(normalize_name(base))
        events: list[dict[str, Any]] = [
            {"status": "using existing layer sha256:" + sha256_hex("weights:" + normalize_name(base))}
        ]
        if parent is None:
            events.append({"error": "pull model manifest: file does not exist"})
        else:
            events.append({"status": "creating new layer sha256:" + sha256_hex(system)})
            events.append({"status": "writing manifest"})
            self.store.install(normalize_name(raw), system=system, parent=parent.name, like=parent)
            events.append({"status": "success"})
        if body.get("stream", True) is False:
            if "error" in events[-1]:
                raise HttpError(500, events[-1]["error"])
            h.send_json(200, events[-1])
            return
        h.start_stream("application/x-ndjson")
        for event in events:
            h.write_chunk(json.dumps(event).encode() + b"\n")
        h.end_stream()

    # -- inference -------------------------------------------------------------------------------
    def generate(self, h: Handler) -> None:
        """``POST /api/generate``."""
        body = h.json_body()
        requested = body.get("model", "")
        info = self.require_model(requested)
        keep_alive = self.keep_alive_of(body)
        prompt = body.get("prompt") or ""
        if not prompt:
            self.load_or_unload(h, info, requested, keep_alive, chat=False)
            return
        self.check_capability(info, requested, "generate")
        num_predict, num_ctx = self.options_of(body)
        prompt_tokens = count_tokens(prompt) + count_tokens(body.get("system") or info.system)

        def line(token: str) -> dict[str, Any]:
            return {"model": requested, "created_at": go_time(utc=True), "response": token, "done": False}

        def final(gen: Generation, text: str) -> dict[str, Any]:
            out = {
                "model": requested,
                "created_at": go_time(utc=True),
                "response": text,
                "done": True,
                "done_reason": gen.done_reason,
                "context": [i + 1 for i in range(min(gen.eval_count + prompt_tokens, 64))],
            }
            out.update(gen.metrics())
            return out

        self.respond_generation(h, body, info, prompt_tokens, num_predict, keep_alive, num_ctx, line, final)

    def chat(self, h: Handler) -> None:
        """``POST /api/chat``."""
        body = h.json_body()
        requested = body.get("model", "")
        info = self.require_model(requested, status_if_missing=400)
        keep_alive = self.keep_alive_of(body)
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise HttpError(400, "json: cannot unmarshal messages")
        if not messages:
            self.load_or_unload(h, info, requested, keep_alive, chat=True)
            return
        self.check_capability(info, requested, "chat")
        num_predict, num_ctx = self.options_of(body)
        prompt_tokens = sum(count_tokens(str(m.get("content", ""))) + 4 for m in messages if isinstance(m, dict))

        def line(token: str) -> dict[str, Any]:
            return {
                "model": requested,
                "created_at": go_time(utc=True),
                "message": {"role": "assistant", "content": token},
                "done": False,
            }

        def final(gen: Generation, text: str) -> dict[str, Any]:
            out = {
                "model": requested,
                "created_at": go_time(utc=True),
                "message": {"role": "assistant", "content": text},
                "done": True,
                "done_reason": gen.done_reason,
            }
            out.update(gen.metrics())
            return out

        self.respond_generation(h, body, info, prompt_tokens, num_predict, keep_alive, num_ctx, line, final)

    def load_or_unload(self, h: Handler, info: ModelInfo, requested: str, keep_alive: float | None, chat: bool) -> None:
        """Empty prompt/messages: keep_alive 0 unloads, anything else (pre)loads."""
        if keep_alive == 0:
            self.sched.unload(info.name)
            reason = "unload"
        else:
            try:
                entry, _ = self.sched.acquire(info, keep_alive, None)
            except QueueFull as exc:
                raise HttpError(503, str(exc)) from None
            self.sched.release(entry)
            reason = "load"
        out: dict[str, Any] = {"model": requested, "created_at": go_time(utc=True)}
        if chat:
            out["message"] = {"role": "assistant", "content": ""}
        else:
            out["response"] = ""
        out.update({"done": True, "done_reason": reason})
        h.send_json(200, out)

    def respond_generation(
        self,
        h: Handler,
        body: dict[str, Any],
        info: ModelInfo,
        prompt_tokens: int,
        num_predict: int | None,
        keep_alive: float | None,
        num_ctx: int | None,
        line: Callable[[str], dict[str, Any]],
        final: Callable[[Generation, str], dict[str, Any]],
    ) -> None:
        """Stream NDJSON lines (default) or answer one JSON object (stream=false)."""
        if body.get("stream", True) is False:
            gen = self.run_tokens(info, prompt_tokens, num_predict, keep_alive, num_ctx, lambda _t: None)
            h.send_json(200, final(gen, gen.text))
            return
        started: list[bool] = []

        def emit(token: str) -> None:
            if not started:
                h.start_stream("application/x-ndjson")
                started.append(True)
            h.write_chunk(json.dumps(line(token), separators=(",", ":")).encode() + b"\n")

        gen = self.run_tokens(info, prompt_tokens, num_predict, keep_alive, num_ctx, emit)
        if not started:
            h.start_stream("application/x-ndjson")
        h.write_chunk(json.dumps(final(gen, ""), separators=(",", ":")).encode() + b"\n")
        h.end_stream()

    def embed_inputs(self, h: Handler, key: str) -> tuple[dict[str, Any], ModelInfo, list[str]]:
        """Parse an embed request: (body, model, inputs)."""
        body = h.json_body()
        raw = body.get("model") or ""
        if not raw:
            raise HttpError(400, "model is required")
        info = self.store.get(normalize_name(raw))
        if info is None:
            raise HttpError(404, f'model "{raw}" not found, try pulling it first')
        value = body.get(key)
        if value is None:
            inputs: list[str] = []
        elif isinstance(value, str):
            inputs = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            inputs = list(value)
        else:
            raise HttpError(400, "invalid input type")
        return body, info, inputs

    def _touch(self, info: ModelInfo, body: dict[str, Any]) -> float:
        """Load a model for a non-generating request; returns load seconds."""
        try:
            entry, load_s = self.sched.acquire(info, self.keep_alive_of(body), None)
        except QueueFull as exc:
            raise HttpError(503, str(exc)) from None
        self.sched.release(entry)
        return load_s

    def embed(self, h: Handler) -> None:
        """``POST /api/embed`` {model, input: str|[str]}."""
        start = time.monotonic()
        body, info, inputs = self.embed_inputs(h, "input")
        load_s = self._touch(info, body)
        h.send_json(
            200,
            {
                "model": body["model"],
                "embeddings": [embedding_for(t) for t in inputs],
                "total_duration": int((time.monotonic() - start) * 1e9),
                "load_duration": int(load_s * 1e9),
                "prompt_eval_count": sum(count_tokens(t) for t in inputs),
            },
        )

    def embeddings_legacy(self, h: Handler) -> None:
        """``POST /api/embeddings`` {model, prompt} (deprecated endpoint)."""
        body, info, inputs = self.embed_inputs(h, "prompt")
        self._touch(info, body)
        h.send_json(200, {"embedding": embedding_for(inputs[0]) if inputs else []})

    # -- OpenAI compatibility ---------------------------------------------------------------------
    def v1_models(self, h: Handler) -> None:
        """``GET /v1/models``."""
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": int(m.modified_at),
                "owned_by": m.name.split("/")[0] if "/" in m.name else "library",
            }
            for m in self.store.list()
        ]
        h.send_json(200, {"object": "list", "data": data})

    def v1_generate(self, h: Handler, chat: bool) -> None:
        """Shared body of /v1/chat/completions and /v1/completions (parameters: ShimOptions)."""
        body = h.json_body()
        requested = body.get("model") or ""
        prompt_tokens = openai_prompt_tokens(body, chat)
        info = self.require_model(requested)
        self.check_capability(info, requested, "chat" if chat else "generate")
        options = shim_options(body)
        if options.tools and chat:
            if "tools" not in info.capabilities:
                raise HttpError(400, f"{normalize_name(requested)} does not support tools")
            self.v1_tool_call(h, body, OpenAIReply(chat, requested), prompt_tokens)
            return
        max_tokens = body.get("max_tokens")  # max_completion_tokens: not in Ollama's request struct
        num_predict = int(max_tokens) if max_tokens is not None else None
        keep_alive = self.keep_alive_of(body)
        reply = OpenAIReply(chat, requested)
        fixed = structured_tokens(options.schema) if options.schema is not None else None

        def run(emit: Callable[[str], None]) -> Generation:
            return self.run_tokens(info, prompt_tokens, num_predict, keep_alive, None, emit, options.stop, fixed)

        top = options.logprobs
        if not body.get("stream"):
            gen = run(lambda _t: None)
            logprobs = None if top is None else [token_logprobs(t, top) for t in gen.tokens]
            whole = reply.envelope([reply.choice(gen.text, gen.done_reason, False, logprobs)], chunk=False)
            whole["usage"] = reply.usage(gen)
            h.send_json(200, whole)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.v1_stream(h, reply, run, include_usage, top)

    def v1_tool_call(self, h: Handler, body: dict[str, Any], reply: OpenAIReply, prompt_tokens: int) -> None:
        """A model that answers with a call of the first tool (finish_reason tool_calls)."""
        message = tool_call_message(shim_options(body).tools)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 12, "total_tokens": prompt_tokens + 12}
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            h.send_json(200, {**reply.envelope([choice], chunk=False), "usage": usage})
            return
        h.start_stream("text/event-stream")
        for choice in (
            {"index": 0, "delta": {"role": "assistant", "tool_calls": message["tool_calls"]}, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
        ):
            h.write_chunk(f"data: {json.dumps(reply.envelope([choice], chunk=True))}\n\n".encode())
        h.write_chunk(b"data: [DONE]\n\n")
        h.end_stream()

    @staticmethod
    def v1_stream(
        h: Handler,
        reply: OpenAIReply,
        run: Callable[[Callable[[str], None]], Generation],
        include_usage: bool,
        top: int | None = None,
    ) -> None:
        """Server-sent events: a chunk per token, the finishing chunk, usage if asked, ``[DONE]``.

        The stream (its headers) starts with the first event, so an error before any token (a full
        queue) is still answered as a plain error response.
        """
        started: list[bool] = []

        def send(payload: dict[str, Any] | str) -> None:
            if not started:
                h.start_stream("text/event-stream")
                started.append(True)
            data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
            h.write_chunk(f"data: {data}\n\n".encode())

        def token(t: str) -> None:
            logprobs = None if top is None else [token_logprobs(t, top)]
            send(reply.envelope([reply.choice(t, None, True, logprobs)], chunk=True))

        gen = run(token)
        send(reply.envelope([reply.choice("", gen.done_reason, True)], chunk=True))
        if include_usage:
            last = reply.envelope([], chunk=True)
            last["usage"] = reply.usage(gen)
            send(last)
        send("[DONE]")
        h.end_stream()

    def v1_chat(self, h: Handler) -> None:
        """``POST /v1/chat/completions``."""
        self.v1_generate(h, chat=True)

    def v1_completions(self, h: Handler) -> None:
        """``POST /v1/completions``."""
        self.v1_generate(h, chat=False)

    def v1_embeddings(self, h: Handler) -> None:
        """``POST /v1/embeddings``."""
        body, info, inputs = self.embed_inputs(h, "input")
        self._touch(info, body)
        h.send_json(
            200,
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "embedding": embedding_for(t), "index": i} for i, t in enumerate(inputs)
                ],
                "usage": {
                    "prompt_tokens": sum(count_tokens(t) for t in inputs),
                    "total_tokens": sum(count_tokens(t) for t in inputs),
                },
            },
        )


def _param_count(label: str) -> int:
    """'8.0B' -> 8000000000."""
    m = re.fullmatch(r"([\d.]+)([BM])", label or "")
    if not m:
        return 0
    return int(float(m.group(1)) * (1e9 if m.group(2) == "B" else 1e6))


# --------------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    """Threaded HTTP server; IPv6-aware, daemon threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(settings: Settings) -> tuple[Server, OllamaApp]:
    """Bind the listening socket for ``settings`` (OSError if the port is taken)."""
    app = OllamaApp(settings)
    handler = type("BoundHandler", (Handler,), {"app": app})
    host = settings.host or "0.0.0.0"
    if ":" in host:
        Server.address_family = socket.AF_INET6
    return Server((host, settings.port), handler), app


def log(msg: str, **fields: Any) -> None:
    """slog-style line on stderr, like the real server."""
    stamp = dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
    extra = "".join(f" {k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}" for k, v in fields.items())
    sys.stderr.write(f'time={stamp} level=INFO source=routes.go msg="{msg}"{extra}\n')
    sys.stderr.flush()


def cmd_serve() -> int:
    """``ollama serve``: run the API server in the foreground until SIGTERM/SIGINT."""
    settings = Settings.from_env(dict(os.environ))
    env_map = " ".join(f"{k}:{v}" for k, v in sorted(os.environ.items()) if k.startswith("OLLAMA_"))
    log("server config", env=f"map[{env_map}]")
    try:
        ModelStore(settings.models_dir).ensure_dirs()
    except OSError as exc:
        print(f"Error: mkdir {settings.models_dir}: {exc.strerror.lower()}", file=sys.stderr)
        return 1
    try:
        server, app = make_server(settings)
    except OSError as exc:
        reason = "address already in use" if exc.errno == 98 else (exc.strerror or str(exc))
        print(f"Error: listen tcp {settings.host}:{settings.port}: bind: {reason.lower()}", file=sys.stderr)
        return 1
    log(f"total models: {len(app.store.list())}")
    log(f"Listening on {settings.host}:{server.server_address[1]} (version {settings.version})")
    log("inference compute", id="0", library="standin", name="standin", total="24.0 GiB", available="23.5 GiB")

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except SystemExit:
        pass
    finally:
        server.server_close()
    return 0


# --------------------------------------------------------------------------------------------
# Client subcommands (talk to the server over HTTP, like the real CLI)
# --------------------------------------------------------------------------------------------

CONNECT_ERROR = "Error: could not connect to ollama server, run 'ollama serve' to start it"


def client_base() -> str:
    """Base URL of the server from OLLAMA_HOST (0.0.0.0 is dialled as-is, like Go)."""
    scheme, host, port = parse_ollama_host(os.environ.get("OLLAMA_HOST"))
    host = host or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def http_call(method: str, path: str, body: Any = None, timeout: float = 30.0) -> urllib.request.addinfourl:
    """Issue a request; raises urllib errors for the caller to map."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        client_base() + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    return urllib.request.urlopen(req, timeout=timeout)


def api_error(exc: urllib.error.HTTPError) -> str:
    """Extract the ``error`` message of an HTTP error response."""
    try:
        return json.loads(exc.read() or b"{}").get("error") or str(exc)
    except ValueError:
        return str(exc)


def human_bytes(n: float) -> str:
    """format.HumanBytes: '4.9 GB', '397 MB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f} {unit}" if v < 10 else f"{v:.0f} {unit}"
    return f"{int(n)} B"


def human_ago(iso: str) -> str:
    """'2 minutes ago' style age of a timestamp."""
    try:
        then = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    secs = (dt.datetime.now(dt.UTC) - then).total_seconds()
    if secs < 60:
        return "Less than a second ago" if secs < 1 else f"{int(secs)} seconds ago"
    if secs < 3600:
        return f"{int(secs // 60)} minutes ago"
    if secs < 86400:
        return f"{int(secs // 3600)} hours ago"
    return f"{int(secs // 86400)} days ago"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Left-aligned columns separated by spaces (like tabwriter)."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("    ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def cmd_version() -> int:
    """``ollama -v``: the server's version, warnings like the real client."""
    client_version = os.environ.get("OLLAMA_STANDIN_VERSION") or OLLAMA_VERSION
    server_version = ""
    try:
        with http_call("GET", "/api/version", timeout=3) as resp:
            server_version = json.loads(resp.read()).get("version", "")
    except (urllib.error.URLError, OSError, ValueError):
        print("Warning: could not connect to a running Ollama instance")
    if server_version:
        print(f"ollama version is {server_version}")
    if server_version != client_version:
        print(f"Warning: client version is {client_version}")
    return 0


def cmd_list() -> int:
    """``ollama list``."""
    with http_call("GET", "/api/tags") as resp:
        models = json.loads(resp.read())["models"]
    rows = [[m["name"], m["digest"][:12], human_bytes(m["size"]), human_ago(m["modified_at"])] for m in models]
    print_table(["NAME", "ID", "SIZE", "MODIFIED"], rows)
    return 0


def cmd_ps() -> int:
    """``ollama ps``."""
    with http_call("GET", "/api/ps") as resp:
        models = json.loads(resp.read())["models"]
    rows = []
    for m in models:
        until = m["expires_at"]
        year = int(until[:4]) if until[:4].isdigit() else 0
        rows.append(
            [
                m["name"],
                m["digest"][:12],
                human_bytes(m["size"]),
                "100% GPU" if m.get("size_vram") else "100% CPU",
                str(m.get("context_length", "")),
                "Forever" if year > 2200 else until,
            ]
        )
    print_table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows)
    return 0


def cmd_pull(name: str) -> int:
    """``ollama pull NAME``: print progress statuses, then 'success'."""
    with http_call("POST", "/api/pull", {"model": name, "stream": True}, timeout=600) as resp:
        last = ""
        for raw in resp:
            event = json.loads(raw)
            if "error" in event:
                print(f"Error: {event['error']}", file=sys.stderr)
                return 1
            status = event.get("status", "")
            if status != last:
                print(status)
                last = status
    return 0


def cmd_rm(names: list[str]) -> int:
    """``ollama rm NAME...``."""
    for name in names:
        try:
            http_call("DELETE", "/api/delete", {"model": name}).close()
        except urllib.error.HTTPError as exc:
            print(f"Error: {api_error(exc)}", file=sys.stderr)
            return 1
        print(f"deleted '{name}'")
    return 0


def cmd_run(name: str, prompt_words: list[str]) -> int:
    """``ollama run NAME [PROMPT]`` (non-interactive: prompt from args or stdin)."""
    prompt = " ".join(prompt_words) if prompt_words else sys.stdin.read()
    with http_call("POST", "/api/generate", {"model": name, "prompt": prompt}, timeout=600) as resp:
        for raw in resp:
            event = json.loads(raw)
            sys.stdout.write(event.get("response", ""))
            sys.stdout.flush()
    print()
    return 0


def cmd_stop(name: str) -> int:
    """``ollama stop NAME``: unload via keep_alive 0."""
    http_call("POST", "/api/generate", {"model": name, "keep_alive": 0}).close()
    return 0


def client_main(args: argparse.Namespace) -> int:
    """Run a client subcommand, mapping connection and API errors like the real CLI."""
    try:
        if args.command in ("list", "ls"):
            return cmd_list()
        if args.command == "ps":
            return cmd_ps()
        if args.command == "pull":
            return cmd_pull(args.model)
        if args.command == "rm":
            return cmd_rm(args.models)
        if args.command == "run":
            return cmd_run(args.model, args.prompt)
        if args.command == "stop":
            return cmd_stop(args.model)
    except urllib.error.HTTPError as exc:
        print(f"Error: {api_error(exc)}", file=sys.stderr)
        return 1
    except (TimeoutError, urllib.error.URLError, ConnectionError):
        print(CONNECT_ERROR, file=sys.stderr)
        return 1
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The CLI surface: subcommands of the real ``ollama`` binary that gpuctl uses."""
    parser = argparse.ArgumentParser(
        prog="ollama", description="Large language model runner (STAND-IN for tests, not the real Ollama)"
    )
    parser.add_argument("-v", "--version", action="store_true", help="Show version information")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="Start ollama")
    sub.add_parser("list", help="List models")
    sub.add_parser("ls", help="List models")
    sub.add_parser("ps", help="List running models")
    p = sub.add_parser("pull", help="Pull a model from a registry")
    p.add_argument("model")
    p = sub.add_parser("rm", help="Remove a model")
    p.add_argument("models", nargs="+")
    p = sub.add_parser("run", help="Run a model")
    p.add_argument("model")
    p.add_argument("prompt", nargs="*")
    p = sub.add_parser("stop", help="Stop a running model")
    p.add_argument("model")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``ollama_standin.py serve|list|pull|ps|rm|run|stop|--version``."""
    args = build_parser().parse_args(argv)
    if args.version:
        return cmd_version()
    if args.command == "serve":
        return cmd_serve()
    if args.command is None:
        build_parser().print_help()
        return 0
    return client_main(args)


if __name__ == "__main__":
    sys.exit(main())
