"""`gpuctl top`'s sampling (gpuctl.top) against the vLLM and Ollama STAND-INs on loopback (their /metrics
carry vLLM's real metric names and histogram buckets), and its quantiles against Prometheus' own
histogram_quantile (through `promtool test rules`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from gpuctl.spec import HostSpec, OllamaSpec, VllmSpec
from gpuctl.top import histogram_quantile, refresh, watching
from harness.cli import run_cli


def chat(base_url: str, n: int) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    for _ in range(n):
        assert requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=30).ok


def test_rates_and_ttft_come_from_the_interval_between_two_samples(start_vllm_standin, start_ollama_standin):
    vllm = start_vllm_standin(env={"VLLM_STANDIN_FAST": "0", "VLLM_STANDIN_TTFT": "0.05"})
    ollama = start_ollama_standin()
    host = HostSpec(
        name="laptop",
        local=True,
        vllm=[
            VllmSpec(
                image="vllm/vllm-openai:v0.32.0",
                model="org/tiny",
                served_model_name="tiny",
                port=vllm.port,
                gpu_access="none",
            )
        ],
        ollama=OllamaSpec(version="0.13.0", port=ollama.port, cpu_fallback=True),
    )
    with watching([host]) as watches:
        first = refresh(watches)
        assert [(r.engine, r.health) for r in first] == [("vllm:main", "200"), ("ollama", "200")]
        assert first[0].tokens_per_s is None  # one sample: no rate yet
        started = time.monotonic()
        chat(vllm.base_url, 5)
        row, ollama_row = refresh(watches)
        elapsed = time.monotonic() - started
    assert (row.running, row.waiting, row.kv_cache_usage) == (0, 0, 0)
    assert row.tokens_per_s is not None and 100 / (elapsed + 1) < row.tokens_per_s <= 100 / elapsed * 1.1
    assert row.ttft_p50_s is not None and 0.025 <= row.ttft_p50_s <= 0.1  # the stand-in's 50 ms, bucketed
    assert ollama_row.model == "(none loaded)" and ollama_row.tokens_per_s is None


def test_top_once_json_and_its_bad_input(start_vllm_standin, tmp_path):
    vllm = start_vllm_standin()
    path = tmp_path / "laptop.py"
    path.write_text(
        "from gpuctl.inventory import Host, Vllm\n"
        f"local = [Host('laptop', local=True, vllm=Vllm(image='vllm/vllm-openai:v0.32.0', model='org/tiny', "
        f"served_model_name='tiny', port={vllm.port}, gpu_access='none'))]\n"
    )
    result = run_cli("top", str(path), "--once", "--interval", "0.5", "--json")
    assert result.exit_code == 0, result.output
    [engine] = json.loads(result.stdout)["engines"]
    assert (engine["host"], engine["engine"], engine["health"], engine["tokens_per_s"]) == (
        "laptop",
        "vllm:main",
        "200",
        0,
    )
    refused = run_cli("top", str(path), "--json")
    assert refused.exit_code == 2 and refused.stderr == "error: --json needs --once (a live screen is not JSON)\n"


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_quantiles_equal_prometheus_histogram_quantile(tmp_path, q):
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (.ci/setup installs it)")
    buckets = {0.1: 3.0, 0.5: 8.0, 1.0: 9.0, 2.5: 9.6, float("inf"): 10.0}
    ours = histogram_quantile(q, buckets)
    series = [
        {"series": f'ttft_bucket{{le="{"+Inf" if b == float("inf") else b}"}}', "values": f"0 {int(c * 10)}"}
        for b, c in buckets.items()
    ]
    (tmp_path / "rules.yml").write_text("groups: []\n")
    test = {
        "rule_files": ["rules.yml"],
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"histogram_quantile({q}, increase(ttft_bucket[1m]))",
                        "eval_time": "1m",
                        "exp_samples": [{"labels": "{}", "value": round(ours, 9)}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    result = subprocess.run(["promtool", "test", "rules", "test.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout
