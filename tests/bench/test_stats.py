"""Bench statistics against hand-computed figures: percentiles, inter-token gaps, per-level aggregation."""

from __future__ import annotations

import pytest

from gpuctl.bench.stats import Percentiles, RequestResult, percentile, summarize


def test_percentile_interpolates_between_closest_ranks():
    values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]  # order does not matter
    assert percentile(values, 50) == pytest.approx(5.5)  # rank 4.5: 5 + 0.5 × (6 - 5)
    assert percentile(values, 90) == pytest.approx(9.1)  # rank 8.1: 9 + 0.1 × (10 - 9)
    assert percentile(values, 99) == pytest.approx(9.91)  # rank 8.91
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10
    assert percentile([10, 20], 90) == pytest.approx(19.0)
    assert percentile([7], 99) == 7


def test_percentile_of_nothing_is_an_error_and_percentiles_of_nothing_is_none():
    with pytest.raises(ValueError):
        percentile([], 50)
    assert Percentiles.of([]) is None
    assert Percentiles.of([0.2, 0.4]) == Percentiles(pytest.approx(0.3), pytest.approx(0.38), pytest.approx(0.398))


def test_a_level_aggregates_only_successful_requests():
    r1 = RequestResult(
        start=0.0, end=1.0, first_token=0.2, gaps=[0.1, 0.3], events=3, prompt_tokens=100, output_tokens=10
    )
    r2 = RequestResult(start=0.5, end=2.5, first_token=0.9, gaps=[0.2], events=2, prompt_tokens=102, output_tokens=30)
    failed = RequestResult(start=0.1, end=0.2, error="HTTP 401: Unauthorized")
    failed_again = RequestResult(start=0.3, end=0.4, error="HTTP 401: Unauthorized")
    level = summarize(8, [r1, failed, r2, failed_again], window_s=2.5, cpu_s=0.004)

    assert (level.concurrency, level.requests, level.errors) == (8, 2, 2)
    assert level.error_kinds == {"HTTP 401: Unauthorized": 2}
    assert level.output_tokens == 40 and level.prompt_tokens == 202 and level.output_tokens_range == (10, 30)
    assert level.aggregate_tok_s == pytest.approx(16.0)  # 40 tokens / 2.5 s window
    assert level.per_stream_tok_s == pytest.approx(40 / 3.0)  # 40 tokens / (1.0 s + 2.0 s) of requests
    assert level.requests_per_s == pytest.approx(0.8)
    assert level.ttft_s == Percentiles(pytest.approx(0.3), pytest.approx(0.38), pytest.approx(0.398))  # 0.2, 0.4
    assert level.itl_s == Percentiles(pytest.approx(0.2), pytest.approx(0.28), pytest.approx(0.298))  # 0.1, 0.2, 0.3
    assert level.e2e_s == Percentiles(pytest.approx(1.5), pytest.approx(1.9), pytest.approx(1.99))
    assert level.client_cpu_us_per_token == pytest.approx(100.0)  # 4 ms / 40 tokens
    assert level.events == 5 and level.prompt_tokens_mean == 101 and level.output_tokens_mean == 20

    data = level.as_dict()
    assert data["ttft_ms"] == {"p50": 300.0, "p90": 380.0, "p99": 398.0}
    assert data["itl_ms"] == {"p50": 200.0, "p90": 280.0, "p99": 298.0}
    assert data["e2e_s"] == {"p50": 1.5, "p90": 1.9, "p99": 1.99}
    assert data["output_tokens"] == {"total": 40, "mean": 20.0, "min": 10, "max": 30}


def test_per_stream_equals_aggregate_over_concurrency_when_no_worker_idles():
    # Two workers, back-to-back requests of 2 s and 100 tokens each, over a 4 s window.
    results = [
        RequestResult(start=s, end=s + 2, first_token=s + 0.1, output_tokens=100, prompt_tokens=5)
        for s in (0.0, 2.0, 0.0, 2.0)
    ]
    level = summarize(2, results, window_s=4.0, cpu_s=0.0)
    assert level.aggregate_tok_s == pytest.approx(100.0)
    assert level.per_stream_tok_s == pytest.approx(level.aggregate_tok_s / 2)


def test_a_level_where_everything_failed_has_no_latencies_and_zero_rates():
    level = summarize(4, [RequestResult(start=0, end=0.01, error="boom")], window_s=0.01, cpu_s=0.0)
    assert (level.requests, level.errors, level.aggregate_tok_s, level.per_stream_tok_s) == (0, 1, 0.0, 0.0)
    assert level.ttft_s is None and level.itl_s is None and level.e2e_s is None
    assert level.client_cpu_us_per_token is None
    assert level.as_dict()["ttft_ms"] is None
