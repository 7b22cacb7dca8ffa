"""Stream parsers on bodies shaped like vLLM 0.32's SSE and Ollama's NDJSON, fed whole or in small reads."""

from __future__ import annotations

import json

import pytest

from gpuctl.bench.stats import RequestResult
from gpuctl.bench.streams import OllamaStream, OpenAIStream


def sse(*events: object) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, bytes) else json.dumps(e, separators=(",", ":")).encode()) + b"\n\n"
        for e in events
    )


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


ROLE = chunk({"role": "assistant", "content": ""})
USAGE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 181, "total_tokens": 184, "completion_tokens": 3},
}


def feed(parser, pieces: list[tuple[bytes, float]]) -> RequestResult:
    for data, now in pieces:
        parser.feed(data, now)
    parser.finish()
    return parser.result


def test_openai_stream_times_text_events_and_takes_counts_from_usage():
    result = feed(
        OpenAIStream(RequestResult(start=0.0)),
        [
            (sse(ROLE), 0.10),  # the role chunk carries no text: not the first token
            (sse(chunk({"content": "Hello"})), 0.15),
            (sse(chunk({"content": " world"})), 0.18),
            (sse(chunk({"content": '"'}), chunk({"content": "!"}, "length")), 0.25),  # two events in one read
            (sse(USAGE, b"[DONE]"), 0.26),
        ],
    )
    assert result.ok, result.error
    assert result.ttft == pytest.approx(0.15)
    assert result.gaps == pytest.approx([0.03, 0.07, 0.0])
    assert result.events == 4
    assert (result.prompt_tokens, result.output_tokens) == (181, 3)


def test_openai_stream_split_at_any_byte_gives_the_same_counts():
    body = sse(
        ROLE, chunk({"content": "a"}), chunk({"reasoning": "think"}), chunk({"content": "b"}, "stop"), USAGE, b"[DONE]"
    )
    for size in (1, 2, 7, 64, len(body)):
        pieces = [(body[i : i + size], float(i)) for i in range(0, len(body), size)]
        result = feed(OpenAIStream(RequestResult(start=0.0)), pieces)
        assert result.ok and result.events == 3 and result.output_tokens == 3, size


def test_openai_stream_errors():
    no_usage = feed(OpenAIStream(RequestResult(start=0.0)), [(sse(ROLE, chunk({"content": "a"}), b"[DONE]"), 0.1)])
    assert no_usage.error == "no usage figures in the stream (the server ignored stream_options.include_usage)"
    cut = feed(OpenAIStream(RequestResult(start=0.0)), [(sse(ROLE, chunk({"content": "a"})), 0.1)])
    assert cut.error == "the stream ended before its last event"
    failed = feed(
        OpenAIStream(RequestResult(start=0.0)),
        [
            (
                sse(
                    {
                        "error": {
                            "message": "EngineCore encountered an issue.",
                            "type": "InternalServerError",
                            "code": 500,
                        }
                    },
                    b"[DONE]",
                ),
                0.1,
            )
        ],
    )
    assert failed.error == "error event: EngineCore encountered an issue."
    # The word "error" as generated text is a token, not an error.
    text = feed(OpenAIStream(RequestResult(start=0.0)), [(sse(chunk({"content": "error"}), USAGE, b"[DONE]"), 0.1)])
    assert text.ok and text.events == 1


def ndjson(*lines: dict) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)


def token(text: str) -> dict:
    return {
        "model": "llama3.1:8b",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": False,
    }


FINAL = {
    "model": "llama3.1:8b",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "length",
    "total_duration": 1,
    "prompt_eval_count": 26,
    "eval_count": 3,
    "eval_duration": 1,
}


def test_ollama_stream_times_each_line_and_takes_eval_counts():
    result = feed(
        OllamaStream(RequestResult(start=1.0)),
        [
            (ndjson(token("The")), 1.2),
            (ndjson(token(" quick"))[:20], 1.3),
            (ndjson(token(" quick"))[20:], 1.35),
            (ndjson(token(" brown"), FINAL), 1.5),
        ],
    )
    assert result.ok, result.error
    assert result.ttft == pytest.approx(0.2)
    assert result.gaps == pytest.approx([0.15, 0.15])
    assert (result.events, result.prompt_tokens, result.output_tokens) == (3, 26, 3)


def test_ollama_stream_errors():
    failed = feed(OllamaStream(RequestResult(start=0.0)), [(ndjson({"error": "model 'x' not found"}), 0.1)])
    assert failed.error == "error line: model 'x' not found"
    cut = feed(OllamaStream(RequestResult(start=0.0)), [(ndjson(token("a")), 0.1)])
    assert cut.error == "the stream ended before its last event"
    missing = {k: v for k, v in FINAL.items() if k != "eval_count"}
    for final in (missing, {**FINAL, "eval_count": None}):
        assert (
            feed(OllamaStream(RequestResult(start=0.0)), [(ndjson(final), 0.1)]).error
            == "the final line has no eval_count"
        )
    garbage = feed(OllamaStream(RequestResult(start=0.0)), [(b"<html>502 Bad Gateway</html>\n", 0.1)])
    assert garbage.error == "not NDJSON: <html>502 Bad Gateway</html>"
