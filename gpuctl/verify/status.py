"""`gpuctl status`: a fleet table in seconds.

vLLM's /health answers 200 while its engine core is hung (vllm #39863), so by default status asks each healthy
vLLM engine for one token (max_tokens=1, at most PROBE_S seconds): an engine that gives none is shown as
not generating. `--no-probe` sends nothing that generates (for frequent polling)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from gpuctl.access import engine_endpoint, engine_key
from gpuctl.errors import GpuctlError
from gpuctl.parallel import per_host
from gpuctl.spec import HostSpec, VllmSpec
from gpuctl.verify.openai_api import KV_GAUGES, parse_metrics
from gpuctl.verify.remote import Remote

TIMEOUT_S = 5
PROBE_S = 5.0


@dataclass
class StatusRow:
    host: str
    engine: str
    unit: str = "-"
    health: str = "-"
    version: str = "-"
    model: str = "-"
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    generating: bool | None = None
    gpu_memory: str = "-"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Probe:
    """The one-token probe: the folder the inventory's secrets are relative to, and its time limit (None: off)."""

    base_dir: Path
    seconds: float | None = PROBE_S


def fleet_status(hosts: list[HostSpec], probe: Probe) -> list[StatusRow]:
    return per_host(hosts, lambda h: host_status(h, probe))


def host_status(host: HostSpec, probe: Probe) -> list[StatusRow]:
    remote = Remote(host)
    if not host.local:
        reach = remote.reachable()
        if not reach.ok:
            return [StatusRow(host.name, "-", error=f"unreachable: {reach.stderr.strip()[:160]}")]
    gpu_memory = "-"
    if host.gpus is not None:
        out = remote.run("nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits", timeout=10)
        gpu_memory = (
            " ".join(
                f"{u.strip()}/{t.strip()} MiB"
                for u, t in (line.split(",") for line in out.stdout.split("\n") if "," in line)
            )
            or "nvidia-smi failed"
        )
    rows = []
    for engine in host.engines():
        row = StatusRow(host.name, engine.label, gpu_memory=gpu_memory)
        row.unit = (
            remote.run(f"{engine.systemctl} is-active {engine.unit_name}", timeout=10).stdout.strip() or "unknown"
        )
        try:
            with engine_endpoint(remote, host, engine) as base_url:
                read_engine(row, engine, base_url)
                if isinstance(engine, VllmSpec) and row.health == "200" and probe.seconds:
                    row.generating = probe_engine(base_url, engine, probe)
        except (ConnectionError, requests.RequestException) as exc:
            row.health, row.error = "down", str(exc)[:160]
        rows.append(row)
    return rows or [StatusRow(host.name, "-", error="no engine in the spec")]


def read_engine(row: StatusRow, engine: Any, base_url: str) -> None:
    http = requests.Session()
    if isinstance(engine, VllmSpec):
        row.model = engine.served_name
        health = _get(http, base_url + "/health")
        row.health = str(health.status_code) if health is not None else "down"
        version = _get(http, base_url + "/version")
        row.version = version.json().get("version", "-") if version is not None and version.ok else "-"
        metrics = _get(http, base_url + "/metrics")
        if metrics is not None and metrics.ok:
            values = parse_metrics(metrics.text)
            row.running = values.get("vllm:num_requests_running")
            row.waiting = values.get("vllm:num_requests_waiting")
            row.kv_cache_usage = next((values[g] for g in KV_GAUGES if g in values), None)
        return
    version = _get(http, base_url + "/api/version")
    row.health = "200" if version is not None and version.ok else "down"
    row.version = version.json().get("version", "-") if version is not None and version.ok else "-"
    ps = _get(http, base_url + "/api/ps")
    if ps is not None and ps.ok:
        loaded = [m.get("name", "?") for m in ps.json().get("models", [])]
        row.model = ", ".join(loaded) or "(none loaded)"
        row.running = float(len(loaded))


def probe_engine(base_url: str, engine: VllmSpec, probe: Probe) -> bool | None:
    """Whether ENGINE generates: a one-token request, and when it times out, whether the engine's
    generation_tokens_total moved meanwhile (a busy engine is slow to answer but still generating).
    None when unknown (the key cannot be read here, or the engine refused the request)."""
    try:
        key = engine_key(engine, probe.base_dir)
    except GpuctlError:
        return None
    before = generated(base_url)
    answered = generates(base_url, engine, key, probe.seconds or PROBE_S)
    if answered is False and before is not None and (generated(base_url) or 0.0) > before:
        return True
    return answered


def generated(base_url: str) -> float | None:
    """The engine's vllm:generation_tokens_total (None when /metrics does not answer)."""
    response = _get(requests.Session(), base_url + "/metrics")
    if response is None or not response.ok:
        return None
    return parse_metrics(response.text).get("vllm:generation_tokens_total")


def generates(base_url: str, engine: VllmSpec, key: str | None, seconds: float) -> bool | None:
    """Whether the engine gives one token within SECONDS; None when it refuses the request (not a hang)."""
    body = {"model": engine.served_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = requests.post(base_url + "/v1/chat/completions", json=body, headers=headers, timeout=seconds)
    except requests.Timeout:
        return False
    except requests.RequestException:
        return None
    return True if response.ok else None


def _get(http: requests.Session, url: str) -> requests.Response | None:
    with contextlib.suppress(requests.RequestException):
        return http.get(url, timeout=TIMEOUT_S)
    return None
