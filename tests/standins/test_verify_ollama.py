"""gpuctl's Ollama checks against the Ollama STAND-IN (harness/ollama_standin.py: the real server
cannot be installed here), which speaks Ollama's documented API."""

from __future__ import annotations

import pytest

from gpuctl.verify.ollama_api import OllamaChecker, OllamaExpectations, duration_seconds
from harness.standin_common import start_ollama


@pytest.fixture(scope="module")
def ollama(tmp_path_factory):
    server = start_ollama(
        tmp_path_factory.mktemp("models"), env={"OLLAMA_KEEP_ALIVE": "30m", "OLLAMA_STANDIN_VERSION": "0.13.0"}
    )
    import requests

    pulled = requests.post(f"{server.base_url}/api/pull", json={"model": "qwen2.5:0.5b", "stream": False}, timeout=30)
    assert pulled.status_code == 200
    yield server
    server.stop()


def run(server, **overrides):
    values = dict(base_url=server.base_url, version="0.13.0", models=["qwen2.5:0.5b"], keep_alive="30m")
    values.update(overrides)
    return {c.name: c for c in OllamaChecker(OllamaExpectations(**values)).run()}


def test_every_check_passes(ollama):
    checks = run(ollama)
    assert list(checks) == ["version", "models", "chat", "openai", "keep_alive"]
    assert all(c.ok for c in checks.values()), {n: c.reason for n, c in checks.items() if not c.ok}
    assert checks["chat"].numbers["tokens"] == 16 and checks["chat"].numbers["ttft_ms"] > 0
    assert abs(checks["keep_alive"].numbers["expires_in_s"] - 1800) <= 30


def test_missing_model_fails_precisely(ollama):
    checks = run(ollama, models=["llama3.1:8b", "qwen2.5:0.5b"])
    assert not checks["models"].ok
    assert checks["models"].reason == "not pulled: llama3.1:8b (the server has ['qwen2.5:0.5b'])"
    assert not checks["chat"].ok and "404" in checks["chat"].reason


def test_wrong_version_fails_precisely(ollama):
    check = run(ollama, version="0.12.6")["version"]
    assert (check.ok, check.reason) == (False, "Ollama 0.13.0, but the spec pins 0.12.6")


def test_keep_alive_that_did_not_reach_the_server_fails(ollama):
    check = run(ollama, keep_alive="-1")["keep_alive"]
    assert not check.ok and "OLLAMA_KEEP_ALIVE did not reach the server" in check.reason


def test_nothing_listening_is_one_failed_check(tmp_path):
    checks = OllamaChecker(OllamaExpectations(base_url="http://127.0.0.1:9")).run()
    assert [(c.name, c.ok) for c in checks] == [("version", False)]
    assert (
        checks[0].reason == "nothing answers on 127.0.0.1:9 (connection refused): is the engine deployed and running?"
    )


def test_durations():
    assert [duration_seconds(d) for d in ("5m", "1h30m", "45s", "0", "-1", "300")] == [300, 5400, 45, 0, -1, 300]
