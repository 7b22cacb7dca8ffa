"""Both stand-ins treat an unread request body as the real servers do (Go's net/http for Ollama,
uvicorn/h11 for vLLM): it is discarded after the handler, never read as the next request on a
kept-alive connection. Behind nginx with upstream keep-alive, a body left unread would otherwise be
parsed as a request the gateway never saw (a request smuggled past its key check).

Raw sockets on 127.0.0.1: two pipelined requests, the first carrying a body its route ignores that
looks like a request; the second answer must be the second request's.
"""

from __future__ import annotations

import json
import socket

import pytest

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def two_answers(port: int, first: str, second: str) -> list[tuple[int, bytes]]:
    request = (f"{first} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(SMUGGLED)}\r\n\r\n").encode() + SMUGGLED
    request += f"{second} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as answer:
        sock.sendall(request)
        return [read_response(answer) for _ in range(2)]


def read_response(answer) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body, from a reader shared by both responses."""
    status = int(answer.readline().split()[1])
    length = 0
    for _ in range(100):
        line = answer.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, answer.read(length)


@pytest.mark.parametrize("first", ["GET /api/version", "POST /api/no-such-route", "DELETE /api/version"])
def test_ollama_standin_discards_a_body_its_route_did_not_read(ollama_shared, first):
    port = int(ollama_shared.base_url.rsplit(":", 1)[1])
    answers = two_answers(port, first, "GET /api/version")
    assert answers[1][0] == 200 and "version" in json.loads(answers[1][1]), answers


@pytest.mark.parametrize("first", ["GET /health", "POST /no/such/route", "GET /version"])
def test_vllm_standin_discards_a_body_its_route_did_not_read(vllm_shared, first):
    port = int(vllm_shared.base_url.rsplit(":", 1)[1])
    answers = two_answers(port, first, "GET /version")
    assert answers[1][0] == 200 and "version" in json.loads(answers[1][1]), answers
