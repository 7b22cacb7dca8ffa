"""The Grafana dashboard gpuctl ships (`gpuctl dashboard`, and dashboards/gpuctl.json in the repository):
one row of panels per concern, each panel one query per engine or host, over the Prometheus that
`Monitoring(...)` installs (its job and label names: host, engine). Import it in Grafana and pick the
Prometheus data source."""

from __future__ import annotations

import re
from typing import Any

ENGINE = 'host=~"$host", engine=~"$engine"'
HOST = 'host=~"$host"'

PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    # (title, unit, [(legend, PromQL)])
    (
        "Engine up (its /metrics answers)",
        "none",
        [("{{host}} {{engine}}", f'up{{job=~"gpuctl-engines-.*", {ENGINE}}}')],
    ),
    (
        "Requests running / waiting",
        "none",
        [
            ("running {{host}} {{engine}}", f"sum by (host, engine) (vllm:num_requests_running{{{ENGINE}}})"),
            ("waiting {{host}} {{engine}}", f"sum by (host, engine) (vllm:num_requests_waiting{{{ENGINE}}})"),
        ],
    ),
    (
        "KV cache usage",
        "percentunit",
        [("{{host}} {{engine}}", f"max by (host, engine) (vllm:kv_cache_usage_perc{{{ENGINE}}})")],
    ),
    (
        "Generated tokens/s",
        "none",
        [("{{host}} {{engine}}", f"sum by (host, engine) (rate(vllm:generation_tokens_total{{{ENGINE}}}[1m]))")],
    ),
    (
        "Time to first token p50 / p95",
        "s",
        [
            (
                f"p{int(q * 100)} {{{{host}}}} {{{{engine}}}}",
                f"histogram_quantile({q}, sum by (le, host, engine) "
                f"(rate(vllm:time_to_first_token_seconds_bucket{{{ENGINE}}}[5m])))",
            )
            for q in (0.5, 0.95)
        ],
    ),
    (
        "Request latency p95 (arrival to last token)",
        "s",
        [
            (
                "{{host}} {{engine}}",
                "histogram_quantile(0.95, sum by (le, host, engine) "
                f"(rate(vllm:e2e_request_latency_seconds_bucket{{{ENGINE}}}[5m])))",
            )
        ],
    ),
    (
        "Preemptions (5 min)",
        "none",
        [("{{host}} {{engine}}", f"sum by (host, engine) (increase(vllm:num_preemptions_total{{{ENGINE}}}[5m]))")],
    ),
    (
        "Prefix cache hit rate",
        "percentunit",
        [
            (
                "{{host}} {{engine}}",
                f"sum by (host, engine) (rate(vllm:prefix_cache_hits_total{{{ENGINE}}}[5m])) / "
                f"sum by (host, engine) (rate(vllm:prefix_cache_queries_total{{{ENGINE}}}[5m]))",
            )
        ],
    ),
    ("GPU memory used (DCGM exporter)", "decmbytes", [("{{host}} GPU {{gpu}}", f"DCGM_FI_DEV_FB_USED{{{HOST}}}")]),
    ("GPU utilisation (DCGM exporter)", "percent", [("{{host}} GPU {{gpu}}", f"DCGM_FI_DEV_GPU_UTIL{{{HOST}}}")]),
    ("GPU temperature (DCGM exporter)", "celsius", [("{{host}} GPU {{gpu}}", f"DCGM_FI_DEV_GPU_TEMP{{{HOST}}}")]),
    (
        "Host CPU busy",
        "percentunit",
        [("{{host}}", f'1 - avg by (host) (rate(node_cpu_seconds_total{{mode="idle", {HOST}}}[1m]))')],
    ),
    ("Host memory available", "bytes", [("{{host}}", f"node_memory_MemAvailable_bytes{{{HOST}}}")]),
]


def variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schemaVersion 39), two panels per row."""
    panels = []
    for i, (title, unit, queries) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(65 + n), "expr": expr, "legendFormat": legend}
                    for n, (legend, expr) in enumerate(queries)
                ],
            }
        )
    return {
        "title": "gpuctl: LLM engines",
        "uid": "gpuctl-engines",
        "tags": ["gpuctl", "vllm", "llm"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
                variable("host", 'label_values(up{job=~"gpuctl-.*"}, host)'),
                variable("engine", 'label_values(up{job=~"gpuctl-engines-.*", host=~"$host"}, engine)'),
            ]
        },
        "panels": panels,
    }


PROMQL_WORDS = {"by", "sum", "max", "avg", "rate", "increase", "histogram_quantile", "le", "host", "engine", "mode"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, functions and durations left out)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return {w for w in words if w not in PROMQL_WORDS}


def queried_metrics() -> set[str]:
    return {name for _, _, queries in PANELS for _, expr in queries for name in metric_names(expr)}
