"""Bench results as the published table (rich), as JSON and as CSV rows; the API key is never among them."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from gpuctl.bench import reference
from gpuctl.bench.client import Settings
from gpuctl.bench.prompts import Calibration
from gpuctl.bench.stats import LevelStats, Percentiles


@dataclass
class Run:
    """One engine benched: where, what, and the levels measured (or why it could not be)."""

    host: str
    engine_name: str  # vllm:NAME, ollama, or the URL's engine
    engine_label: str  # "vLLM FP16", "Ollama Q4_K_M (/v1)"
    api: str
    model: str
    gpu_label: str
    subject: reference.Subject
    url: str | None = None
    via: str = "direct"
    calibration: Calibration | None = None
    levels: list[LevelStats] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.levels) and all(level.errors == 0 for level in self.levels)

    def comparison(self, level: LevelStats) -> reference.Comparison | None:
        row = self.subject.row(level.concurrency)
        if row is None or level.requests == 0:
            return None
        return reference.Comparison(row, level.aggregate_tok_s, level.per_stream_tok_s)

    def as_dict(self) -> dict[str, Any]:
        cal = self.calibration
        levels = []
        for level in self.levels:
            data = level.as_dict()
            comparison = self.comparison(level)
            data["reference"] = comparison.as_dict() if comparison else None
            levels.append(data)
        return {
            "host": self.host,
            "engine": self.engine_name,
            "engine_label": self.engine_label,
            "api": self.api,
            "model": self.model,
            "gpu": self.gpu_label,
            "url": self.url,
            "via": self.via,
            "ok": self.ok,
            "error": self.error,
            "prompt": None
            if cal is None
            else {
                "target_tokens": cal.target_tokens,
                "words": cal.words,
                "probes": cal.probes,
                "calibration_error": cal.error,
            },
            "levels": levels,
        }


def settings_dict(settings: Settings) -> dict[str, Any]:
    return {
        "concurrency": settings.concurrency,
        "requests": settings.requests,
        "duration_s": settings.duration_s,
        "prompt_tokens": settings.prompt_tokens,
        "output_tokens": settings.output_tokens,
        "seed": settings.seed,
        "request_timeout_s": settings.request_timeout_s,
    }


def as_json(runs: list[Run], settings: Settings) -> dict[str, Any]:
    return {
        "ok": all(r.ok for r in runs),
        "settings": settings_dict(settings),
        "reference_source": reference.SOURCE,
        "runs": [r.as_dict() for r in runs],
    }


RUN_COLUMNS = ("host", "engine", "engine_label", "api", "model", "gpu")
"""Columns from the run, named as in its JSON."""
LEVEL_COLUMNS = (
    "concurrency",
    "requests",
    "errors",
    "window_s",
    "aggregate_tok_s",
    "per_stream_tok_s",
    "requests_per_s",
)
"""Columns copied from the level's JSON as they are."""
PERCENTILES = ("p50", "p90", "p99")
LATENCIES = ("ttft_ms", "itl_ms", "e2e_s")
REFERENCE_KEYS = ("aggregate_tok_s", "per_stream_tok_s", "aggregate_delta_pct", "per_stream_delta_pct", "verdict")
"""The published comparison's JSON keys, each a column reference_KEY."""

CSV_COLUMNS = [
    *RUN_COLUMNS,
    *LEVEL_COLUMNS,
    *(f"{name}_{p}" for name in LATENCIES for p in PERCENTILES),  # ttft_ms_p50 … e2e_s_p99
    "prompt_tokens_mean",
    "output_tokens_mean",
    "output_tokens_total",
    "client_cpu_us_per_token",
    *(f"reference_{key}" for key in REFERENCE_KEYS),
]


