#!/usr/bin/env python3
"""A minimal OpenAI-style streaming server for measuring load generators -- NOT vLLM, benchmarks only.

Answers `POST /v1/chat/completions` with `"stream": true` the way vLLM 0.32 streams: chunked
`text/event-stream`, a role event, one `data:` event per token (each its own HTTP chunk), a usage
event when `stream_options.include_usage` is set, then `data: [DONE]`. It generates nothing: the
events of a reply of N tokens are rendered once, cached, and written in one go per request, so the
server costs a few tens of microseconds per request and the client under test gets the CPU.
Standard library only (asyncio, which sets TCP_NODELAY); HTTP/1.1 keep-alive; 127.0.0.1 by default.

    python benchmarks/fast_stream_server.py --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from functools import lru_cache

HEADERS = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
MAX_BODY = 1 << 20


def chunk(payload: bytes) -> bytes:
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def envelope(choices: list[dict], **extra: object) -> bytes:
    data = {
        "id": "chatcmpl-fast",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fast",
        "choices": choices,
        **extra,
    }
    return json.dumps(data, separators=(",", ":")).encode()


@lru_cache(maxsize=256)
def reply(tokens: int, prompt_tokens: int, usage: bool) -> bytes:
    """The whole response body of a streamed reply of TOKENS tokens."""
    parts = [
        HEADERS,
        chunk(
            envelope(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
            )
        ),
    ]
    for i in range(tokens):
        finish = "length" if i == tokens - 1 else None
        parts.append(
            chunk(
                envelope(
                    [
                        {
                            "index": 0,
                            "delta": {"content": f" w{i % 100}"},
                            "logprobs": None,
                            "finish_reason": finish,
                            "token_ids": None,
                        }
                    ]
                )
            )
        )
    if usage:
        counts = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + tokens, "completion_tokens": tokens}
        parts.append(chunk(envelope([], usage=counts)))
    parts.append(chunk(b"[DONE]"))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def simple(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path = lines[0].split(b" ")[:2]
            length = 0
            for line in lines[1:]:
                if line[:15].lower() == b"content-length:":
                    length = min(int(line[15:]), MAX_BODY)
            body = await reader.readexactly(length) if length else b""
            if method == b"GET" and path == b"/health":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            elif method == b"POST" and path == b"/v1/chat/completions":
                request = json.loads(body)
                tokens = int(request.get("max_tokens") or 16)
                prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", [])) + 6
                usage = bool((request.get("stream_options") or {}).get("include_usage"))
                writer.write(reply(tokens, prompt, usage))
            else:
                writer.write(simple("404 Not Found", b'{"detail":"Not Found"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fast stream server on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
