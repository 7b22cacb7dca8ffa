"""The pinned vLLM is the authority on its flags: every command line gpuctl renders is parsed by vLLM
0.32's own `vllm serve` parser (the CPU build the engine tests install; nothing is started), with no
error and no warning: no unknown flag, no deprecated form such as `--model`.

Also keeps gpuctl/outside.py's VLLM_CHOICES equal to what the release itself accepts for
--quantization and --kv-cache-dtype (its parser does not check those; the engine would, minutes later).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gpuctl import inventory, outside
from gpuctl.spec import VllmSpec
from harness.cli import REPO
from harness.engine import venv_python

pytestmark = pytest.mark.engine

ARGCHECK = Path(__file__).parents[1] / "harness" / "vllm_argcheck.py"
IMAGE = outside.VLLM_IMAGE


def vllm_parse(venv: Path, command_lines: list[list[str]], *extra: str) -> list[dict] | dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_HOST_IP": "127.0.0.1"}
    result = subprocess.run(
        [str(venv_python(venv)), str(ARGCHECK), *extra],
        input=json.dumps(command_lines),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/tmp",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def example_engines() -> list[VllmSpec]:
    return [
        e
        for name in ("prod", "dev-laptop", "vagrant", "cpu-server")
        for h in inventory.load(name, cwd=REPO).hosts.values()
        for e in h.vllm
    ]


COVERAGE = [  # every optional field that adds a flag, with values the 0.32 release accepts
    VllmSpec(
        image=IMAGE,
        model="org/Model-AWQ",
        served_model_name="m",
        max_model_len=32768,
        max_num_seqs=128,
        dtype="float16",
        quantization="awq_marlin",
        kv_cache_dtype="fp8_e5m2",
        tensor_parallel_size=2,
        enable_chunked_prefill=False,
        enable_prefix_caching=False,
        extra_args=["--enforce-eager", "--max-num-batched-tokens", "8192", "--generation-config", "vllm"],
    ),
    VllmSpec(
        image=IMAGE,
        model="RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
        quantization="compressed-tensors",
        kv_cache_dtype="fp8_e4m3",
        dtype="bfloat16",
        gpu_memory_utilization=0.95,
    ),
    VllmSpec(image=IMAGE, model="m", kv_cache_dtype="auto", dtype="float32", gpu_access="none"),
    VllmSpec(image=IMAGE, model="m", device="cpu", cpu_kv_cache_gib=8, dtype="bfloat16", offline=True),
]


def test_every_rendered_command_line_parses_without_error_or_warning(engine_venv):
    engines = example_engines() + COVERAGE
    assert len(engines) >= 6
    results = vllm_parse(engine_venv, [e.command_args() for e in engines])
    for engine, result in zip(engines, results, strict=True):
        assert result == {"ok": True, "error": None, "warnings": [], "model": engine.model}, (
            engine.command_args(),
            result,
        )


def test_the_check_sees_a_deprecated_form_and_an_unknown_flag(engine_venv):
    """The same check fails where it should: gpuctl's old `--model` form warns, a made-up flag errors."""
    args = COVERAGE[0].command_args()
    deprecated, unknown = vllm_parse(engine_venv, [["--model", *args], [*args, "--swap-space", "4"]])
    assert deprecated["ok"] and any("`--model` option will be removed" in w for w in deprecated["warnings"])
    assert not unknown["ok"] and "unrecognized arguments: --swap-space 4" in unknown["error"][0]


def test_the_choices_table_is_the_releases_own(engine_venv):
    release = vllm_parse(engine_venv, [], "--choices")
    table = outside.VLLM_CHOICES[(0, 32)]
    assert sorted(table["quantization"]) == release["quantization"]
    assert sorted(table["kv_cache_dtype"]) == release["kv_cache_dtype"]
    assert "compressed-tensors" in table["quantization"] and "bitsandbytes" not in table["quantization"]
    kv_literal = VllmSpec.model_fields["kv_cache_dtype"].annotation.__args__
    assert set(kv_literal) <= table["kv_cache_dtype"], "every kv_cache_dtype the spec offers is one 0.32 accepts"