def csv_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run and level, columns CSV_COLUMNS (empty where nothing was measured)."""
    rows = []
    for run in runs:
        d = run.as_dict()
        for lv in d["levels"]:
            row: dict[str, Any] = {k: d[k] for k in RUN_COLUMNS}
            row.update({k: lv[k] for k in (*LEVEL_COLUMNS, "client_cpu_us_per_token")})
            for name in LATENCIES:
                for p in PERCENTILES:
                    row[f"{name}_{p}"] = (lv[name] or {}).get(p, "")
            row["prompt_tokens_mean"] = lv["prompt_tokens"]["mean"]
            row["output_tokens_mean"] = lv["output_tokens"]["mean"]
            row["output_tokens_total"] = lv["output_tokens"]["total"]
            ref = lv["reference"] or {}
            row.update({f"reference_{key}": ref.get(key, "") for key in REFERENCE_KEYS})
            rows.append({k: "" if row.get(k) is None else row.get(k, "") for k in CSV_COLUMNS})
    return rows


def write_csv(path: Path, runs: list[Run]) -> None:
    with path.open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(runs))


def _ms(p: Percentiles | None) -> str:
    return "-" if p is None else f"{p.p50 * 1e3:,.1f}/{p.p90 * 1e3:,.1f}/{p.p99 * 1e3:,.1f}"


def _s(p: Percentiles | None) -> str:
    return "-" if p is None else f"{p.p50:,.2f}/{p.p90:,.2f}/{p.p99:,.2f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


TABLE_COLUMNS = (
    "host",
    "GPU",
    "engine",
    "model",
    "conc.",
    "aggregate tok/s",
    "per-stream tok/s",
    "published",
    "Δ",
    "TTFT ms p50/90/99",
    "ITL ms p50/90/99",
    "E2E s p50/90/99",
    "req/s",
    "tok in/out",
    "ok/err",
)
RIGHT_ALIGNED = {"conc.", "aggregate tok/s", "per-stream tok/s", "req/s", "ok/err"}


def print_table(out: Console, runs: list[Run], settings: Settings) -> None:
    """The published table's columns (GPU | engine | concurrency | aggregate tok/s | per-stream tok/s),
    the published figures beside each measurement that has some, then latencies and counts."""
    table = Table(
        title=f"gpuctl bench: ~{settings.prompt_tokens} tokens in / {settings.output_tokens} out, "
        "closed loop, streamed",
        title_justify="left",
    )
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="right" if column in RIGHT_ALIGNED else "left")
    for run in runs:
        host = run.host if run.via == "direct" else f"{run.host} via {run.via}"
        who = (host, run.gpu_label, run.engine_label, run.model)
        if run.error is not None and not run.levels:
            table.add_row(*who, *["-"] * (len(TABLE_COLUMNS) - len(who) - 1), "failed")
            continue
        for level in run.levels:
            table.add_row(*who, *_level_cells(run, level))
    if not out.is_terminal:  # pipes and logs get whole rows (a wrapped cell would split a row in two)
        out.width = max(out.width, Measurement.get(out, out.options.update_width(10_000), table).maximum)
    out.print(table)
    for line in notes(runs, settings):
        out.print(line)


def _level_cells(run: Run, level: LevelStats) -> tuple[str, ...]:
    """A level's cells from "conc." on."""
    comparison = run.comparison(level)
    published = delta = "-"
    if comparison:
        published = f"{_rate(comparison.row.aggregate_tok_s)} / {_rate(comparison.row.per_stream_tok_s)}"
        delta = f"{comparison.aggregate_delta:+.0%} / {comparison.per_stream_delta:+.0%}"
    tokens = f"{level.prompt_tokens_mean:,.0f} / {level.output_tokens_mean:,.0f}" if level.requests else "-"
    return (
        str(level.concurrency),
        _rate(level.aggregate_tok_s),
        _rate(level.per_stream_tok_s),
        published,
        delta,
        _ms(level.ttft_s),
        _ms(level.itl_s),
        _s(level.e2e_s),
        f"{level.requests_per_s:,.2f}",
        tokens,
        f"{level.requests}/{level.errors}",
    )


def notes(runs: list[Run], settings: Settings) -> list[str]:
    """Lines under the table: errors, client CPU, prompt calibration, and the reference's source."""
    lines = []
    compared = False
    for run in runs:
        who = run.host if run.engine_name == "?" else f"{run.host} {run.engine_name}"
        if run.error is not None:
            lines.append(f"{who}: {run.error}")
        if run.calibration and run.calibration.error:
            lines.append(
                f"{who}: prompt calibration failed ({run.calibration.error}); prompts of {run.calibration.words} words"
            )
        for level in run.levels:
            low, high = level.output_tokens_range
            if level.requests and (low, high) != (settings.output_tokens, settings.output_tokens):
                lines.append(
                    f"{who} c={level.concurrency}: replies had {low}–{high} tokens (mean "
                    f"{level.output_tokens_mean:,.1f}), not the {settings.output_tokens} asked for: the "
                    "server stopped early (Ollama's num_predict is only a maximum)"
                )
            for message, count in list(level.error_kinds.items())[:3]:
                lines.append(f"{who} c={level.concurrency}: {count} × {message}")
            per_token = level.client_cpu_us_per_token
            if per_token is not None:
                lines.append(
                    f"{who} c={level.concurrency}: client CPU {per_token:,.1f} µs per output token "
                    f"({level.client_cpu_s / max(level.window_s, 1e-9):.0%} of one core), "
                    f"{level.output_tokens:,} tokens in {level.window_s:,.1f} s"
                )
            comparison = run.comparison(level)
            if comparison is not None:
                compared = True
                lines.append(
                    f"{who} c={level.concurrency}: {_rate(level.aggregate_tok_s)} tok/s is "
                    f"{abs(comparison.aggregate_delta):.0%} {'below' if comparison.aggregate_delta < 0 else 'above'} "
                    f"the published {_rate(comparison.row.aggregate_tok_s)} ({comparison.row.gpu_label}, "
                    f"{comparison.row.engine_label}): {comparison.verdict}"
                )
        published = sorted({r.concurrency for r in run.subject.rows()})
        if published and not any(run.comparison(level) for level in run.levels):
            lines.append(f"{who}: published figures exist at concurrency {', '.join(map(str, published))}")
    if compared:
        lines.append(f"published: {reference.SOURCE}; a Δ within ±{reference.TOLERANCE:.0%} reads 'as published'")
        if (settings.prompt_tokens, settings.output_tokens) != (reference.PROMPT_TOKENS, reference.OUTPUT_TOKENS):
            lines.append(
                f"note: these prompts ({settings.prompt_tokens} in / {settings.output_tokens} out) differ from "
                f"the published ones (~{reference.PROMPT_TOKENS} / ~{reference.OUTPUT_TOKENS})"
            )
    return lines
