"""The published vLLM-vs-Ollama throughput figures, as data, and how a measurement compares with them.

Source: the project's field reference (shared REFERENCE.md), section "Published vLLM-vs-Ollama
figures": Llama 3.1 8B unless noted, chat prompts of ~180 tokens in and ~220 out. "FP16" there
means unquantized 16-bit weights (BF16 included); Ollama's library tags default to Q4_K_M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuctl import catalog

SOURCE = (
    "REFERENCE.md, 'Published vLLM-vs-Ollama figures' (Llama 3.1 8B unless noted; chat prompts "
    "~180 tokens in / ~220 out)"
)
PROMPT_TOKENS, OUTPUT_TOKENS = 180, 220
TOLERANCE = 0.15  # within ±15% of the published figure counts as "as published"


@dataclass(frozen=True)
class ReferenceRow:
    """One published row: GPU and engine as printed, and the catalog names they match."""

    gpu_label: str
    engine_label: str
    concurrency: int
    aggregate_tok_s: float
    per_stream_tok_s: float
    gpu: str  # catalog GPU name
    engine: str  # "vllm" | "ollama"
    models: tuple[str, ...]  # catalog model names the row stands for
    weights: str  # weight format: fp16, q4_k_m, awq
    note: str = ""


LLAMA_8B = ("Llama 3.1 8B",)
LLAMA_70B = ("Llama 3.1 70B", "Llama 3.3 70B")  # "70B" as published; both share one architecture

ROWS: tuple[ReferenceRow, ...] = (
    ReferenceRow("RTX 4090 24GB", "vLLM FP16", 32, 1820, 57, "RTX 4090", "vllm", LLAMA_8B, "fp16"),
    ReferenceRow("RTX 4090 24GB", "vLLM FP16", 1, 105, 105, "RTX 4090", "vllm", LLAMA_8B, "fp16"),
    ReferenceRow("RTX 4090 24GB", "Ollama Q4_K_M", 32, 112, 3.5, "RTX 4090", "ollama", LLAMA_8B, "q4_k_m"),
    ReferenceRow("RTX 4090 24GB", "Ollama Q4_K_M", 1, 96, 96, "RTX 4090", "ollama", LLAMA_8B, "q4_k_m"),
    ReferenceRow("RTX 5060 Ti 16GB", "vLLM FP16", 16, 720, 45, "RTX 5060 Ti", "vllm", LLAMA_8B, "fp16"),
    ReferenceRow("RTX 3090 24GB", "vLLM FP16", 32, 1310, 41, "RTX 3090", "vllm", LLAMA_8B, "fp16"),
    ReferenceRow(
        "RTX 4090 24GB",
        "vLLM 70B AWQ",
        8,
        185,
        23,
        "RTX 4090",
        "vllm",
        LLAMA_70B,
        "awq",
        note="a 70B AWQ model needs more than one 24 GB card; matched on the GPU model only",
    ),
)

WEIGHT_LABELS = {
    "fp16": "FP16",
    "fp32": "FP32",
    "fp8": "FP8",
    "int8": "INT8",
    "awq": "AWQ",
    "gptq": "GPTQ",
    "q4_k_m": "Q4_K_M",
    "q5_k_m": "Q5_K_M",
    "q8_0": "Q8_0",
    "q4_0": "Q4_0",
}


@dataclass(frozen=True)
class Subject:
    """What was measured, in the terms the published rows use."""

    gpu: str | None  # the GPU model as the inventory or --gpu names it
    engine: str  # vllm, ollama, or openai (another OpenAI-compatible server)
    model: str
    weights: str  # see weight_format()

    def rows(self) -> list[ReferenceRow]:
        """Published rows for this GPU, engine, model and weights, at any concurrency."""
        gpu = catalog.find_gpu(self.gpu) if self.gpu else None
        model = catalog.find_model(self.model)
        if gpu is None or model is None:
            return []
        return [
            r
            for r in ROWS
            if r.gpu == gpu.name and r.engine == self.engine and model.name in r.models and r.weights == self.weights
        ]

    def row(self, concurrency: int) -> ReferenceRow | None:
        return next((r for r in self.rows() if r.concurrency == concurrency), None)


def weight_format(engine: str, model: str, quantization: str | None = None, dtype: str | None = None) -> str:
    """The weight format, as the published rows name it: an explicit quantization, the one the model name
    announces, else Ollama's default (q4_k_m) or unquantized 16-bit (fp16; fp32 for --dtype float32)."""
    if quantization:
        for known in ("awq", "gptq", "fp8"):
            if quantization.startswith(known):
                return known
        return quantization
    named = catalog.weight_format_of(model)
    if named:
        return named
    if engine == "ollama":
        return "q4_k_m"
    return "fp32" if dtype == "float32" else "fp16"


def weights_label(weights: str) -> str:
    return WEIGHT_LABELS.get(weights, weights.upper())


@dataclass(frozen=True)
class Comparison:
    """A measurement beside its published row."""

    row: ReferenceRow
    aggregate_tok_s: float
    per_stream_tok_s: float

    @property
    def aggregate_delta(self) -> float:
        return self.aggregate_tok_s / self.row.aggregate_tok_s - 1

    @property
    def per_stream_delta(self) -> float:
        return self.per_stream_tok_s / self.row.per_stream_tok_s - 1

    @property
    def verdict(self) -> str:
        if abs(self.aggregate_delta) <= TOLERANCE:
            return "as published"
        return "below published" if self.aggregate_delta < 0 else "above published"

    def as_dict(self) -> dict[str, Any]:
        r = self.row
        return {
            "source": SOURCE,
            "gpu": r.gpu_label,
            "engine": r.engine_label,
            "concurrency": r.concurrency,
            "aggregate_tok_s": r.aggregate_tok_s,
            "per_stream_tok_s": r.per_stream_tok_s,
            "aggregate_delta_pct": round(self.aggregate_delta * 100, 1),
            "per_stream_delta_pct": round(self.per_stream_delta * 100, 1),
            "verdict": self.verdict,
            **({"note": r.note} if r.note else {}),
        }
