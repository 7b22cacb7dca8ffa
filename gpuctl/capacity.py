"""Capacity planning: will an engine start, and how many sequences will fit, before a cold start.

vLLM, per GPU:  budget = gpu_memory_utilization × memory (vllm_budget: the deploy's preflight uses it too)
                weights = parameters × bytes per parameter ÷ tensor-parallel size
                KV pool = budget − weights − runtime overhead (an estimate: vllm_overhead_gib)
                KV bytes per token = 2 × layers × max(1, kv_heads ÷ tp) × head_dim × bytes(KV dtype)
                cache tokens = KV pool ÷ KV bytes per token, in whole blocks of 16 tokens
                max concurrency at max_model_len = cache tokens ÷ max_model_len
vLLM on the CPU: KV pool = cpu_kv_cache_gib (VLLM_CPU_KVCACHE_SPACE), in blocks of 128 tokens; RAM needed =
                weights + KV pool + runtime overhead (CPU_OVERHEAD_GIB, measured), checked on the host.
Ollama:         weights (GGUF) + NUM_PARALLEL × context × KV bytes per token + overhead vs. GPU memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpuctl.catalog import (
    GIB,
    WEIGHT_BYTES,
    GpuFacts,
    ModelFacts,
    architecture_from_config,
    find_gpu,
    find_model,
    weight_format_of,
)
from gpuctl.errors import GpuctlError, InventoryError
from gpuctl.spec import HostSpec, OllamaSpec, VllmSpec

Verdict = Literal["fits", "tight", "does not fit", "unknown"]
OLLAMA_OVERHEAD_GIB = 0.5
OLLAMA_DEFAULT_CONTEXT = 4096
BLOCK_TOKENS = 16
KV_BYTES = {"auto": None, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "f16": 2, "q8_0": 1, "q4_0": 0.5}
TIGHT_CONCURRENCY = 2.0


@dataclass
class EnginePlan:
    host: str
    engine: str
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    numbers: dict[str, float | int | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def max_num_batched_tokens(host: HostSpec, engine: VllmSpec) -> int:
    """--max-num-batched-tokens from extra_args, else vLLM 0.32's default for its API server, which depends on
    the GPU (vllm/engine/arg_utils.py, EngineArgs._set_default_args): 16384 from 160 GiB, 8192 from 70 GiB
    (not A100), 2048 otherwise."""
    args = list(engine.extra_args)
    for i, arg in enumerate(args):
        if arg == "--max-num-batched-tokens" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if arg.startswith("--max-num-batched-tokens=") and arg.split("=", 1)[1].isdigit():
            return int(arg.split("=", 1)[1])
    memory = host.gpus.memory_gib if host.gpus else 0
    if memory >= 160:
        return 16384
    return 8192 if memory >= 70 and "a100" not in host.gpus.model.lower() else 2048  # type: ignore[union-attr]


def vllm_overhead_gib(host: HostSpec, engine: VllmSpec, model: ModelFacts) -> dict[str, float]:
    """Memory per GPU that vLLM takes beside weights and KV cache: an estimate (vLLM measures it when it
    starts), in three parts, each from vLLM's own start-up profile lines:
    - non-torch memory (CUDA context, cuBLAS and NCCL workspaces): "non_torch_memory takes 0.16/0.28/0.33 GiB"
      (generative-computing/mellea#416, vllm-project/vllm#15039, #14452 on a tensor-parallel worker): 0.35;
    - the activation peak of the profile run, which grows with the tokens of one batch and the model's
      size per GPU: 0.23 GiB for a 0.5B model, 1.01-1.77 GiB for a 5.4B one (mellea#416, vllm#14452), fitted
      as 0.2 + 0.15 × billions of parameters per GPU × max_num_batched_tokens ÷ 2048, at most 4;
    - CUDA graphs, none with --enforce-eager: "took 0.13 GiB" for 0.5B (mellea#416), "0.36 GiB" (gpustack
      runner#251), 1.40 GiB for Llama 4 Maverick on 8 GPUs (sgl-project/sglang#8538): 0.1 + 0.03 per
      billion parameters per GPU, at most 1.5.
    """
    per_gpu_b = model.params_b / engine.tensor_parallel_size
    batched = max_num_batched_tokens(host, engine)
    eager = "--enforce-eager" in engine.extra_args
    parts = {
        "non_torch": 0.35,
        "activation": min(4.0, 0.2 + 0.15 * per_gpu_b * batched / 2048),
        "cuda_graphs": 0.0 if eager else min(1.5, 0.1 + 0.03 * per_gpu_b),
    }
    return {name: round(value, 2) for name, value in parts.items()}


def kv_bytes_per_token(model: ModelFacts, kv_dtype_bytes: float, tp: int = 1) -> float:
    """KV cache bytes one token takes on one GPU (KV heads split across tensor-parallel ranks)."""
    return 2 * model.layers * max(1.0, model.kv_heads / tp) * model.head_dim * kv_dtype_bytes


def cache_tokens(pool_bytes: float, bytes_per_token: float) -> int:
    """Tokens a KV pool holds, in whole blocks (vLLM allocates the cache in blocks of 16 tokens)."""
    if pool_bytes <= 0:
        return 0
    return int(pool_bytes // (bytes_per_token * BLOCK_TOKENS)) * BLOCK_TOKENS


def model_of(engine: VllmSpec) -> ModelFacts | None:
    if engine.architecture is not None:
        return ModelFacts(name=engine.model, **engine.architecture.model_dump())
    if engine.config_json is not None:
        try:
            return architecture_from_config(Path(engine.config_json).expanduser())
        except (OSError, KeyError, ValueError) as exc:
            raise GpuctlError(f"vllm:{engine.name}: config_json {engine.config_json}: cannot read it ({exc})") from None
    return find_model(engine.served_name) or find_model(engine.model)


def weight_bytes_per_param(engine: VllmSpec) -> tuple[str, float]:
    """The weight format (quantization, a name like …-FP8, or the dtype) and its bytes per parameter."""
    # A method that names no width (compressed-tensors, modelopt…) leaves it to the model's name.
    method = (engine.quantization or "").removesuffix("_marlin")
    fmt = (
        (method if method in WEIGHT_BYTES else None)
        or weight_format_of(engine.model)
        or ("fp32" if engine.dtype == "float32" else "bf16")
    )
    return fmt, WEIGHT_BYTES.get(fmt, 2.0)


def vllm_budget(utilization: float, total: float) -> float:
    """What vLLM takes of one GPU: gpu_memory_utilization × the GPU's total memory, in the unit of TOTAL.

    Weights, KV cache and vLLM's overhead all come out of it. The planner uses it with the inventory's
    GPU memory in bytes; the deploy's preflight with the total nvidia-smi reports in MiB, against the
    memory other processes hold there."""
    return utilization * total


def vllm_warnings(engine: VllmSpec, model: ModelFacts, gpu: GpuFacts | None) -> list[str]:
    """What the plan of ENGINE should say besides its verdict."""
    warnings = []
    if engine.kv_cache_dtype.startswith("fp8") and gpu is not None and not gpu.native_fp8:
        warnings.append(
            f"fp8 KV cache on {gpu.name} ({gpu.arch}) has no native fp8 support: slower, and accuracy may drop"
        )
    if not model.exact_kv:
        warnings.append(f"{model.name} uses sliding-window attention: the KV figures are an upper bound")
    return warnings


CPU_BLOCK_TOKENS = 128
"""vLLM 0.32's CPU backend allocates its KV cache in blocks of 128 tokens unless told otherwise
(platforms/cpu.py, CpuPlatform.check_and_update_config)."""
CPU_OVERHEAD_GIB = 1.7
"""RAM a CPU engine takes beside its weights and KV cache: measured on the test fleet with the real vLLM 0.32
CPU image and a 0.5 MB model (API server 0.55 GB, engine core 0.52 GB, worker 0.6 GB beyond its KV cache)."""


def cpu_kv_bytes_per_token(engine: VllmSpec, model: ModelFacts) -> float:
    """KV bytes per token on the CPU backend: fp8 KV is 1 byte, else the model's dtype (float32: 4, else 2)."""
    kv_dtype_bytes = KV_BYTES[engine.kv_cache_dtype] or (4 if engine.dtype == "float32" else 2)
    return kv_bytes_per_token(model, kv_dtype_bytes, engine.tensor_parallel_size)


CPU_WORKER_OVERHEAD_GIB = 0.6
"""Of CPU_OVERHEAD_GIB, what each further tensor-parallel worker adds (its own process)."""


def cpu_ram_needed_bytes(engine: VllmSpec, model: ModelFacts | None) -> float:
    """Host RAM a CPU engine needs: weights (when the model is known) + its KV space per tensor-parallel worker
    (each allocates VLLM_CPU_KVCACHE_SPACE) + the runtime overhead. The deploy's preflight compares it with the
    host's available memory."""
    tp = engine.tensor_parallel_size
    weights = model.params_b * 1e9 * weight_bytes_per_param(engine)[1] if model else 0.0
    overhead = CPU_OVERHEAD_GIB + (tp - 1) * CPU_WORKER_OVERHEAD_GIB
    return weights + tp * engine.cpu_kv_cache_gib * GIB + overhead * GIB


def plan_vllm_cpu(host: HostSpec, engine: VllmSpec) -> EnginePlan:
    """A CPU engine: KV space (GiB of RAM) → cache tokens → sequences of max_model_len at once."""
    plan = EnginePlan(host.name, engine.label, "fits")
    model = model_of(engine)
    needed = cpu_ram_needed_bytes(engine, model)
    plan.numbers = {"device": "cpu", "kv_space_gib": engine.cpu_kv_cache_gib}
    if model is None:
        plan.verdict = "unknown"
        plan.numbers["ram_needed_gib_without_weights"] = round(needed / GIB, 2)
        plan.warnings.append(
            f"{engine.model} is not in the catalog: give config_json= or architecture=(…) to plan its cache"
        )
        return plan
    per_token = cpu_kv_bytes_per_token(engine, model)
    tokens = int(engine.cpu_kv_cache_gib * GIB // (per_token * CPU_BLOCK_TOKENS)) * CPU_BLOCK_TOKENS
    max_len = engine.max_model_len or model.max_context
    concurrency = tokens / max_len if max_len else 0.0
    fmt, _ = weight_bytes_per_param(engine)
    plan.numbers |= {
        "model": model.name,
        "weights": fmt,
        "kv_bytes_per_token": int(per_token),
        "cache_tokens": tokens,
        "max_model_len": max_len,
        "max_concurrency": round(concurrency, 2),
        "ram_needed_gib": round(needed / GIB, 2),
    }
    if max_len > model.max_context:
        plan.verdict = "does not fit"
        plan.reasons.append(f"max_model_len {max_len} exceeds {model.name}'s context of {model.max_context}")
    elif tokens < max_len:
        plan.verdict = "does not fit"
        more = -(-max_len * per_token // GIB)
        plan.reasons.append(
            f"the KV cache holds {tokens:,} tokens, less than one sequence of max_model_len {max_len:,}: "
            f"cpu_kv_cache_gib={int(more)} or a lower max_model_len"
        )
    elif concurrency < TIGHT_CONCURRENCY:
        plan.verdict = "tight"
        plan.reasons.append(f"only {concurrency:.2f} sequences of {max_len:,} tokens fit at once")
    else:
        plan.reasons.append(
            f"{concurrency:.1f} sequences of {max_len:,} tokens fit at once; "
            f"about {needed / GIB:.1f} GiB of RAM (checked on the host by the preflight)"
        )
    return plan


def plan_vllm(host: HostSpec, engine: VllmSpec) -> EnginePlan:
    plan = EnginePlan(host.name, f"vllm:{engine.name}", "fits")
    if engine.gpu_access == "none" or host.gpus is None:
        plan.verdict, plan.reasons = "unknown", ["no GPU access: nothing to plan"]
        return plan
    model = model_of(engine)
    if model is None:
        plan.verdict = "unknown"
        plan.warnings.append(f"{engine.model} is not in the catalog: describe it with architecture=(…) to plan it")
        return plan
    gpu = find_gpu(host.gpus.model)
    tp = engine.tensor_parallel_size
    fmt, per_param = weight_bytes_per_param(engine)
    memory = host.gpus.memory_gib * GIB
    budget = vllm_budget(engine.gpu_memory_utilization, memory)
    weights = model.params_b * 1e9 * per_param / tp
    overhead_parts = vllm_overhead_gib(host, engine, model)
    overhead_gib = round(sum(overhead_parts.values()), 2)
    pool = budget - weights - overhead_gib * GIB
    kv_dtype_bytes = KV_BYTES[engine.kv_cache_dtype] or (4 if engine.dtype == "float32" else 2)
    per_token = kv_bytes_per_token(model, kv_dtype_bytes, tp)
    tokens = cache_tokens(pool, per_token)
    max_len = engine.max_model_len or model.max_context
    concurrency = tokens / max_len if max_len else 0.0
    plan.numbers = {
        "model": model.name,
        "weights": fmt,
        "gpu_memory_gib": host.gpus.memory_gib,
        "budget_gib": round(budget / GIB, 2),
        "weights_per_gpu_gib": round(weights / GIB, 2),
        "overhead_gib_estimate": overhead_gib,
        "max_num_batched_tokens": max_num_batched_tokens(host, engine),
        "kv_pool_gib": round(pool / GIB, 2),
        "kv_bytes_per_token": int(per_token),
        "cache_tokens": tokens,
        "max_model_len": max_len,
        "max_concurrency": round(concurrency, 2),
    }
    plan.warnings += vllm_warnings(engine, model, gpu)
    if max_len > model.max_context:
        plan.verdict = "does not fit"
        plan.reasons.append(f"max_model_len {max_len} exceeds {model.name}'s context of {model.max_context}")
    if pool <= 0 or tokens < max_len:
        plan.verdict = "does not fit"
        if pool <= 0:
            problem = (
                f"weights need {weights / GIB:.1f} GiB per GPU + about {overhead_gib:g} GiB overhead, but "
                f"{engine.gpu_memory_utilization:g} × {host.gpus.memory_gib:g} GiB gives {budget / GIB:.1f} GiB"
            )
        else:
            problem = f"the KV cache holds {tokens:,} tokens, less than one sequence of max_model_len {max_len:,}"
        plan.reasons.append(f"{problem}: {fixes_that_fit(host, engine, model, max_len, tokens)}")
    elif concurrency < TIGHT_CONCURRENCY:
        plan.verdict = "tight"
        plan.reasons.append(f"only {concurrency:.2f} sequences of {max_len:,} tokens fit at once")
    else:
        plan.reasons.append(f"{concurrency:.1f} sequences of {max_len:,} tokens fit at once")
    return plan


MAX_GPU_MEMORY_UTILIZATION = 0.98  # the spec's upper bound
TP_SIZES = (1, 2, 4, 8, 16)  # tensor-parallel sizes vLLM runs (attention heads split evenly)


def vllm_cache_tokens(
    host: HostSpec,
    engine: VllmSpec,
    model: ModelFacts,
    *,
    tp: int,
    per_param: float,
    utilization: float,
    kv_bytes: float,
) -> int:
    """Cache tokens per the formula at the top of this module, for one set of choices."""
    assert host.gpus is not None
    overhead = sum(vllm_overhead_gib(host, engine.model_copy(update={"tensor_parallel_size": tp}), model).values())
    budget = vllm_budget(utilization, host.gpus.memory_gib * GIB)
    pool = budget - model.params_b * 1e9 * per_param / tp - round(overhead, 2) * GIB
    return cache_tokens(pool, kv_bytes_per_token(model, kv_bytes, tp))


def fixes_that_fit(host: HostSpec, engine: VllmSpec, model: ModelFacts, max_len: int, tokens: int) -> str:
    """Only changes that would fit, each computed: a lower max_model_len, an fp8 KV cache, the smallest
    tensor-parallel size, a quantized checkpoint, a higher gpu_memory_utilization (≤ 0.98)."""
    assert host.gpus is not None
    fmt, per_param = weight_bytes_per_param(engine)
    kv_bytes = KV_BYTES[engine.kv_cache_dtype] or (4 if engine.dtype == "float32" else 2)
    now = {
        "tp": engine.tensor_parallel_size,
        "per_param": per_param,
        "utilization": engine.gpu_memory_utilization,
        "kv_bytes": kv_bytes,
    }

    def fits(**change: float) -> bool:
        return vllm_cache_tokens(host, engine, model, **{**now, **change}) >= max_len  # type: ignore[arg-type]

    fixes = []
    if tokens >= BLOCK_TOKENS:
        fixes.append(f"lower max_model_len to {tokens:,} or less")
    if kv_bytes > 1 and fits(kv_bytes=1):
        fixes.append("use kv_cache_dtype='fp8'")
    wider = [tp for tp in TP_SIZES if tp > now["tp"] and model.kv_heads % min(tp, model.kv_heads) == 0 and fits(tp=tp)]
    if wider and wider[0] <= host.gpus.count:
        fixes.append(f"set tensor_parallel_size={wider[0]} (the host has {host.gpus.count} GPUs)")
    elif wider:
        fixes.append(f"use {wider[0]} GPUs with tensor_parallel_size={wider[0]} (this host has {host.gpus.count})")
    for name, bytes_per_param in (("FP8", WEIGHT_BYTES["fp8"]), ("AWQ/GPTQ 4-bit", WEIGHT_BYTES["awq"])):
        if bytes_per_param < per_param and fits(per_param=bytes_per_param):
            fixes.append(f"serve an {name} checkpoint of {model.name} ({fmt} now)")
            break
    needed = next(
        (
            u / 100
            for u in range(int(now["utilization"] * 100) + 1, int(MAX_GPU_MEMORY_UTILIZATION * 100) + 1)
            if fits(utilization=u / 100)
        ),
        None,
    )
    if needed is not None:
        fixes.append(f"raise gpu_memory_utilization to {needed:g}")
    if not fixes:
        return (
            f"no setting of this engine fits {model.name} on {host.gpus.count}× {host.gpus.model}: "
            "use a smaller model or GPUs with more memory"
        )
    return "; or ".join(fixes)


def ollama_model_bytes(name: str) -> tuple[ModelFacts | None, str, float]:
    model = find_model(name)
    fmt = weight_format_of(name) or "q4_k_m"  # Ollama's default tags are Q4_K_M
    size = model.params_b * 1e9 * WEIGHT_BYTES[fmt] if model else 0.0
    return model, fmt, size


def plan_ollama(host: HostSpec, ollama: OllamaSpec) -> list[EnginePlan]:
    plans = []
    context = ollama.context_length or OLLAMA_DEFAULT_CONTEXT
    gpu_memory = (host.gpus.memory_gib * len(ollama.gpus or range(host.gpus.count))) * GIB if host.gpus else 0.0
    for name in ollama.models or []:
        plan = EnginePlan(host.name, f"ollama:{name}", "fits")
        model, fmt, weights = ollama_model_bytes(name)
        if model is None:
            plan.verdict = "unknown"
            plan.warnings.append(f"{name} is not in the catalog: not planned")
            plans.append(plan)
            continue
        kv = ollama.num_parallel * context * kv_bytes_per_token(model, KV_BYTES[ollama.kv_cache_type] or 2)
        total = weights + kv + OLLAMA_OVERHEAD_GIB * GIB
        plan.numbers = {
            "model": model.name,
            "weights": fmt,
            "weights_gib": round(weights / GIB, 2),
            "kv_gib": round(kv / GIB, 2),
            "total_gib": round(total / GIB, 2),
            "gpu_memory_gib": round(gpu_memory / GIB, 2),
            "context": context,
            "num_parallel": ollama.num_parallel,
        }
        if gpu_memory == 0:
            plan.verdict = "fits" if ollama.cpu_fallback else "does not fit"
            plan.reasons.append(f"runs on the CPU: {total / GIB:.1f} GiB of RAM")
        elif total > gpu_memory:
            plan.verdict = "tight" if ollama.cpu_fallback else "does not fit"
            plan.reasons.append(
                f"needs {total / GIB:.1f} GiB, the GPU(s) have {gpu_memory / GIB:.1f}: "
                "layers spill to the CPU (much slower)"
            )
        else:
            plan.reasons.append(f"{total / GIB:.1f} of {gpu_memory / GIB:.1f} GiB on the GPU(s)")
        plans.append(plan)
    return plans


def plan_host(host: HostSpec) -> list[EnginePlan]:
    plans = [plan_vllm_cpu(host, e) if e.device == "cpu" else plan_vllm(host, e) for e in host.vllm]
    if host.ollama is not None:
        plans += plan_ollama(host, host.ollama)
    return plans


def gate(label: str, hosts: list[HostSpec], force: bool) -> list[str]:
    """Refuse (InventoryError, exit 2) an engine the planner says cannot start, unless FORCE.

    Returns the warnings to show: the plans' own, and with FORCE what would have been refused."""
    warnings, problems = [], []
    for host in hosts:
        try:
            plans = plan_host(host)
        except GpuctlError as exc:
            raise GpuctlError(f"{label}: {host.name}: {exc}") from None
        for plan in plans:
            warnings += [f"{label}: {plan.host}: {plan.engine}: {warning}" for warning in plan.warnings]
            if plan.verdict == "does not fit":
                problems += [f"{label}: {plan.host}: {plan.engine}: does not fit: {r}" for r in plan.reasons]
    if problems and not force:
        hint = (
            "(gpuctl plan shows the numbers; --force deploys anyway, at the risk of a "
            "multi-minute cold start that ends in an out-of-memory error)"
        )
        raise InventoryError([*problems, hint])
    return warnings + [f"--force: {problem}" for problem in problems]
