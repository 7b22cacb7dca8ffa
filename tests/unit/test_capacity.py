"""The capacity planner against figures computed by hand (derivations in the comments)."""

from __future__ import annotations

import json
import textwrap

import pytest

from gpuctl.capacity import plan_host, vllm_budget
from gpuctl.catalog import find_gpu, find_model
from gpuctl.deploy.preflight import gpu_words, needed_mib
from gpuctl.gpu_facts import GpuMemory, gpu_memory
from gpuctl.spec import HostSpec, OllamaSpec, VllmSpec
from harness.cli import run_cli

GIB = 2**30
IMAGE = "vllm/vllm-openai:v0.32.0"


def one(host: HostSpec):
    [plan] = plan_host(host)
    return plan


def vllm_host(gpu: str, count: int, memory: float, **engine) -> HostSpec:
    return HostSpec(
        name="h",
        address="10.0.0.1",
        gpus={"model": gpu, "count": count, "memory_gib": memory},
        vllm=[VllmSpec(image=IMAGE, **engine)],
    )


def blocks(tokens: float) -> int:
    """Whole 16-token blocks, as vLLM allocates."""
    return int(tokens // 16) * 16


def test_llama_8b_bf16_on_rtx4090_bf16_kv():
    # weights 8.03e9 × 2 B = 16.06e9 B; budget 0.90 × 24 GiB; overhead estimate 2.09 GiB per GPU:
    # 0.35 non-torch + (0.2 + 0.15 × 8.03 × 2048/2048 = 1.40) activation + (0.1 + 0.03 × 8.03 = 0.34) CUDA graphs
    # KV/token = 2 × 32 layers × 8 KV heads × 128 × 2 B = 131,072 B (128 KiB)
    plan = one(vllm_host("RTX 4090", 1, 24, model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=16384))
    pool = 0.90 * 24 * GIB - 8.03e9 * 2 - 2.09 * GIB
    assert plan.numbers["kv_bytes_per_token"] == 131072
    assert plan.numbers["cache_tokens"] == blocks(pool / 131072)  # = 37,296
    assert plan.numbers["cache_tokens"] == 37296
    assert plan.verdict == "fits" and plan.numbers["max_concurrency"] == round(37296 / 16384, 2)  # 2.32


def test_the_planner_and_the_preflight_budget_a_gpu_with_one_formula():
    """vllm_budget is the one formula: the plan's budget for an 80 GiB GPU at 0.9 is what the deploy's
    preflight wants free on a GPU that nvidia-smi reports with 80 GiB (81920 MiB)."""
    host = vllm_host("H100 80GB", 1, 80, model="meta-llama/Llama-3.1-8B-Instruct", gpu_memory_utilization=0.9)
    engine = host.vllm[0]
    assert vllm_budget(0.9, 80 * GIB) == 0.9 * 80 * GIB
    assert one(host).numbers["budget_gib"] == 72.0
    assert needed_mib(engine, 80 * 1024) == 73728 == 72.0 * 1024
    # A real H100 80GB reports 81559 MiB; the preflight's number is the same formula of that total.
    [gpu] = gpu_memory("0, GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f, 81559, 0\n")
    assert gpu == GpuMemory(0, "GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f", 81559)
    assert needed_mib(engine, gpu.total_mib) == int(vllm_budget(0.9, 81559)) == 73403
    assert gpu_words(engine, [gpu]) == "0:GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f:81559:73403"
    assert gpu_words(engine, []) == "0", "a GPU nvidia-smi does not list is named by its index alone"


def test_same_with_fp8_kv_doubles_the_tokens():
    # fp8 KV: 1 byte → 65,536 B per token; the pool is unchanged
    plan = one(
        vllm_host(
            "RTX 4090", 1, 24, model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=16384, kv_cache_dtype="fp8"
        )
    )
    pool = 0.90 * 24 * GIB - 8.03e9 * 2 - 2.09 * GIB
    assert plan.numbers["cache_tokens"] == blocks(pool / 65536) == 74592
    assert plan.warnings == []  # Ada has native fp8


def test_llama_70b_fp8_on_two_h100_with_tensor_parallel():
    # weights 70.6e9 × 1 B ÷ 2 GPUs = 35.3e9 B per GPU; budget 0.92 × 80 GiB
    # KV/token per GPU = 2 × 80 layers × (8 KV heads ÷ 2) × 128 × 1 B = 81,920 B
    plan = one(
        vllm_host(
            "H100 80GB",
            2,
            80,
            model="RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
            tensor_parallel_size=2,
            gpu_memory_utilization=0.92,
            max_model_len=32768,
            kv_cache_dtype="fp8",
        )
    )
    # overhead 5.51: 0.35 + min(4, 0.2 + 0.15 × 35.3 × 8192/2048) + (0.1 + 0.03 × 35.3 = 1.16); 8192 batched
    # tokens is vLLM 0.32's API-server default on an 80 GiB GPU that is not an A100
    pool = 0.92 * 80 * GIB - 70.6e9 / 2 - 5.51 * GIB
    assert plan.numbers["weights"] == "fp8"
    assert plan.numbers["kv_bytes_per_token"] == 81920
    assert plan.numbers["cache_tokens"] == blocks(pool / 81920) == 461552
    assert plan.numbers["max_concurrency"] == round(461552 / 32768, 2)  # 14.09


def test_llama_70b_bf16_on_one_a100_does_not_fit():
    # weights 70.6e9 × 2 B = 131.5 GiB > 0.90 × 80 GiB = 72 GiB
    plan = one(vllm_host("A100 80GB", 1, 80, model="meta-llama/Llama-3.1-70B-Instruct", max_model_len=8192))
    assert plan.verdict == "does not fit"
    # Only fixes that fit, each computed. Overhead 0.35 + 4 (activation, at most) + 1.5 (graphs, at most) = 5.85.
    # tp 2: 65.7 + 5.51 GiB leaves 0.8 GiB, under one 8,192-token sequence at 160 KiB a token; FP8 weights
    # (65.8 GiB) leave 0.3 GiB; tp 4 and 4-bit weights (37 GiB) both fit.
    assert plan.reasons == [
        "weights need 131.5 GiB per GPU + about 5.85 GiB overhead, but 0.9 × 80 GiB gives 72.0 GiB: "
        "use 4 GPUs with tensor_parallel_size=4 (this host has 1); or serve an AWQ/GPTQ 4-bit "
        "checkpoint of Llama 3.1 70B (bf16 now)"
    ]


def test_70b_on_one_24gb_card_offers_only_what_would_fit():
    """Even 0.98 × 24 GiB cannot hold 37 GiB of AWQ weights: no gpu_memory_utilization or quantization advice;
    bf16 needs 131.5 GiB ÷ 8 = 16.4 + about 2 GiB < 21.6 GiB, so tensor parallel 8 (6 would not split 8 KV heads)."""
    plan = one(vllm_host("RTX 4090", 1, 24, model="meta-llama/Llama-3.3-70B-Instruct", max_model_len=8192))
    assert plan.reasons == [
        "weights need 131.5 GiB per GPU + about 5.85 GiB overhead, but 0.9 × 24 GiB gives 21.6 GiB: "
        "use 8 GPUs with tensor_parallel_size=8 (this host has 1)"
    ]
    awq = one(vllm_host("RTX 4090", 1, 24, model="org/Llama-3.3-70B-Instruct-AWQ", max_model_len=8192))
    assert awq.reasons[0].endswith("use 4 GPUs with tensor_parallel_size=4 (this host has 1)"), awq.reasons


def test_a_higher_utilization_is_offered_only_when_it_fits():
    # 37,296 tokens at 0.90 (first case); each 0.01 more is 0.24 GiB, about 1,966 tokens of 128 KiB: 0.92
    # reaches 40,000 (checked with vllm_cache_tokens below)
    plan = one(vllm_host("RTX 4090", 1, 24, model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=40000))
    assert plan.reasons == [
        "the KV cache holds 37,296 tokens, less than one sequence of max_model_len 40,000: "
        "lower max_model_len to 37,296 or less; or use kv_cache_dtype='fp8'; or use 2 GPUs with "
        "tensor_parallel_size=2 (this host has 1); or serve an FP8 checkpoint of Llama 3.1 8B "
        "(bf16 now); or raise gpu_memory_utilization to 0.92"
    ]
    from gpuctl.capacity import vllm_cache_tokens
    from gpuctl.catalog import find_model

    host = vllm_host("RTX 4090", 1, 24, model="meta-llama/Llama-3.1-8B-Instruct")
    llama = find_model("meta-llama/Llama-3.1-8B-Instruct")
    at = {
        u: vllm_cache_tokens(host, host.vllm[0], llama, tp=1, per_param=2.0, utilization=u, kv_bytes=2)
        for u in (0.90, 0.91, 0.92)
    }
    assert at[0.90] == 37296 and at[0.91] < 40000 <= at[0.92]


def test_qwen_7b_on_l4_uses_its_four_kv_heads():
    # weights 7.62e9 × 2 B; KV/token = 2 × 28 × 4 × 128 × 2 B = 57,344 B
    plan = one(vllm_host("L4", 1, 24, model="Qwen/Qwen2.5-7B-Instruct", max_model_len=32768))
    pool = 0.90 * 24 * GIB - 7.62e9 * 2 - 2.02 * GIB  # 0.35 + 1.34 + 0.33
    assert plan.numbers["kv_bytes_per_token"] == 57344
    assert plan.numbers["cache_tokens"] == blocks(pool / 57344) == 100848
    assert plan.verdict == "fits"  # 100,848 / 32,768 = 3.08 sequences, above the "tight" threshold of 2


def test_tight_when_fewer_than_two_sequences_fit():
    # 37,296 tokens (first case) / 24,576 = 1.52 sequences
    plan = one(vllm_host("RTX 4090", 1, 24, model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=24576))
    assert plan.verdict == "tight"
    assert plan.reasons == ["only 1.52 sequences of 24,576 tokens fit at once"]


def test_kv_too_small_for_one_sequence_names_the_fix():
    # from the first case: 37,296 tokens < max_model_len 131,072
    plan = one(vllm_host("RTX 4090", 1, 24, model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=131072))
    assert plan.verdict == "does not fit"
    # fp8 KV gives 74,592 (still < 131,072): not offered; two GPUs hold the weights once and twice the cache.
    assert plan.reasons == [
        "the KV cache holds 37,296 tokens, less than one sequence of max_model_len 131,072: "
        "lower max_model_len to 37,296 or less; or use 2 GPUs with tensor_parallel_size=2 "
        "(this host has 1)"
    ]


def test_fp8_kv_on_ampere_is_a_warning():
    plan = one(
        vllm_host(
            "RTX 3090", 1, 24, model="mistralai/Mistral-7B-Instruct-v0.3", max_model_len=8192, kv_cache_dtype="fp8"
        )
    )
    assert plan.verdict == "fits"
    assert plan.warnings == [
        "fp8 KV cache on RTX 3090 (Ampere) has no native fp8 support: slower, and accuracy may drop"
    ]


def test_a_model_described_in_the_inventory_is_planned():
    # 2 × 40 layers × 8 × 128 × 2 B = 163,840 B per token
    plan = one(
        vllm_host(
            "L40S",
            1,
            48,
            model="acme/private-13b",
            max_model_len=4096,
            architecture={"params_b": 13, "layers": 40, "kv_heads": 8, "head_dim": 128, "max_context": 8192},
        )
    )
    pool = 0.90 * 48 * GIB - 13e9 * 2 - 2.99 * GIB  # 0.35 + 2.15 + 0.49
    assert plan.numbers["cache_tokens"] == blocks(pool / 163840)


def test_a_model_read_from_its_config_json(tmp_path):
    # Qwen2.5-7B's own config.json fields: 28 layers, 28 heads, 4 KV heads, hidden 3584 (head_dim 128)
    config = tmp_path / "config.json"
    config.write_text(
        '{"num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, '
        '"hidden_size": 3584, "intermediate_size": 18944, "vocab_size": 152064, '
        '"max_position_embeddings": 32768, "tie_word_embeddings": false}'
    )
    plan = one(vllm_host("L4", 1, 24, model="acme/qwen-finetune", config_json=str(config), max_model_len=8192))
    assert plan.numbers["kv_bytes_per_token"] == 2 * 28 * 4 * 128 * 2
    # parameters estimated from the shapes: 28 × (3584·128·(28+8) + 28·128·3584 + 3·3584·18944) + 2·152064·3584
    expected_b = (28 * (3584 * 128 * 36 + 28 * 128 * 3584 + 3 * 3584 * 18944) + 2 * 152064 * 3584) / 1e9
    assert plan.numbers["weights_per_gpu_gib"] == round(expected_b * 1e9 * 2 / GIB, 2)
    assert abs(expected_b - 7.62) < 0.1  # within 0.1 B of the published 7.62 B parameters


def test_an_unreadable_config_json_is_bad_input(tmp_path):
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "c.py").write_text(
        "from gpuctl.inventory import Gpu, Host, Vllm\n"
        f"g = [Host('a', address='10.0.0.1', gpus=Gpu(model='L4', count=1, memory_gib=24), vllm=Vllm(image='{IMAGE}', "
        "model='m', config_json='missing/config.json'))]\n"
    )
    result = run_cli("check", "c", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: inventories/c.py: a: vllm:main: config_json missing/config.json: cannot read it"
    )


