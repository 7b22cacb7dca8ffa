"""What an application needs to talk to an engine gpuctl deployed (`gpuctl env TARGET`): the OpenAI client's
base URL and key, the CA to trust and the model name, as shell exports, a dotenv file or JSON.

The same application code then runs against the laptop and against production: `eval "$(gpuctl env
dev-laptop)"` or `eval "$(gpuctl env prod)"` switch it. The key is given by reference (the command that
reads it, or the file it is in), never its value unless asked (`--reveal`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuctl.access import beside, trusted_ca
from gpuctl.endpoints import key_name
from gpuctl.errors import GpuctlError
from gpuctl.keystore import Keystore
from gpuctl.spec import (
    EndpointSpec,
    HostSpec,
    OllamaSpec,
    SecretRef,
    VllmSpec,
    bracketed,
    full_model_name,
    is_loopback,
)

Engine = VllmSpec | OllamaSpec
Format = Literal["shell", "dotenv", "json"]
NO_KEY = {"ollama": "ollama", "vllm": "EMPTY"}
"""What the OpenAI client gets as its (required) key when the engine checks none: the placeholders Ollama's
and vLLM's own documentation use."""


@dataclass(frozen=True)
class KeyRef:
    """Where the key is: a file, an environment variable, or no key at all (a placeholder value)."""

    file: Path | None = None
    env: str | None = None
    placeholder: str | None = None

    def value(self) -> str:
        if self.placeholder is not None:
            return self.placeholder
        if self.env is not None:
            return SecretRef(env=self.env).resolve()
        assert self.file is not None
        return SecretRef(file=str(self.file)).resolve()


def key_ref(ref: SecretRef, base_dir: Path) -> KeyRef:
    """Where the inventory's secret reference REF points: an environment variable, or a file beside it."""
    return KeyRef(env=ref.env) if ref.env else KeyRef(file=beside(base_dir, ref.file or ""))


@dataclass(frozen=True)
class AppEnv:
    """One engine as an application reaches it."""

    host: str
    engine: str
    base_url: str
    model: str | None
    key: KeyRef
    ca_file: Path | None
    note: str | None = None


def model_of(engine: Engine) -> str | None:
    """The name applications send: vLLM's served name; Ollama's first alias (the shared name), else its
    first model."""
    if isinstance(engine, VllmSpec):
        return engine.served_name
    return next(iter(engine.aliases), None) or (engine.models[0] if engine.models else None)


def names_of(engine: Engine) -> list[str]:
    """Every name clients may send ENGINE: vLLM's served name; Ollama's aliases and pulled tags."""
    if isinstance(engine, VllmSpec):
        return [engine.served_name]
    return [*engine.aliases, *engine.models]


def serves(engine: Engine, model: str) -> bool:
    if isinstance(engine, OllamaSpec):
        return full_model_name(model) in {full_model_name(n) for n in names_of(engine)}
    return model in names_of(engine)


def pick(
    hosts: list[HostSpec], label: str, model: str | None, engine: str | None
) -> tuple[HostSpec, Engine, str | None]:
    """The first engine of HOSTS serving MODEL (and named ENGINE); a note when others could have been meant."""
    found = [
        (host, e)
        for host in hosts
        for e in host.engines()
        if (model is None or serves(e, model)) and (engine is None or e.label == engine or e.name == engine)
    ]
    if not found:
        wanted = " and ".join(x for x in (f"model {model}" if model else "", f"engine {engine}" if engine else "") if x)
        served = sorted({m for h in hosts for e in h.engines() for m in names_of(e)})
        raise GpuctlError(f"{label}: no engine serves {wanted or 'anything'} (served: {', '.join(served) or 'none'})")
    host, chosen = found[0]
    note = None
    if len(found) > 1:
        others = ", ".join(f"{h.name} {e.label}" for h, e in found[1:4]) + (", …" if len(found) > 4 else "")
        note = f"the first of {len(found)} engines of {label}; others: {others}; name a host, or use --model"
    return host, chosen, note


