"""`gpuctl bench` against a REAL vLLM (the CPU build serving the tiny model on 127.0.0.1): its counts are
the server's own, and its throughput agrees with vLLM's `vllm:generation_tokens_total` counter."""

from __future__ import annotations

import json
import time

import pytest
import requests

from gpuctl.bench import client
from gpuctl.verify.openai_api import parse_metrics
from harness.cli import run_cli

pytestmark = pytest.mark.engine

COUNTER = "vllm:generation_tokens_total"


def generated_tokens(server) -> float:
    return parse_metrics(requests.get(f"{server.base_url}/metrics", timeout=10).text)[COUNTER]


def test_counts_equal_vllms_usage_and_throughput_matches_its_generation_counter(vllm_server):
    # The counter is read right before a level's first request and right after its last stream ended;
    # the times taken next to those reads bound the same window the bench divides by.
    marks: dict[int, list[tuple[float, float]]] = {}

    def before(concurrency: int) -> None:
        value = generated_tokens(vllm_server)
        marks[concurrency] = [(time.perf_counter(), value)]

    def after(concurrency: int) -> None:
        now = time.perf_counter()
        marks[concurrency].append((now, generated_tokens(vllm_server)))

    endpoint = client.Endpoint(
        vllm_server.base_url, "openai", vllm_server.served_model_name, vllm_server.api_key, exact_output=True
    )
    settings = client.Settings(concurrency=[1, 4], requests=12, prompt_tokens=180, output_tokens=128)
    result = client.run(endpoint, settings, on_level_start=before, on_level_end=after)

    assert result.calibration.error is None
    assert abs(result.calibration.tokens - 180) <= 4  # the tiny tokenizer makes ~4 tokens of a word
    for level in result.levels:
        (t0, c0), (t1, c1) = marks[level.concurrency]
        assert (level.requests, level.errors) == (12, 0), level.error_kinds
        # Every reply has exactly the requested length (ignore_eos + min_tokens), as vLLM's usage says,
        # and vLLM's own counter moved by exactly the tokens the bench counted.
        assert level.output_tokens_range == (128, 128)
        assert level.output_tokens == 12 * 128 == c1 - c0
        assert 0 < level.events <= level.output_tokens  # vLLM may merge tokens into one event under load
        server_rate = (c1 - c0) / (t1 - t0)
        assert level.aggregate_tok_s == pytest.approx(server_rate, rel=0.05), (level.window_s, t1 - t0)
        assert level.window_s > 0.3 and level.ttft_s.p50 > 0 and level.e2e_s.p99 >= level.e2e_s.p50


def test_the_cli_benches_real_vllm_by_url_with_its_key(vllm_server):
    result = run_cli(
        "bench",
        vllm_server.base_url,
        "--api-key-env",
        "BENCH_VLLM_KEY",
        "-c",
        "2",
        "-n",
        "4",
        "--output-tokens",
        "16",
        "--prompt-tokens",
        "64",
        "--json",
        env={"BENCH_VLLM_KEY": vllm_server.api_key},
    )
    assert result.exit_code == 0, result.output
    assert vllm_server.api_key not in result.output
    run = json.loads(result.stdout)["runs"][0]
    assert (run["engine"], run["model"], run["ok"]) == ("vllm", vllm_server.served_model_name, True)
    level = run["levels"][0]
    assert (level["requests"], level["errors"], level["output_tokens"]["total"]) == (4, 0, 64)
    assert abs(level["prompt_tokens"]["mean"] - 64) <= 4


def test_a_bare_url_is_verified_and_benched_with_only_its_key(vllm_server):
    """The real vLLM by URL: verify and bench ask the server its engine and model (no --engine, no
    --model); only the key it requires is given."""
    env = {"K": vllm_server.api_key}
    verified = run_cli("verify", vllm_server.base_url, "--api-key-env", "K", "--json", env=env)
    assert verified.exit_code == 0, verified.output
    [report] = json.loads(verified.stdout)["engines"]
    assert report["engine"] == "vllm" and all(c["ok"] for c in report["checks"])
    benched = run_cli(
        "bench",
        vllm_server.base_url,
        "--api-key-env",
        "K",
        "-c",
        "1",
        "-n",
        "2",
        "--output-tokens",
        "16",
        "--json",
        env=env,
    )
    assert benched.exit_code == 0, benched.output
    [run] = json.loads(benched.stdout)["runs"]
    assert (run["engine"], run["model"], run["ok"]) == ("vllm", vllm_server.served_model_name, True)


def test_a_prompt_and_output_beyond_the_context_are_refused_and_a_fitting_one_calibrates_within_it(vllm_server):
    """The real vLLM's /v1/models gives max_model_len: 180 + 2000 tokens is refused before any load; 900 +
    100 fits, and the calibration never sends a prompt the context cannot hold (its tokenizer makes about
    four tokens of a word: 900 words would be far too long)."""
    env = {"K": vllm_server.api_key}
    context = requests.get(f"{vllm_server.base_url}/v1/models", headers=vllm_server.headers, timeout=10).json()
    limit = context["data"][0]["max_model_len"]
    refused = run_cli("bench", vllm_server.base_url, "--api-key-env", "K", "--output-tokens", "2000", "--json", env=env)
    assert refused.exit_code == 1
    [run] = json.loads(refused.stdout)["runs"]
    assert run["error"].startswith(f"{vllm_server.served_model_name} has a context of {limit} tokens: ")
    assert run["levels"] == []
    prompt = limit - 124
    fitted = run_cli(
        "bench",
        vllm_server.base_url,
        "--api-key-env",
        "K",
        "-c",
        "1",
        "-n",
        "2",
        "--prompt-tokens",
        str(prompt),
        "--output-tokens",
        "100",
        "--json",
        env=env,
    )
    assert fitted.exit_code == 0, fitted.output
    [run] = json.loads(fitted.stdout)["runs"]
    assert run["prompt"]["calibration_error"] is None
    assert all(tokens < limit for _, tokens in run["prompt"]["probes"]) and run["levels"][0]["errors"] == 0
