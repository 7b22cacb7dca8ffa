"""gpuctl's vLLM checks against a REAL vLLM (the CPU build serving the tiny model on loopback)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from gpuctl.verify.openai_api import VllmChecker, VllmExpectations

pytestmark = pytest.mark.engine


def expectations(server, **overrides) -> VllmExpectations:
    values = dict(
        base_url=server.base_url,
        model=server.served_model_name,
        api_key=server.api_key,
        version=server.version,
        max_model_len=server.max_model_len,
        key_required=True,
    )
    values.update(overrides)
    return VllmExpectations(**values)


def by_name(checks):
    return {c.name: c for c in checks}


def test_every_check_passes_on_a_healthy_server(vllm_server):
    checks = by_name(VllmChecker(expectations(vllm_server)).run())
    assert list(checks) == ["health", "version", "models", "chat", "stream", "auth", "metrics"]
    assert all(c.ok for c in checks.values()), {n: c.reason for n, c in checks.items() if not c.ok}
    assert checks["models"].numbers["max_model_len"] == vllm_server.max_model_len
    assert checks["chat"].numbers["completion_tokens"] == 16
    stream = checks["stream"].numbers
    assert stream["tokens"] == 16 and stream["ttft_ms"] > 0 and stream["tokens_per_s"] > 0 and stream["itl_ms"] > 0
    assert checks["auth"].numbers["status_without_key"] == 401


def test_wrong_served_model_name_fails_precisely(vllm_server):
    checks = by_name(VllmChecker(expectations(vllm_server, model="llama-3.1-8b")).run())
    assert not checks["models"].ok
    assert (
        checks["models"].reason == f"'llama-3.1-8b' is not served; the server lists ['{vllm_server.served_model_name}']"
    )
    assert not checks["chat"].ok and "404" in checks["chat"].reason


def test_wrong_version_fails_precisely(vllm_server):
    check = by_name(VllmChecker(expectations(vllm_server, version="0.11.0")).run())["version"]
    assert (check.ok, check.reason) == (False, f"vLLM {vllm_server.version}, but the pinned image is 0.11.0")


def test_wrong_max_model_len_fails(vllm_server):
    check = by_name(VllmChecker(expectations(vllm_server, max_model_len=32768)).run())["models"]
    assert not check.ok and "the spec says 32768" in check.reason


def test_missing_key_enforcement_fails(start_vllm):
    open_server = start_vllm(api_key="", served_model_name="open-chat")
    checks = by_name(VllmChecker(expectations(open_server, api_key="some-key")).run())
    assert not checks["auth"].ok
    assert checks["auth"].reason == "a request without the key got 200: the API key is not enforced"


def test_hung_engine_core_is_not_generating_while_health_says_200(vllm_server):
    pids = vllm_server.engine_core_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        checks = by_name(VllmChecker(expectations(vllm_server, generation_timeout_s=4)).run())
        assert checks["health"].ok, "the API server still answers /health: the lie this check exists for"
        assert not checks["chat"].ok
        assert checks["chat"].reason == "engine not generating: no token within 4 s (GET /health answered 200)"
        # The stream is not tried again: the same hang would only double the time to say so.
        assert not checks["stream"].ok
        assert checks["stream"].reason == "engine not generating: not tried, the chat gave no token"
        assert time.monotonic() - started < 60
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
