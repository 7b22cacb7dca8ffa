"""`gpuctl parity` against the real CPU vLLM (its column is real) and the Ollama STAND-IN (harness/
ollama_standin.py: Ollama's OpenAI layer as its openai/openai.go treats each parameter), both on loopback,
with the official `openai` client. The matrix is printed for the record; the assertions are what vLLM is
known to do with the flags gpuctl renders: honour the OpenAI sampling parameters, and refuse tools without
--enable-auto-tool-choice."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import requests

from harness.cli import run_cli
from harness.standin_common import start_ollama

pytestmark = pytest.mark.engine


def test_parity_of_the_ollama_shim_and_the_real_vllm(vllm_server, monkeypatch):
    model = vllm_server.served_model_name
    ollama = start_ollama(Path(tempfile.mkdtemp(prefix="gpuctl-parity-")), fast=True)
    try:
        requests.post(f"{ollama.base_url}/api/pull", json={"model": "qwen2.5:0.5b", "stream": False}, timeout=30)
        requests.post(f"{ollama.base_url}/api/copy", json={"source": "qwen2.5:0.5b", "destination": model}, timeout=30)
        monkeypatch.setenv("PARITY_KEY", vllm_server.api_key)  # Ollama ignores it; vLLM needs it
        result = run_cli(
            "parity", ollama.base_url, vllm_server.base_url, "--model", model, "--api-key-env", "PARITY_KEY", "--json"
        )
    finally:
        ollama.stop()
    report = json.loads(result.stdout)
    print("\nparity, Ollama stand-in vs real vLLM " + vllm_server.version)
    for name, cells in report["matrix"].items():
        print(f"  {name:22} " + " | ".join(f"{c['status']}: {c['detail'][:70]}" for c in cells))
    assert result.exit_code == 0, result.output
    real = {name: cells[1] for name, cells in report["matrix"].items()}
    for honoured in ("models", "chat", "stream", "max_tokens", "max_completion_tokens", "n", "logprobs"):
        assert real[honoured]["status"] == "works", (honoured, real[honoured])
    assert real["tools"] == {
        "status": "error",
        "detail": '400: "auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
    }
    assert real["embeddings"]["status"] == "error"  # a generation model serves no embeddings
