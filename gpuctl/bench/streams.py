"""Cheap parsers for streamed completions: OpenAI SSE (vLLM, Ollama's /v1 shim) and Ollama's NDJSON.

A parser is fed the raw bytes of each network read with the read's timestamp. Events that carry
generated text are recognised by a byte search (no JSON decoding per token); only the events that
hold the usage figures, the final Ollama line or an error are decoded. Token counts come from the
server's usage figures, never from counting events.
"""

from __future__ import annotations

import json
import re

from gpuctl.bench.stats import RequestResult

# A delta with a non-empty text field: "content", "reasoning" or "reasoning_content" (vLLM, Ollama /v1).
_TEXT_DELTA = re.compile(rb'"(?:content|reasoning|reasoning_content)":\s*"[^"]')
_ERROR_KEY = b'"error":'  # a key: inside a JSON string a quote is escaped, so this never matches text
_USAGE_KEY = b'"usage":'


class StreamParser:
    """Base: splits reads into lines, times text events, and checks the stream ended properly."""

    def __init__(self, result: RequestResult) -> None:
        self.result = result
        self.tail = b""
        self.done = False
        self.last = 0.0

    def feed(self, data: bytes, now: float) -> None:
        lines = (self.tail + data if self.tail else data).split(b"\n")
        self.tail = lines.pop()
        for line in lines:
            if line and not self.done:
                self.line(line, now)

    def line(self, line: bytes, now: float) -> None:
        raise NotImplementedError

    def token_event(self, now: float) -> None:
        r = self.result
        if r.first_token is None:
            r.first_token = now
        else:
            r.gaps.append(now - self.last)
        self.last = now
        r.events += 1

    def fail(self, message: str) -> None:
        if self.result.error is None:
            self.result.error = message
        self.done = True

    def finish(self) -> None:
        """Called when the body ended: a stream without its end or its usage figures is an error."""
        if self.tail.strip() and not self.done:
            self.feed(b"\n", self.last)
        if self.result.error is None and not self.done:
            self.fail("the stream ended before its last event")


class OpenAIStream(StreamParser):
    """`data: {...}` events of /v1/chat/completions with stream_options.include_usage, then `data: [DONE]`."""

    def line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data:"):
            return  # blank separators, comments, `event:` lines
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            if self.result.output_tokens is None and self.result.error is None:
                self.fail("no usage figures in the stream (the server ignored stream_options.include_usage)")
            return
        if _TEXT_DELTA.search(payload):
            self.token_event(now)
        if _ERROR_KEY in payload:
            self.error(payload)
        elif _USAGE_KEY in payload:
            usage = json.loads(payload).get("usage")
            if isinstance(usage, dict):
                self.result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                self.result.output_tokens = int(usage.get("completion_tokens") or 0)

    def error(self, payload: bytes) -> None:
        try:
            error = json.loads(payload).get("error")
        except ValueError:
            error = None
        if error is None:
            return
        message = error.get("message") if isinstance(error, dict) else error
        self.fail(f"error event: {short(str(message))}")


class OllamaStream(StreamParser):
    """Ollama's /api/chat NDJSON: `{"message": …, "done": false}` per token, then the final line with
    `eval_count` (output tokens) and `prompt_eval_count`, or `{"error": …}`."""

    def line(self, line: bytes, now: float) -> None:
        if b'"done":false' in line and _ERROR_KEY not in line:
            self.token_event(now)
            return
        try:
            data = json.loads(line)
        except ValueError:
            self.fail(f"not NDJSON: {short(line.decode(errors='replace'))}")
            return
        if "error" in data:
            self.fail(f"error line: {short(str(data['error']))}")
        elif data.get("done"):
            self.done = True
            if (data.get("message") or {}).get("content"):
                self.token_event(now)
            if not isinstance(data.get("eval_count"), int):
                self.fail("the final line has no eval_count")
                return
            self.result.output_tokens = data["eval_count"]
            self.result.prompt_tokens = int(data.get("prompt_eval_count") or 0)
        elif (data.get("message") or {}).get("content") or (data.get("message") or {}).get("thinking"):
            self.token_event(now)


def short(text: str, limit: int = 160) -> str:
    """One line of at most LIMIT characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
