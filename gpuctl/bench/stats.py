"""Statistics of one concurrency level: percentiles, inter-token gaps and throughput.

Definitions (all times from the client's monotonic clock, `time.perf_counter`):
- TTFT: request sent → first streamed event carrying generated text.
- ITL (inter-token latency): every gap between two consecutive such events of one request, pooled
  over the level's requests (vLLM and Ollama stream one token per event; events that arrive in
  one read count as gaps of 0).
- E2E: request sent → end of its stream.
- window: the level's first request sent → its last stream ended.
- aggregate tok/s: output tokens (the server's usage figures) of the successful requests / window.
- per-stream tok/s: Σ output tokens / Σ E2E of the successful requests: what one user sees; equal
  to aggregate / concurrency when no worker is ever idle (the published table's figure).
- requests/s: successful requests / window.
Percentiles interpolate linearly between closest ranks (numpy's default).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestResult:
    """One streamed request as the client saw it."""

    start: float
    end: float = 0.0
    first_token: float | None = None
    gaps: list[float] = field(default_factory=list)
    events: int = 0  # streamed events that carried generated text
    prompt_tokens: int | None = None  # the server's usage figures
    output_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def e2e(self) -> float:
        return self.end - self.start


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) of VALUES, linear between closest ranks; VALUES must not be empty."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles | None:
        if not values:
            return None
        ordered = sorted(values)
        return cls(percentile(ordered, 50), percentile(ordered, 90), percentile(ordered, 99))

    def scaled(self, factor: float, digits: int) -> dict[str, float]:
        return {name: round(getattr(self, name) * factor, digits) for name in ("p50", "p90", "p99")}


@dataclass
class LevelStats:
    """Everything measured at one concurrency level."""

    concurrency: int
    requests: int  # successful
    errors: int
    error_kinds: dict[str, int]
    window_s: float
    output_tokens: int
    prompt_tokens: int
    output_tokens_range: tuple[int, int]
    events: int
    aggregate_tok_s: float
    per_stream_tok_s: float
    requests_per_s: float
    ttft_s: Percentiles | None
    itl_s: Percentiles | None
    e2e_s: Percentiles | None
    client_cpu_s: float

    @property
    def prompt_tokens_mean(self) -> float:
        return self.prompt_tokens / self.requests if self.requests else 0.0

    @property
    def output_tokens_mean(self) -> float:
        return self.output_tokens / self.requests if self.requests else 0.0

    @property
    def client_cpu_us_per_token(self) -> float | None:
        return self.client_cpu_s / self.output_tokens * 1e6 if self.output_tokens else None

    def as_dict(self) -> dict[str, Any]:
        def dist(p: Percentiles | None, factor: float, digits: int) -> dict[str, float] | None:
            return p.scaled(factor, digits) if p else None

        per_token = self.client_cpu_us_per_token
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "window_s": round(self.window_s, 4),
            "aggregate_tok_s": round(self.aggregate_tok_s, 2),
            "per_stream_tok_s": round(self.per_stream_tok_s, 2),
            "requests_per_s": round(self.requests_per_s, 3),
            "ttft_ms": dist(self.ttft_s, 1e3, 2),
            "itl_ms": dist(self.itl_s, 1e3, 3),
            "e2e_s": dist(self.e2e_s, 1, 4),
            "prompt_tokens": {"total": self.prompt_tokens, "mean": round(self.prompt_tokens_mean, 2)},
            "output_tokens": {
                "total": self.output_tokens,
                "mean": round(self.output_tokens_mean, 2),
                "min": self.output_tokens_range[0],
                "max": self.output_tokens_range[1],
            },
            "stream_events": self.events,
            "client_cpu_s": round(self.client_cpu_s, 4),
            "client_cpu_us_per_token": None if per_token is None else round(per_token, 3),
        }


def summarize(concurrency: int, results: Sequence[RequestResult], window_s: float, cpu_s: float) -> LevelStats:
    """Aggregate one level's requests; failed requests count only as errors."""
    ok = [r for r in results if r.ok]
    kinds = Counter(r.error for r in results if r.error is not None)
    outputs = [r.output_tokens or 0 for r in ok]
    output_tokens = sum(outputs)
    busy = sum(r.e2e for r in ok)
    window = max(window_s, 1e-9)
    return LevelStats(
        concurrency=concurrency,
        requests=len(ok),
        errors=sum(kinds.values()),
        error_kinds=dict(kinds.most_common()),
        window_s=window_s,
        output_tokens=output_tokens,
        prompt_tokens=sum(r.prompt_tokens or 0 for r in ok),
        output_tokens_range=(min(outputs), max(outputs)) if outputs else (0, 0),
        events=sum(r.events for r in ok),
        aggregate_tok_s=output_tokens / window,
        per_stream_tok_s=output_tokens / busy if busy > 0 else 0.0,
        requests_per_s=len(ok) / window,
        ttft_s=Percentiles.of([t for r in ok if (t := r.ttft) is not None]),
        itl_s=Percentiles.of([gap for r in ok for gap in r.gaps]),
        e2e_s=Percentiles.of([r.e2e for r in ok]),
        client_cpu_s=cpu_s,
    )