def test_ollama_8b_q4_with_four_parallel_slots_on_a_4090():
    # weights 8.03e9 × 4.85/8 B = 4.87e9 B; KV = 4 slots × 8192 tokens × 131,072 B = 4 GiB; + 0.5 GiB
    host = HostSpec(
        name="h",
        address="10.0.0.1",
        gpus={"model": "RTX 4090", "count": 1, "memory_gib": 24},
        ollama=OllamaSpec(version="0.13.0", models=["llama3.1:8b"], num_parallel=4, context_length=8192),
    )
    plan = one(host)
    total = 8.03e9 * 4.85 / 8 + 4 * 8192 * 131072 + 0.5 * GIB
    assert plan.numbers["total_gib"] == round(total / GIB, 2)  # 9.03
    assert plan.verdict == "fits"


def test_ollama_70b_on_a_4090_spills_to_the_cpu():
    host = HostSpec(
        name="h",
        address="10.0.0.1",
        gpus={"model": "RTX 4090", "count": 1, "memory_gib": 24},
        ollama=OllamaSpec(version="0.13.0", models=["llama3.3:70b"], cpu_fallback=True),
    )
    plan = one(host)
    assert plan.verdict == "tight"
    assert "layers spill to the CPU" in plan.reasons[0]


def test_catalog_lookups():
    assert find_gpu("NVIDIA H100 80GB HBM3").name == "H100 80GB"
    assert find_gpu("A100 40GB").memory_gib == 40
    assert find_gpu("RTX 5060 Ti").memory_gib == 16
    assert find_model("meta-llama/Llama-3.1-8B-Instruct").name == "Llama 3.1 8B"
    assert find_model("llama3.1:70b").name == "Llama 3.1 70B"
    assert find_model("Qwen/Qwen2.5-0.5B-Instruct").name == "Qwen2.5 0.5B"
    assert find_model("unknown/model") is None


