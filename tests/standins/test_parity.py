"""`gpuctl parity` with the official `openai` client against the two STAND-INS on loopback: Ollama's
(harness/ollama_standin.py, its OpenAI layer's parameter handling as Ollama's openai/openai.go at v0.13.0 and
v0.32.15: ShimOptions) and vLLM's (harness/vllm_standin.py: SamplingOptions, and the 400 vLLM gives tools
without --enable-auto-tool-choice). The real vLLM's column is in tests/engine/test_parity_vllm.py.

What a stand-in cannot know, said here: whether a real model would choose to call a tool (the Ollama
stand-in always calls the first one), and what a real model writes (never compared: only behaviour)."""

from __future__ import annotations

import json

import requests

from harness.cli import run_cli

MODEL = "llama-3.1-8b"


def started(start_ollama_standin, start_vllm_standin, *vllm_args: str) -> tuple[str, str]:
    ollama = start_ollama_standin().base_url
    requests.post(f"{ollama}/api/pull", json={"model": "qwen2.5:0.5b", "stream": False}, timeout=30)
    requests.post(f"{ollama}/api/copy", json={"source": "qwen2.5:0.5b", "destination": MODEL}, timeout=30)
    vllm = start_vllm_standin(("serve", "org/tiny-model", "--served-model-name", MODEL, *vllm_args)).base_url
    return ollama, vllm


def test_parity_prints_what_each_engine_does_with_each_parameter(start_ollama_standin, start_vllm_standin):
    ollama, vllm = started(start_ollama_standin, start_vllm_standin)
    result = run_cli("parity", ollama, f"{vllm}/v1", "--model", MODEL, "--json")
    assert result.exit_code == 0, result.output  # the default requirements (models, chat, stream) hold
    report = json.loads(result.stdout)
    status = {name: [cell["status"] for cell in cells] for name, cells in report["matrix"].items()}
    assert status == {
        "models": ["works", "works"],
        "chat": ["works", "works"],
        "stream": ["works", "works"],
        "max_tokens": ["works", "works"],
        "max_completion_tokens": ["ignored", "works"],  # not in Ollama's request struct
        "stop": ["works", "works"],
        "seed": ["works", "works"],
        "n": ["ignored", "works"],  # Ollama answers one choice
        "logprobs": ["works", "works"],
        "json": ["works", "works"],
        "json_schema": ["works", "works"],
        "tools": ["works", "error"],  # vLLM: only with --enable-auto-tool-choice and a parser
        "embeddings": ["works", "error"],  # a generation model in vLLM serves no embeddings
    }
    detail = {name: [cell["detail"] for cell in cells] for name, cells in report["matrix"].items()}
    assert detail["tools"][1] == (
        '400: "auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    )
    assert detail["n"][0] == "1 choice(s) for n=2"
    assert report["failing"] == [] and report["ok"] is True


def test_an_app_that_needs_tools_is_told_production_refuses_them(start_ollama_standin, start_vllm_standin):
    ollama, vllm = started(start_ollama_standin, start_vllm_standin)
    result = run_cli(
        "parity", ollama, vllm, "--model", MODEL, "--require", "chat,tools,json", "--only", "chat,tools,json"
    )
    assert result.exit_code == 1
    assert "required but not working everywhere: tools" in result.stderr
    table = result.stdout
    assert "tools (required)" in table and "json (required)" not in table


def test_with_the_tool_flags_production_takes_tools(start_ollama_standin, start_vllm_standin):
    """vLLM started with --enable-auto-tool-choice --tool-call-parser hermes no longer refuses them (what the
    stand-in cannot know: whether the model then calls the tool; it answers in text)."""
    ollama, vllm = started(
        start_ollama_standin, start_vllm_standin, "--enable-auto-tool-choice", "--tool-call-parser", "hermes"
    )
    result = run_cli("parity", ollama, vllm, "--model", MODEL, "--only", "tools", "--json")
    [ollama_cell, vllm_cell] = json.loads(result.stdout)["matrix"]["tools"]
    assert (ollama_cell["status"], vllm_cell["status"]) == ("works", "ignored")


def test_unknown_names_are_one_line(start_ollama_standin):
    result = run_cli("parity", "http://127.0.0.1:9", "http://127.0.0.1:9", "--require", "chat,function_calling")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --require: unknown function_calling (known: models, chat, stream,")