def app_env(
    host: HostSpec,
    engine: Engine,
    keystore: Keystore,
    base_dir: Path,
    note: str | None = None,
    model: str | None = None,
) -> AppEnv:
    """How an application reaches ENGINE of HOST (asking for MODEL, default its shared name): its gateway when
    it has one, else the engine itself."""
    model = model or model_of(engine)
    if host.gateway is not None:
        gateway = host.gateway
        if gateway.api_key is not None:
            key = key_ref(gateway.api_key, base_dir)
        else:
            key = KeyRef(file=keystore.path(keystore.api_key_name(host.name)))
        ca = trusted_ca(gateway, keystore, base_dir)
        return AppEnv(host.name, engine.label, f"{host.gateway_url(engine)}/v1", model, key, ca, note)
    if is_loopback(engine.bind) and not host.local:
        raise GpuctlError(
            f"{host.name}: {engine.label} listens on {engine.bind} and the host has no gateway, so no application "
            f"elsewhere reaches it: add gateway=Gateway() to the host (or use "
            f"ssh -L {engine.port}:{bracketed(engine.bind)}:{engine.port} {host.address} "
            f"and http://127.0.0.1:{engine.port}/v1)"
        )
    where = "127.0.0.1" if host.local and engine.bind in ("0.0.0.0", "::") else engine.bind
    if engine.bind in ("0.0.0.0", "::") and not host.local:
        where = host.address or engine.bind
    base = f"http://{bracketed(where)}:{engine.port}/v1"
    own = engine.api_key if isinstance(engine, VllmSpec) else None
    if own is not None:
        key = key_ref(own, base_dir)
    else:
        key = KeyRef(placeholder=NO_KEY["vllm" if isinstance(engine, VllmSpec) else "ollama"])
    return AppEnv(host.name, engine.label, base, model, key, None, note)


def endpoint_env(
    front: HostSpec, endpoint: EndpointSpec, keystore: Keystore, base_dir: Path, model: str | None = None
) -> AppEnv:
    """How an application reaches a fleet endpoint: its URL, its own key, the CA of its certificate."""
    if model is not None and model != endpoint.model:
        raise GpuctlError(f"endpoint {endpoint.name} serves {endpoint.model}, not {model}")
    if endpoint.api_key is not None:
        key = key_ref(endpoint.api_key, base_dir)
    else:
        key = KeyRef(file=keystore.path(keystore.api_key_name(key_name(endpoint))))
    ca = trusted_ca(endpoint.listener(), keystore, base_dir)
    hosts = f"{len(endpoint.hosts)} hosts"
    return AppEnv(f"endpoint {endpoint.name}", hosts, f"{endpoint.url(front)}/v1", endpoint.model, key, ca)


def render(env: AppEnv, fmt: Format, reveal: bool) -> str:
    """ENV as shell exports (eval-able), a dotenv file, or JSON."""
    if fmt == "json":
        return json.dumps(as_json(env, reveal), indent=2) + "\n"
    lines = [f"# gpuctl env: {env.host} {env.engine}" + (f" ({env.note})" if env.note else "")]
    values: dict[str, str | None] = {"OPENAI_BASE_URL": env.base_url, "OPENAI_MODEL": env.model}
    values["SSL_CERT_FILE"] = str(env.ca_file) if env.ca_file else None
    if fmt == "shell":
        for name, value in values.items():
            lines.append(f"export {name}={shlex.quote(value)}" if value else f"unset {name}")
        lines.append(f"export OPENAI_API_KEY={shell_key(env.key, reveal)}")
    else:
        lines += [f"{name}={value}" for name, value in values.items() if value]
        if reveal or env.key.placeholder is not None:
            lines.append(f"OPENAI_API_KEY={env.key.value()}")
        else:
            where = f"file {env.key.file}" if env.key.file else f"environment variable {env.key.env}"
            lines.append(f"# OPENAI_API_KEY: the value of {where} (gpuctl env --reveal writes it here)")
    return "\n".join(lines) + "\n"


def shell_key(key: KeyRef, reveal: bool) -> str:
    if reveal or key.placeholder is not None:
        return shlex.quote(key.value())
    if key.env is not None:
        return f'"${{{key.env}:?set {key.env} (the API key)}}"'
    return f'"$(cat {shlex.quote(str(key.file))})"'


def as_json(env: AppEnv, reveal: bool) -> dict[str, object]:
    key: object
    if reveal or env.key.placeholder is not None:
        key = env.key.value()
    else:
        key = {"file": str(env.key.file)} if env.key.file else {"env": env.key.env}
    return {
        "host": env.host,
        "engine": env.engine,
        "OPENAI_BASE_URL": env.base_url,
        "OPENAI_MODEL": env.model,
        "OPENAI_API_KEY": key,
        "SSL_CERT_FILE": str(env.ca_file) if env.ca_file else None,
        "note": env.note,
    }
