"""Synthetic prompts and their calibration; the published rows and how a host's spec matches them."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from gpuctl.bench import prompts, reference
from gpuctl.bench.reference import Comparison, Subject, weight_format


def calibrate(target: int, tokens_of) -> prompts.Calibration:  # type: ignore[no-untyped-def]
    async def probe(words: int) -> int:
        return tokens_of(words)

    return asyncio.run(prompts.calibrate(target, probe))


def test_prompts_are_seeded_shuffles_of_one_word_list():
    words = prompts.word_list(50, seed=7)
    assert words == prompts.word_list(50, seed=7) != prompts.word_list(50, seed=8)
    assert prompts.word_list(51, seed=7)[:50] == words  # one more word adds one word
    first, second = prompts.prompt_text(words, 7, 0), prompts.prompt_text(words, 7, 1)
    assert first != second and first == prompts.prompt_text(words, 7, 0)
    assert first.startswith(prompts.INSTRUCTION)
    body = lambda text: Counter(text.removeprefix(prompts.INSTRUCTION).split())  # noqa: E731
    assert body(first) == body(second) == Counter(words)  # same words, so the same token count


def test_the_prompt_pool_gives_every_request_its_own_start_with_the_same_words():
    words = prompts.word_list(40, seed=3)
    pool = prompts.PromptPool(words, seed=3, pool=16)
    texts = [pool.text(i) for i in range(16 * 40)]
    assert len({t[len(prompts.INSTRUCTION) : len(prompts.INSTRUCTION) + 25] for t in texts}) == len(texts)
    assert all(Counter(t.split()) == Counter(texts[0].split()) for t in texts)
    assert pool.text(5) == prompts.PromptPool(words, seed=3, pool=16).text(5)  # seeded


@pytest.mark.parametrize(
    ("tokens_of", "words", "tokens", "probes"),
    [
        (lambda w: w + 25, 155, 180, 3),  # one token per word plus a chat template: exact on the third probe
        (lambda w: 3 * w // 2 + 20, 107, 180, 3),
        (lambda w: 2 * w + 13, 83, 179, 4),  # 180 cannot be hit: the closest below it
    ],
)
def test_calibration_finds_the_word_count_from_the_servers_counts(tokens_of, words, tokens, probes):
    cal = calibrate(180, tokens_of)
    assert (cal.words, cal.tokens, len(cal.probes), cal.error) == (words, tokens, probes, None)
    assert cal.probes[0] == (180, tokens_of(180))


def test_a_failing_probe_ends_calibration_with_its_error():
    def refuse(_words: int) -> int:
        raise prompts.ProbeError("HTTP 401: Unauthorized")

    cal = calibrate(180, refuse)
    assert (cal.words, cal.error, cal.probes) == (180, "HTTP 401: Unauthorized", [])


def test_calibration_stays_within_the_models_context():
    """A tokenizer of 2.5 tokens per word plus a 20-token template, a 256-token context (vLLM refuses a
    longer prompt with a 400): the first guess stays within half of it, a refused probe is retried with
    half the words, and the calibration reaches 180 tokens without ever sending a prompt that cannot fit."""
    sent: list[int] = []

    async def probe(words: int) -> int:
        tokens = 5 * words // 2 + 20
        sent.append(tokens)
        if tokens > 255:
            raise prompts.ProbeError(f"HTTP 400: your prompt contains {tokens} input tokens")
        return tokens

    cal = asyncio.run(prompts.calibrate(180, probe, context_tokens=256))
    assert (cal.error, cal.tokens) == (None, 180) and cal.probes[0][0] == 64
    assert sent[0] == 340 and all(t <= 255 for t in sent[1:])  # 128 words is too many here: halved once
    unlimited = asyncio.run(prompts.calibrate(180, probe))  # without the context known: the first probe fails
    assert unlimited.error == "HTTP 400: your prompt contains 470 input tokens"


def test_calibration_is_bounded_even_against_a_server_that_counts_nonsense():
    cal = calibrate(180, lambda _w: 40)
    assert len(cal.probes) <= prompts.MAX_PROBES and cal.words >= 1


def test_the_published_rows_are_the_reference_table():
    table = [
        (r.gpu_label, r.engine_label, r.concurrency, r.aggregate_tok_s, r.per_stream_tok_s) for r in reference.ROWS
    ]
    assert table == [
        ("RTX 4090 24GB", "vLLM FP16", 32, 1820, 57),
        ("RTX 4090 24GB", "vLLM FP16", 1, 105, 105),
        ("RTX 4090 24GB", "Ollama Q4_K_M", 32, 112, 3.5),
        ("RTX 4090 24GB", "Ollama Q4_K_M", 1, 96, 96),
        ("RTX 5060 Ti 16GB", "vLLM FP16", 16, 720, 45),
        ("RTX 3090 24GB", "vLLM FP16", 32, 1310, 41),
        ("RTX 4090 24GB", "vLLM 70B AWQ", 8, 185, 23),
    ]
    assert "REFERENCE.md" in reference.SOURCE and "Published vLLM-vs-Ollama figures" in reference.SOURCE


def test_weight_formats_as_the_published_rows_name_them():
    assert weight_format("vllm", "meta-llama/Llama-3.1-8B-Instruct") == "fp16"
    assert weight_format("vllm", "meta-llama/Llama-3.1-8B-Instruct", dtype="float32") == "fp32"
    assert weight_format("vllm", "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4") == "awq"
    assert weight_format("vllm", "some/model", quantization="awq_marlin") == "awq"
    assert weight_format("ollama", "llama3.1:8b") == "q4_k_m"  # Ollama's library default
    assert weight_format("ollama", "llama3.1:8b-instruct-q8_0") == "q8_0"


def test_a_host_matches_the_rows_of_its_gpu_engine_model_and_weights():
    rtx4090 = Subject("RTX 4090", "vllm", "meta-llama/Llama-3.1-8B-Instruct", "fp16")
    assert sorted(r.concurrency for r in rtx4090.rows()) == [1, 32]
    assert rtx4090.row(32).aggregate_tok_s == 1820 and rtx4090.row(8) is None
    assert Subject("NVIDIA GeForce RTX 4090", "ollama", "llama3.1:8b", "q4_k_m").row(1).aggregate_tok_s == 96
    assert Subject("RTX 5060 Ti", "vllm", "llama-3.1-8b", "fp16").row(16).per_stream_tok_s == 45
    assert Subject("RTX 4090", "vllm", "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "awq").row(8).note
    for other in (
        Subject("H100 80GB", "vllm", "llama-3.1-8b", "fp16"),
        Subject("RTX 4090", "vllm", "qwen2.5-7b", "fp16"),
        Subject("RTX 4090", "vllm", "llama-3.1-8b", "fp8"),
        Subject(None, "vllm", "llama-3.1-8b", "fp16"),
        Subject("RTX 4090", "openai", "llama-3.1-8b", "fp16"),
    ):
        assert other.rows() == [], other


def test_a_comparison_says_how_far_off_and_whether_that_is_as_published():
    row = Subject("RTX 4090", "vllm", "llama-3.1-8b", "fp16").row(32)
    close = Comparison(row, aggregate_tok_s=1638.0, per_stream_tok_s=51.3)
    assert close.aggregate_delta == pytest.approx(-0.10) and close.per_stream_delta == pytest.approx(-0.10)
    assert close.verdict == "as published"
    assert Comparison(row, 900, 28).verdict == "below published"
    assert Comparison(row, 2200, 70).verdict == "above published"
    data = close.as_dict()
    assert (data["aggregate_delta_pct"], data["per_stream_delta_pct"], data["aggregate_tok_s"]) == (-10.0, -10.0, 1820)
