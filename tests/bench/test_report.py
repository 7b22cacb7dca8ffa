"""The report's notes, JSON and CSV from hand-made levels (no server)."""

from __future__ import annotations

from gpuctl.bench import report
from gpuctl.bench.client import Settings
from gpuctl.bench.reference import Subject
from gpuctl.bench.stats import RequestResult, summarize


def level(concurrency: int, tokens: list[int], window_s: float):  # type: ignore[no-untyped-def]
    results = [
        RequestResult(
            start=0.0, end=window_s, first_token=0.1, gaps=[0.01], events=n, prompt_tokens=180, output_tokens=n
        )
        for n in tokens
    ]
    return summarize(concurrency, results, window_s=window_s, cpu_s=0.01)


def rtx4090_run(*levels) -> report.Run:  # type: ignore[no-untyped-def]
    return report.Run(
        host="gpu-01",
        engine_name="vllm:main",
        engine_label="vLLM FP16",
        api="openai",
        model="llama-3.1-8b",
        gpu_label="1× RTX 4090",
        subject=Subject("RTX 4090", "vllm", "llama-3.1-8b", "fp16"),
        levels=list(levels),
    )


def test_notes_compare_with_the_published_row_and_flag_short_replies():
    settings = Settings(concurrency=[32, 8])
    c32 = level(32, [220] * 32, window_s=4.0)  # 7,040 tokens in 4 s: 1,760 tok/s, 3% below 1,820
    c8 = level(8, [220, 150], window_s=1.0)
    notes = report.notes([rtx4090_run(c32, c8)], settings)
    assert (
        "gpu-01 vllm:main c=32: 1,760 tok/s is 3% below the published 1,820 (RTX 4090 24GB, vLLM FP16): as published"
        in notes
    )
    assert (
        "gpu-01 vllm:main c=8: replies had 150–220 tokens (mean 185.0), not the 220 asked for: the server stopped "
        "early (Ollama's num_predict is only a maximum)"
    ) in notes
    assert notes[-1].startswith("published: REFERENCE.md, 'Published vLLM-vs-Ollama figures'")
    assert not any(n.startswith("note: these prompts") for n in notes)  # 180 / 220: the published shape


def test_notes_point_at_the_published_concurrencies_when_no_level_has_one():
    notes = report.notes([rtx4090_run(level(4, [220], 1.0))], Settings(concurrency=[4]))
    assert "gpu-01 vllm:main: published figures exist at concurrency 1, 32" in notes


def test_json_and_csv_carry_the_comparison():
    run = rtx4090_run(level(1, [220] * 4, window_s=8.0))  # 110 tok/s against 105 published
    data = report.as_json([run], Settings(concurrency=[1]))
    assert data["ok"] is True and data["settings"]["concurrency"] == [1]
    ref = data["runs"][0]["levels"][0]["reference"]
    assert (ref["aggregate_tok_s"], ref["aggregate_delta_pct"], ref["verdict"]) == (105, 4.8, "as published")
    (row,) = report.csv_rows([run])
    assert list(row) == report.CSV_COLUMNS
    assert (row["host"], row["concurrency"], row["aggregate_tok_s"], row["reference_aggregate_tok_s"]) == (
        "gpu-01",
        1,
        110.0,
        105,
    )
    assert (row["ttft_ms_p50"], row["itl_ms_p99"], row["output_tokens_total"]) == (100.0, 10.0, 880)


def test_a_failed_run_is_not_ok():
    run = rtx4090_run()
    run.error = "ssh tunnel to 127.0.0.1:8000 failed: Connection refused"
    assert not run.ok and report.as_json([run], Settings(concurrency=[1]))["ok"] is False
    assert report.csv_rows([run]) == []
