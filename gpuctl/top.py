"""`gpuctl top`: a live view of every engine, refreshed every few seconds through the same access path as
`gpuctl status` (the engine's own port, directly or over an SSH tunnel).

Per engine: health, requests running and waiting, KV-cache usage, generation tokens/s (the rate of
vllm:generation_tokens_total between two samples), TTFT p50/p95 over the same interval (from the
vllm:time_to_first_token_seconds histogram, interpolated the way Prometheus' histogram_quantile does), and
the host's GPU memory. Ollama has no /metrics: its row shows health, version and the models loaded.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from gpuctl.access import engine_endpoint
from gpuctl.parallel import per_host
from gpuctl.spec import HostSpec, VllmSpec
from gpuctl.verify.openai_api import KV_GAUGES
from gpuctl.verify.remote import Remote

TIMEOUT_S = 5
TTFT = "vllm:time_to_first_token_seconds"
TOKENS = "vllm:generation_tokens"


@dataclass
class Sample:
    """One read of an engine's /metrics: gauges summed over label sets, the token counter, TTFT buckets."""

    at: float
    gauges: dict[str, float] = field(default_factory=dict)
    tokens: float | None = None
    ttft_buckets: dict[float, float] = field(default_factory=dict)
    """Upper bound (le) → cumulative count, summed over label sets."""


def parse_sample(text: str, at: float) -> Sample:
    sample = Sample(at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name == TTFT and s.name.endswith("_bucket"):
                bound = float(s.labels["le"])
                sample.ttft_buckets[bound] = sample.ttft_buckets.get(bound, 0.0) + s.value
            elif family.name == TOKENS and s.name.endswith("_total"):
                sample.tokens = (sample.tokens or 0.0) + s.value
            elif family.type == "gauge":
                sample.gauges[s.name] = sample.gauges.get(s.name, 0.0) + s.value
    return sample


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The Q-quantile of cumulative BUCKETS (le → count), linearly interpolated within its bucket as
    Prometheus' histogram_quantile does; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the +Inf bucket: the highest finite bound, as Prometheus answers
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


@dataclass
class TopRow:
    host: str
    engine: str
    health: str = "-"
    model: str = "-"
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    tokens_per_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    gpu_memory: str = "-"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rates(row: TopRow, before: Sample | None, now: Sample) -> None:
    """Fill ROW's gauges from NOW and its rates from the interval BEFORE → NOW (a restart resets counters:
    no rate then)."""
    row.running = now.gauges.get("vllm:num_requests_running")
    row.waiting = now.gauges.get("vllm:num_requests_waiting")
    row.kv_cache_usage = next((now.gauges[g] for g in KV_GAUGES if g in now.gauges), None)
    if before is None or now.at <= before.at:
        return
    if now.tokens is not None and before.tokens is not None and now.tokens >= before.tokens:
        row.tokens_per_s = (now.tokens - before.tokens) / (now.at - before.at)
    delta = {b: now.ttft_buckets[b] - before.ttft_buckets.get(b, 0.0) for b in now.ttft_buckets}
    if all(v >= 0 for v in delta.values()):
        row.ttft_p50_s = histogram_quantile(0.5, delta)
        row.ttft_p95_s = histogram_quantile(0.95, delta)


class HostWatch:
    """One host's engines, their endpoints held open (tunnels stay up between refreshes)."""

    def __init__(self, host: HostSpec) -> None:
        self.host, self.remote = host, Remote(host)
        self.stack = contextlib.ExitStack()
        self.urls: dict[str, str | Exception] = {}
        self.previous: dict[str, Sample] = {}
        for engine in host.engines():
            try:
                self.urls[engine.label] = self.stack.enter_context(engine_endpoint(self.remote, host, engine))
            except Exception as exc:  # noqa: BLE001 - one engine's row says why; the other tunnels stay managed
                self.urls[engine.label] = exc

    def gpu_memory(self) -> str:
        if self.host.gpus is None:
            return "-"
        query = "nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits"
        lines = [line.split(",") for line in self.remote.run(query, timeout=10).stdout.splitlines() if "," in line]
        return " ".join(f"{u.strip()}/{t.strip()} MiB" for u, t in lines) or "nvidia-smi failed"

    def read(self) -> list[TopRow]:
        gpu = self.gpu_memory()
        rows = []
        for engine in self.host.engines():
            row = TopRow(self.host.name, engine.label, gpu_memory=gpu)
            url = self.urls[engine.label]
            if isinstance(url, Exception):
                row.health, row.error = "down", str(url)[:160]
            elif isinstance(engine, VllmSpec):
                row.model = engine.served_name
                self.read_vllm(row, url)
            else:
                read_ollama(row, url)
            rows.append(row)
        return rows

    def read_vllm(self, row: TopRow, url: str) -> None:
        answers = fetch(row, url, "/health", "/metrics")
        if answers is None:
            return
        health, metrics = answers
        row.health = str(health.status_code)
        if metrics.ok:
            now = parse_sample(metrics.text, time.monotonic())
            rates(row, self.previous.get(row.engine), now)
            self.previous[row.engine] = now


def fetch(row: TopRow, url: str, *paths: str) -> list[requests.Response] | None:
    """GET each of PATHS from the engine at URL; None (ROW marked down, with why) when one gets no answer."""
    try:
        return [requests.get(url + path, timeout=TIMEOUT_S) for path in paths]
    except requests.RequestException as exc:
        row.health, row.error = "down", str(exc)[:160]
        return None


def read_ollama(row: TopRow, url: str) -> None:
    answers = fetch(row, url, "/api/version", "/api/ps")
    if answers is None:
        return
    version, ps = answers
    row.health = str(version.status_code)
    if ps.ok:
        loaded = [m.get("name", "?") for m in ps.json().get("models", [])]
        row.model = ", ".join(loaded) or "(none loaded)"
        row.running = float(len(loaded))


@contextlib.contextmanager
def watching(hosts: list[HostSpec]) -> Iterator[list[HostWatch]]:
    """Every host's engines, endpoints open until the block ends."""
    watches: list[HostWatch] = []
    try:
        watches = per_host(hosts, lambda h: [HostWatch(h)])
        yield watches
    finally:
        for watch in watches:
            watch.stack.close()


def refresh(watches: list[HostWatch]) -> list[TopRow]:
    """Every engine's row now (hosts read in parallel, rows in inventory order)."""
    by_host = {id(w.host): w for w in watches}
    return per_host([w.host for w in watches], lambda h: by_host[id(h)].read())