def test_check_refuses_what_cannot_start_unless_forced(tmp_path):
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "big.py").write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Gpu, Host, Vllm
        g = [Host("gpu-01", address="10.0.0.1", gpus=Gpu(model="A100 80GB", count=1, memory_gib=80),
                  vllm=Vllm(image="{IMAGE}", model="meta-llama/Llama-3.1-70B-Instruct", max_model_len=8192))]
    """)
    )
    refused = run_cli("check", "big", cwd=tmp_path)
    assert refused.exit_code == 2
    assert refused.stderr.startswith(
        "error: inventories/big.py: gpu-01: vllm:main: does not fit: weights need 131.5 GiB"
    )
    forced = run_cli("check", "big", "--force", cwd=tmp_path)
    assert forced.exit_code == 0
    assert "warning: --force: inventories/big.py: gpu-01: vllm:main: does not fit" in forced.stderr
    planned = run_cli("plan", "big", "--json", cwd=tmp_path)
    assert planned.exit_code == 2, "does not fit means the same in plan as in check: bad input"
    assert json.loads(planned.stdout)["engines"][0]["verdict"] == "does not fit"


@pytest.mark.parametrize("name", ["prod", "dev-laptop", "vagrant", "cpu-server"])
def test_example_inventories_fit(name):
    result = run_cli("plan", name, "--json")
    assert result.exit_code == 0, result.stdout


def test_a_quantization_method_that_names_no_width_takes_it_from_the_model_name():
    from gpuctl.capacity import weight_bytes_per_param

    fp8 = VllmSpec(image=IMAGE, model="RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", quantization="compressed-tensors")
    assert weight_bytes_per_param(fp8) == ("fp8", 1.0)
    assert weight_bytes_per_param(VllmSpec(image=IMAGE, model="org/x-AWQ", quantization="awq_marlin")) == (
        "awq",
        0.5625,
    )


def test_the_overhead_estimate_depends_on_batch_tokens_cuda_graphs_and_model_size():
    from gpuctl.capacity import max_num_batched_tokens, vllm_overhead_gib
    from gpuctl.catalog import find_model

    llama8 = find_model("meta-llama/Llama-3.1-8B-Instruct")
    rtx = vllm_host("RTX 4090", 1, 24, model="meta-llama/Llama-3.1-8B-Instruct")
    assert max_num_batched_tokens(rtx, rtx.vllm[0]) == 2048  # vLLM 0.32's API-server default below 70 GiB
    assert vllm_overhead_gib(rtx, rtx.vllm[0], llama8) == {"non_torch": 0.35, "activation": 1.4, "cuda_graphs": 0.34}
    eager = vllm_host("RTX 4090", 1, 24, model="m", extra_args=["--enforce-eager", "--max-num-batched-tokens", "4096"])
    assert max_num_batched_tokens(eager, eager.vllm[0]) == 4096
    assert vllm_overhead_gib(eager, eager.vllm[0], llama8) == {
        "non_torch": 0.35,
        "activation": 2.61,
        "cuda_graphs": 0.0,
    }
    h100 = vllm_host("H100 80GB", 1, 80, model="m")
    a100 = vllm_host("A100 80GB", 1, 80, model="m")
    h200 = vllm_host("H200", 1, 141, model="m")
    assert [max_num_batched_tokens(h, h.vllm[0]) for h in (h100, a100, h200)] == [8192, 2048, 8192]
    plan = one(rtx.model_copy(update={"vllm": [VllmSpec(image=IMAGE, model="meta-llama/Llama-3.1-8B-Instruct")]}))
    assert plan.numbers["overhead_gib_estimate"] == 2.09 and plan.numbers["max_num_batched_tokens"] == 2048


def cpu_host(**engine) -> HostSpec:
    return HostSpec(name="cpu", address="10.0.0.2", vllm=[VllmSpec(image=IMAGE, device="cpu", **engine)])


def test_a_cpu_engine_is_planned_from_its_kv_space_in_blocks_of_128():
    # Llama 3.1 8B, bf16: KV/token = 2 × 32 layers × 8 KV heads × 128 × 2 B = 131,072 B; 8 GiB ÷ 131,072 B =
    # 65,536 tokens (512 blocks of 128); 65,536 ÷ 8,192 = 8 sequences. RAM: 8.03e9 × 2 B + 8 GiB + 1.7 GiB.
    plan = one(cpu_host(model="meta-llama/Llama-3.1-8B-Instruct", cpu_kv_cache_gib=8, max_model_len=8192))
    assert plan.verdict == "fits"
    assert plan.numbers["kv_bytes_per_token"] == 131072 and plan.numbers["cache_tokens"] == 65536
    assert plan.numbers["max_concurrency"] == 8.0
    assert plan.numbers["ram_needed_gib"] == round((8.03e9 * 2 + 9.7 * GIB) / GIB, 2)  # 24.66
    assert "gpu_memory_gib" not in plan.numbers


def test_a_cpu_kv_space_too_small_for_one_sequence_says_how_much_would_do():
    # 1 GiB ÷ 131,072 B = 8,192 tokens < 16,384; one sequence needs 16,384 × 131,072 B = 2 GiB.
    plan = one(cpu_host(model="meta-llama/Llama-3.1-8B-Instruct", cpu_kv_cache_gib=1, max_model_len=16384))
    assert plan.verdict == "does not fit"
    assert plan.reasons == [
        "the KV cache holds 8,192 tokens, less than one sequence of max_model_len 16,384: "
        "cpu_kv_cache_gib=2 or a lower max_model_len"
    ]


def test_fp8_kv_halves_what_a_cpu_token_takes_and_an_unknown_model_is_not_planned():
    fp8 = one(cpu_host(model="meta-llama/Llama-3.1-8B-Instruct", cpu_kv_cache_gib=8, kv_cache_dtype="fp8"))
    assert fp8.numbers["kv_bytes_per_token"] == 65536 and fp8.numbers["cache_tokens"] == 131072
    unknown = one(cpu_host(model="org/unknown", cpu_kv_cache_gib=4))
    assert unknown.verdict == "unknown"
    assert unknown.numbers["ram_needed_gib_without_weights"] == 5.7


def test_each_cpu_tensor_parallel_worker_holds_its_own_kv_space():
    # Two workers, each with VLLM_CPU_KVCACHE_SPACE=4: 8 GiB of KV + 1.7 GiB runtime + 0.6 for the second worker.
    plan = one(cpu_host(model="org/unknown", cpu_kv_cache_gib=4, tensor_parallel_size=2))
    assert plan.numbers["ram_needed_gib_without_weights"] == 10.3
