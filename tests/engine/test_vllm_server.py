"""The real CPU vLLM server with the tiny model behaves like vLLM on a GPU (the facts gpuctl relies on)."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
import requests
import yaml

from harness.engine import VllmServer
from harness.tiny_model import kv_bytes_per_token, load_facts

pytestmark = pytest.mark.engine

TIMEOUT = 60  # seconds for one request to the tiny model on 2 busy cores


def chat(
    server: VllmServer, *, headers: dict[str, str] | None = None, timeout: float = TIMEOUT, **body: Any
) -> requests.Response:
    """POST /v1/chat/completions with a one-line user message (defaults overridable)."""
    payload = {
        "model": server.served_model_name,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello."}],
        **body,
    }
    return requests.post(
        f"{server.base_url}/v1/chat/completions",
        json=payload,
        headers=server.headers if headers is None else headers,
        timeout=timeout,
    )


def sse_events(response: requests.Response) -> list[dict[str, Any]]:
    """Parse an SSE stream into its JSON events (stops at [DONE])."""
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            break
        events.append(json.loads(data))
    return events


def test_health_is_200(vllm_server: VllmServer) -> None:
    assert requests.get(f"{vllm_server.base_url}/health", timeout=10).status_code == 200


def test_version_reports_the_engine_version(vllm_server: VllmServer) -> None:
    body = requests.get(f"{vllm_server.base_url}/version", timeout=10).json()
    assert body["version"] == vllm_server.version
    assert body["version"].startswith("0.32")


def test_models_lists_tiny_chat_with_max_model_len(vllm_server: VllmServer) -> None:
    response = requests.get(f"{vllm_server.base_url}/v1/models", headers=vllm_server.headers, timeout=10)
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()["data"]}
    assert models["tiny-chat"]["max_model_len"] == vllm_server.max_model_len


def test_v1_routes_need_the_api_key(vllm_server: VllmServer) -> None:
    assert chat(vllm_server, headers={}).status_code == 401
    assert chat(vllm_server, headers={"Authorization": "Bearer wrong"}).status_code == 401
    models = requests.get(f"{vllm_server.base_url}/v1/models", timeout=10)
    assert models.status_code == 401


def test_chat_completion_returns_printable_text_and_usage(vllm_server: VllmServer) -> None:
    response = chat(vllm_server, max_tokens=12, temperature=1.0)
    assert response.status_code == 200, response.text
    body = response.json()
    content = body["choices"][0]["message"]["content"]
    assert content and content.isascii() and content.isprintable()
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    # The tiny model can't emit EOS (see tiny_model.py), so it always runs to max_tokens.
    assert usage["completion_tokens"] == 12
    assert body["choices"][0]["finish_reason"] == "length"
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_chat_yields_sse_chunks_and_usage(vllm_server: VllmServer) -> None:
    response = chat(vllm_server, max_tokens=10, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    pieces = [c["delta"].get("content") or "" for e in events for c in e.get("choices", [])]
    assert sum(1 for p in pieces if p) >= 2
    assert "".join(pieces).strip()
    usage = [e["usage"] for e in events if e.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 10


def test_unknown_model_is_404(vllm_server: VllmServer) -> None:
    response = chat(vllm_server, model="no-such-model")
    assert response.status_code == 404
    assert "no-such-model" in response.text


def test_metrics_expose_the_counters_gpuctl_reads(vllm_server: VllmServer) -> None:
    assert chat(vllm_server, max_tokens=4).status_code == 200
    text = requests.get(f"{vllm_server.base_url}/metrics", timeout=10).text  # open: no key needed
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("vllm:")}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
    ):
        assert name in names, f"{name} missing; vllm: metrics are {sorted(names)}"
    assert "vllm:gpu_cache_usage_perc" not in names  # the old name is gone in this release
    generated = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:generation_tokens_total")
    ]
    assert sum(generated) >= 4


def test_every_vllm_metric_the_dashboard_alerts_and_top_read_is_in_the_real_metrics(vllm_server: VllmServer) -> None:
    """The Grafana dashboard's queries, the alert rules' expressions and `gpuctl top` name only metrics this
    vLLM release exports (a rename upstream would leave a panel empty and an alert silent)."""
    from gpuctl.dashboard import metric_names, queried_metrics
    from gpuctl.render import render_host
    from gpuctl.spec import HostSpec, MonitoringSpec
    from gpuctl.top import TOKENS, TTFT

    assert chat(vllm_server, max_tokens=4).status_code == 200
    text = requests.get(f"{vllm_server.base_url}/metrics", timeout=10).text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("vllm:")}
    rules = render_host(HostSpec(name="mon", address="192.0.2.5", monitoring=MonitoringSpec())).monitoring
    assert rules is not None
    groups = yaml.safe_load(rules.rules.content)["groups"]
    in_rules = {n for g in groups for r in g["rules"] for n in metric_names(r["expr"]) if n.startswith("vllm:")}
    wanted = {n for n in queried_metrics() if n.startswith("vllm:")} | in_rules
    wanted |= {f"{TOKENS}_total", f"{TTFT}_bucket"}
    assert len(in_rules) >= 5, in_rules
    assert wanted <= exported, f"not exported by this vLLM: {sorted(wanted - exported)}"


def test_kv_cache_tokens_match_the_capacity_formula(vllm_server: VllmServer) -> None:
    facts = load_facts(vllm_server.model_path)
    assert facts["kv_bytes_per_token"] == kv_bytes_per_token() == 512
    expected = int(vllm_server.kv_cache_space_gib * 2**30) // facts["kv_bytes_per_token"]
    assert vllm_server.kv_cache_tokens is not None, vllm_server.log_text()[-3000:]
    assert vllm_server.kv_cache_tokens == expected, vllm_server.kv_cache_log_line
    if vllm_server.max_concurrency is not None:
        assert vllm_server.max_concurrency == pytest.approx(expected / vllm_server.max_model_len, rel=0.01)


def test_health_lies_while_the_engine_core_is_stopped(vllm_server: VllmServer) -> None:
    """vllm #39863/#36451: /health answers 200 while the engine core can't produce a token."""
    pids = vllm_server.engine_core_pids()
    assert pids, f"no EngineCore under {vllm_server.api_pid}"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        health = requests.get(f"{vllm_server.base_url}/health", timeout=10)
        models = requests.get(f"{vllm_server.base_url}/v1/models", headers=vllm_server.headers, timeout=10)
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            chat(vllm_server, max_tokens=4, timeout=5)
        assert time.monotonic() - started < 15
        streamed: list[str] = []
        # streamed: the read times out (headers or first chunk never come), with no content at all
        with pytest.raises((requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)):
            with chat(vllm_server, max_tokens=4, timeout=5, stream=True) as response:
                for event in sse_events(response):
                    streamed += [c["delta"].get("content") or "" for c in event.get("choices", [])]
        assert not "".join(streamed)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert health.status_code == 200  # the lie: healthy while no token can be produced
    assert models.status_code == 200
    assert chat(vllm_server, max_tokens=4).status_code == 200  # recovered after SIGCONT


def test_another_server_with_more_kv_cache_space(start_vllm, vllm_server: VllmServer) -> None:
    """The factory starts a second server; VLLM_CPU_KVCACHE_SPACE=2 doubles the reported tokens."""
    server = start_vllm(kv_cache_space_gib=2, max_model_len=512, served_model_name="tiny-chat-2")
    assert server.port != vllm_server.port and server.api_key != vllm_server.api_key
    assert server.kv_cache_tokens == 2 * 2**30 // kv_bytes_per_token() == 2 * vllm_server.kv_cache_tokens
    assert server.max_concurrency == pytest.approx(server.kv_cache_tokens / 512)
    assert server.engine_core_pids() and server.worker_pids()
    response = chat(server, max_tokens=600)  # more than max_model_len allows
    assert response.status_code == 400
    assert chat(server, max_tokens=4).status_code == 200
