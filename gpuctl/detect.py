"""What a bare URL serves, asked from the server itself (`gpuctl verify URL`, `gpuctl bench URL`).

Ollama answers GET /api/version and lists its models at /api/tags; vLLM answers GET /version and lists
its served models (with max_model_len) at /v1/models; any other server is taken as a generic
OpenAI-compatible one (/v1/models). A gpuctl gateway answers 401 on every route without its key: then
the key is asked for. One served model is picked by itself; several are listed and --model is asked for.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Literal

import requests

from gpuctl.errors import GpuctlError

PROBE_TIMEOUT_S = 10
EngineKind = Literal["vllm", "ollama", "openai"]


@dataclass
class Served:
    engine: EngineKind
    models: list[str]
    max_model_len: dict[str, int] = field(default_factory=dict)
    """Context length per model, where the server says it (vLLM's /v1/models)."""

    def pick(self, wanted: str | None, url: str) -> str:
        """WANTED (when the server serves it), else the only model; several: say which exist."""
        if wanted is not None:
            if self.models and wanted not in self.models and f"{wanted}:latest" not in self.models:  # Ollama's tag
                raise GpuctlError(f"{url} does not serve {wanted!r}; it serves: {', '.join(self.models)}")
            return wanted
        if len(self.models) == 1:
            return self.models[0]
        if not self.models:
            hint = "pull one first (ollama pull NAME)" if self.engine == "ollama" else "is the engine up?"
            raise GpuctlError(f"{url} lists no model: {hint}")
        raise GpuctlError(f"{url} serves several models: {', '.join(self.models)}: pick one with --model")


def _get(url: str, headers: dict[str, str], verify: str | bool) -> requests.Response:
    try:
        return requests.get(url, headers=headers, timeout=PROBE_TIMEOUT_S, verify=verify)
    except requests.exceptions.SSLError as exc:
        raise GpuctlError(
            f"{url}: TLS certificate not trusted ({type(exc).__name__}): for a gpuctl private CA, export "
            "SSL_CERT_FILE=INVENTORY_DIR/.gpuctl/NAME/ca.pem (gpuctl keys list shows the path)"
        ) from None
    except requests.RequestException as exc:
        raise GpuctlError(f"{url}: no answer ({type(exc).__name__}): is the address right and the engine up?") from None


def _json(response: requests.Response) -> dict:
    """The response's JSON object ({} for an error, or for a body that is not a JSON object)."""
    if not response.ok:
        return {}
    with contextlib.suppress(ValueError):
        data = response.json()
        return data if isinstance(data, dict) else {}
    return {}


def _version(response: requests.Response) -> bool:
    return "version" in _json(response)


def detect(url: str, api_key: str | None = None, engine: EngineKind | None = None, verify: str | bool = True) -> Served:
    """Ask URL what it serves (ENGINE: already known, skip guessing which server it is)."""
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if engine is None:
        ollama = _get(base + "/api/version", headers, verify)
        vllm = _get(base + "/version", headers, verify) if not _version(ollama) else None
        if ollama.status_code == 401 and (vllm is None or vllm.status_code == 401):
            said = "rejected the key given" if api_key else "wants a key (a gpuctl gateway?)"
            raise GpuctlError(f"{base} answers 401: it {said}: export it and pass --api-key-env VAR")
        engine = "ollama" if _version(ollama) else "vllm" if vllm is not None and _version(vllm) else "openai"
    if engine == "ollama":
        tags = _json(_get(base + "/api/tags", headers, verify))
        models = [m.get("name") for m in tags.get("models", []) if isinstance(m, dict) and m.get("name")]
        return Served("ollama", models)
    listed = _get(base + "/v1/models", headers, verify)
    if listed.status_code == 401:
        said = "rejected the key given" if api_key else "wants a key"
        raise GpuctlError(f"{base}/v1/models answers 401: the server {said}: pass --api-key-env VAR")
    data = [m for m in _json(listed).get("data", []) if isinstance(m, dict)]
    models = [m["id"] for m in data if m.get("id")]
    lengths = {m["id"]: int(m["max_model_len"]) for m in data if m.get("id") and m.get("max_model_len")}
    return Served(engine, models, lengths)
