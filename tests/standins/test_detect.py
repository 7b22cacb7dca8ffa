"""`gpuctl verify URL` with nothing else (gpuctl.detect): the engine and the model asked from the server,
against the vLLM and Ollama STAND-INs on loopback (and a bare 401 server standing in for a gateway)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.cli import run_cli

KEY = "sk-detect-0cc175b9c0f1b6a831c399e269772661"


def verify(*args: str, env: dict[str, str] | None = None):
    return run_cli("verify", *args, env=env)


def test_a_bare_vllm_url_is_verified_with_no_flags(start_vllm_standin):
    vllm = start_vllm_standin(["serve", "org/tiny", "--served-model-name", "tiny"])
    result = verify(vllm.base_url, "--json")
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["engines"]
    assert report["engine"] == "vllm" and all(c["ok"] for c in report["checks"])


def test_a_bare_ollama_url_is_verified_with_no_flags(start_ollama_standin):
    ollama = start_ollama_standin()
    result = verify(ollama.base_url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["engines"][0]["engine"] == "ollama"


def test_several_served_models_are_listed_and_one_is_asked_for(start_vllm_standin):
    vllm = start_vllm_standin(["serve", "org/tiny", "--served-model-name", "tiny", "tiny-alias"])
    result = verify(vllm.base_url)
    assert result.exit_code == 2
    assert result.stderr == f"error: {vllm.base_url} serves several models: tiny, tiny-alias: pick one with --model\n"
    assert verify(vllm.base_url, "--model", "tiny-alias").exit_code == 0
    wrong = verify(vllm.base_url, "--model", "llama")
    assert wrong.stderr == f"error: {vllm.base_url} does not serve 'llama'; it serves: tiny, tiny-alias\n"


def test_a_server_wanting_a_key_says_so_and_the_key_makes_it_pass(start_vllm_standin):
    vllm = start_vllm_standin(["serve", "org/tiny", "--served-model-name", "tiny", "--api-key", KEY])
    result = verify(vllm.base_url)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {vllm.base_url}/v1/models answers 401: the server wants a key: pass --api-key-env VAR\n"
    )
    assert verify(vllm.base_url, "--api-key-env", "K", env={"K": KEY}).exit_code == 0


@contextlib.contextmanager
def answering_everywhere(status: int, content_type: str, body: bytes) -> Iterator[str]:
    """A web server on loopback answering every GET with STATUS and BODY; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def gateway_like() -> Iterator[str]:
    """Answers 401 on every route, as a gpuctl gateway does without its key."""
    with answering_everywhere(401, "application/json", b'{"error": {"message": "missing or wrong API key"}}') as url:
        yield url


def test_a_url_answering_401_everywhere_asks_for_the_key(gateway_like):
    result = verify(gateway_like)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {gateway_like} answers 401: it wants a key (a gpuctl gateway?): export it and pass --api-key-env VAR\n"
    )


def test_nothing_listening_is_one_line(tmp_path):
    result = verify("http://127.0.0.1:9")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: http://127.0.0.1:9/api/version: no answer (ConnectionError)")
    assert result.stderr.count("\n") == 1


def test_a_web_server_that_is_no_engine_is_said_to_be_neither(tmp_path):
    with answering_everywhere(200, "text/html", b"<html>hello</html>") as url:  # a web server, no engine
        result = verify(url)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {url} answers neither /version (vLLM) nor /api/version (Ollama): "
        "pass --engine vllm or --engine ollama\n"
    )
