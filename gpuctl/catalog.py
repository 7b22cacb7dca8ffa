"""What gpuctl knows about GPUs and popular models, for capacity planning before a deploy.

Figures come from the vendors' data sheets and the models' own config.json files. A model the
catalog lacks can be described in the inventory (`Vllm(architecture=...)`) or read from its
config.json (`architecture_from_config`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3


@dataclass(frozen=True)
class GpuFacts:
    name: str
    memory_gib: float
    arch: str
    native_fp8: bool  # Ada, Hopper and Blackwell have FP8 tensor cores; Ampere does not


GPUS = [
    GpuFacts("RTX 3090", 24, "Ampere", False),
    GpuFacts("RTX 4090", 24, "Ada", True),
    GpuFacts("RTX 5060 Ti", 16, "Blackwell", True),
    GpuFacts("RTX 5090", 32, "Blackwell", True),
    GpuFacts("L4", 24, "Ada", True),
    GpuFacts("L40S", 48, "Ada", True),
    GpuFacts("A10", 24, "Ampere", False),
    GpuFacts("A100 40GB", 40, "Ampere", False),
    GpuFacts("A100 80GB", 80, "Ampere", False),
    GpuFacts("H100 80GB", 80, "Hopper", True),
    GpuFacts("H200", 141, "Hopper", True),
]


def normalized(text: str) -> str:
    """A GPU name reduced for matching: 'NVIDIA GeForce RTX 4090' → 'rtx4090'."""
    return re.sub(r"[^a-z0-9]", "", text.lower().removeprefix("nvidia").replace("geforce", ""))


def find_gpu(model: str) -> GpuFacts | None:
    """The catalog entry for a GPU model string ('RTX 4090', 'NVIDIA H100 80GB HBM3', 'a100-80gb')."""
    wanted = normalized(model)
    # Longest names first, so 'A100 80GB' wins over a bare 'A100' match.
    for gpu in sorted(GPUS, key=lambda g: -len(g.name)):
        if normalized(gpu.name) in wanted or wanted == normalized(gpu.name).replace("gb", ""):
            return gpu
    for gpu in GPUS:  # 'H100' alone, 'A100' alone: the first listed size
        if wanted and normalized(gpu.name).startswith(wanted):
            return gpu
    return None


@dataclass(frozen=True)
class ModelFacts:
    """The numbers that decide memory: parameters, layers, KV heads, head size, context."""

    name: str
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    max_context: int
    exact_kv: bool = True  # False for sliding-window / MLA models, where the simple formula overstates KV
    aliases: tuple[str, ...] = ()


MODELS = [
    ModelFacts("Llama 3.1 8B", 8.03, 32, 8, 128, 131072, aliases=("llama-3.1-8b", "llama3.1:8b", "llama3.1")),
    ModelFacts("Llama 3.1 70B", 70.6, 80, 8, 128, 131072, aliases=("llama-3.1-70b", "llama3.1:70b")),
    ModelFacts("Llama 3.3 70B", 70.6, 80, 8, 128, 131072, aliases=("llama-3.3-70b", "llama3.3:70b", "llama3.3")),
    ModelFacts("Qwen2.5 0.5B", 0.494, 24, 2, 64, 32768, aliases=("qwen2.5-0.5b", "qwen2.5:0.5b")),
    ModelFacts("Qwen2.5 7B", 7.62, 28, 4, 128, 131072, aliases=("qwen2.5-7b", "qwen2.5:7b", "qwen2.5")),
    ModelFacts("Qwen2.5 14B", 14.7, 48, 8, 128, 131072, aliases=("qwen2.5-14b", "qwen2.5:14b")),
    ModelFacts("Qwen2.5 32B", 32.8, 64, 8, 128, 131072, aliases=("qwen2.5-32b", "qwen2.5:32b")),
    ModelFacts("Qwen2.5 72B", 72.7, 80, 8, 128, 131072, aliases=("qwen2.5-72b", "qwen2.5:72b")),
    ModelFacts("Qwen3 8B", 8.19, 36, 8, 128, 40960, aliases=("qwen3-8b", "qwen3:8b", "qwen3")),
    ModelFacts("Qwen3 32B", 32.8, 64, 8, 128, 40960, aliases=("qwen3-32b", "qwen3:32b")),
    ModelFacts("Mistral 7B", 7.25, 32, 8, 128, 32768, aliases=("mistral-7b", "mistral:7b", "mistral")),
    ModelFacts("Gemma 2 9B", 9.24, 42, 8, 256, 8192, exact_kv=False, aliases=("gemma-2-9b", "gemma2:9b", "gemma2")),
    ModelFacts(
        "Gemma 3 12B", 12.2, 48, 8, 256, 131072, exact_kv=False, aliases=("gemma-3-12b", "gemma3:12b", "gemma3")
    ),
    ModelFacts("TinyLlama 1.1B", 1.1, 22, 4, 64, 2048, aliases=("tinyllama",)),
]

# Bytes per parameter of common weight formats (4-bit formats include their scales).
WEIGHT_BYTES = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "awq": 0.5625,
    "gptq": 0.5625,
    "q4_k_m": 4.85 / 8,
    "q5_k_m": 5.69 / 8,
    "q8_0": 8.5 / 8,
    "q4_0": 4.55 / 8,
    "fp32": 4.0,
}


def find_model(name: str) -> ModelFacts | None:
    """The catalog entry for a Hugging Face id or an Ollama name (longest alias that matches)."""
    text = name.lower()
    best: tuple[int, ModelFacts] | None = None
    for model in MODELS:
        for alias in model.aliases:
            pattern = re.escape(alias).replace(r"\-", r"[-_ .]?").replace(r"\.", r"\.?")
            if re.search(rf"(^|[/:_ -]){pattern}($|[^0-9a-z.])", text) and (best is None or len(alias) > best[0]):
                best = (len(alias), model)
    return best[1] if best else None


def weight_format_of(name: str) -> str | None:
    """The weight format a model name announces (…-FP8, …-AWQ, :8b-instruct-q8_0), if any."""
    text = name.lower()
    for fmt in ("q4_k_m", "q5_k_m", "q8_0", "q4_0", "awq", "gptq", "fp8", "int8"):
        if fmt in text.replace("-", "_") or fmt in text:
            return fmt
    return None


def architecture_from_config(path: Path) -> ModelFacts:
    """Model facts from a Hugging Face config.json (parameters estimated from its shapes)."""
    config = json.loads(Path(path).read_text())
    layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    vocab = config.get("vocab_size", 0)
    inter = config.get("intermediate_size", 4 * hidden)
    per_layer = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden + 3 * hidden * inter
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    params = (layers * per_layer + embeddings) / 1e9
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    return ModelFacts(
        name=str(config.get("_name_or_path") or Path(path).parent.name),
        params_b=params,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        max_context=config.get("max_position_embeddings", 0),
        exact_kv=not window,
    )
