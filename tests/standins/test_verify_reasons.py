"""What `verify` SAYS, not only whether a check passed: each reason text of the vLLM (openai_api.py)
and Ollama (ollama_api.py) checks, and of run_check's network branch (checks.py), made to happen for
real and read word for word.

The engines are the STAND-INS (harness/vllm_standin.py, harness/ollama_standin.py: real HTTP servers on
127.0.0.1), driven into each state with their own knobs (fault modes, delays, keep-alive, an unpulled
model) or by pointing a checker at the wrong kind of engine. Where no stand-in can give the bad answer,
a test says so and uses a small PURPOSE-BUILT server (`canned_server`) that answers exactly that.

Reasons already read elsewhere are not repeated here: tests/unit/test_verify_messages.py (nothing
answers, cannot resolve, closed the connection), tests/standins/test_verify_ollama.py and
tests/engine/test_verify_vllm.py (wrong version, model not served/pulled, keep-alive that did not reach
the server, key not enforced, engine not generating with /health 200), tests/deploy/ (auth passes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import requests

from gpuctl.verify.checks import Check, run_check
from gpuctl.verify.ollama_api import OllamaChecker, OllamaExpectations
from gpuctl.verify.openai_api import VllmChecker, VllmExpectations, parse_metrics
from harness import local_http

MODEL = "qwen2.5:0.5b"
NUMBER = r"\d+(?:\.\d+)?"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def vllm(server, **overrides) -> VllmChecker:
    """A checker for the shared vLLM stand-in (served name `tiny`, key `secret`, max_model_len 1024)."""
    values = {"base_url": server.base_url, "model": "tiny", "api_key": "secret", "max_model_len": 1024}
    values.update(overrides)
    return VllmChecker(VllmExpectations(**values))


def ollama(server, **overrides) -> OllamaChecker:
    values = {"base_url": server.base_url, "models": [MODEL], "keep_alive": "5m"}
    values.update(overrides)
    return OllamaChecker(OllamaExpectations(**values))


def pull(server, model: str = MODEL) -> None:
    response = requests.post(f"{server.base_url}/api/pull", json={"model": model, "stream": False}, timeout=10)
    assert response.status_code == 200, response.text


@contextlib.contextmanager
def canned_server(routes: dict[tuple[str, str], tuple[int, str, bytes]]) -> Iterator[str]:
    """A PURPOSE-BUILT HTTP server on 127.0.0.1 (not a stand-in): (METHOD, PATH) -> (status, content type,
    body); anything else is a 404. Shut down when the block ends."""
    with local_http.serve(
        lambda method, path, _headers: routes.get((method, path), (404, "application/json", b'{"error":"no route"}'))
    ) as url:
        yield url


def json_bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


# ---------------------------------------------------------------------------------------------- vLLM


def test_vllm_healthy_server_says_what_it_saw(vllm_shared, vllm_module):
    checks = by_name(vllm(vllm_shared).run())
    assert checks["health"].reason == "GET /health answered 200"
    assert checks["version"].reason == "vLLM 0.32.0 (no pinned version to compare)"
    assert checks["models"].reason == "tiny listed (max_model_len 1024)"
    # 16 tokens of the stand-in's fixed text: "The quick brown fox ... answers every prompt".
    assert len("".join(vllm_module.word_at(i) for i in range(16)).strip()) == 84
    assert checks["chat"].reason == "84 characters, usage counted"
    stream = checks["stream"]
    assert re.fullmatch(rf"TTFT {NUMBER} ms, {NUMBER} tokens/s", stream.reason), stream.reason
    assert stream.reason == f"TTFT {stream.numbers['ttft_ms']} ms, {stream.numbers['tokens_per_s']} tokens/s"
    assert checks["metrics"].reason == "engine gauges present"
    assert all(c.ok for c in checks.values()), {n: c.reason for n, c in checks.items() if not c.ok}


def test_vllm_single_token_stream_gives_ttft_without_a_rate(vllm_shared):
    check = run_check("stream", vllm(vllm_shared, max_tokens=1).stream)
    assert check.ok and check.numbers["tokens"] == 1
    assert re.fullmatch(rf"TTFT {NUMBER} ms", check.reason), check.reason
    assert check.reason == f"TTFT {check.numbers['ttft_ms']} ms"


def test_vllm_wrong_key_shows_the_status_and_the_body(vllm_shared):
    checks = by_name(vllm(vllm_shared, api_key="not-the-key").run())
    assert (checks["models"].ok, checks["models"].reason) == (
        False,
        'GET /v1/models answered 401: {"error":"Unauthorized"}',
    )


def test_vllm_unknown_model_chat_and_stream_show_the_status(vllm_shared):
    checks = by_name(vllm(vllm_shared, model="nope").run())
    assert checks["chat"].reason == (
        'POST /v1/chat/completions answered 404: {"error":{"message":"The model `nope` '
        'does not exist. Valid aliases: tiny.","type":"NotFoundError","param":"model",'
        '"code":404}}'
    )
    assert (checks["stream"].ok, checks["stream"].reason) == (False, "streamed chat answered 404")


def test_vllm_dead_engine_core_shows_503_and_500(start_vllm_standin):
    server = start_vllm_standin(env={"VLLM_STANDIN_FAULT": "dead"}, wait=False)
    deadline = time.monotonic() + 15
    for _ in range(300):  # /health says 503 while dead: wait for any answer, bounded
        with contextlib.suppress(requests.RequestException):
            if requests.get(server.base_url + "/health", timeout=0.5).status_code == 503:
                break
        assert time.monotonic() < deadline and server.alive(), server.log_text()
        time.sleep(0.05)
    checks = by_name(VllmChecker(VllmExpectations(server.base_url, "tiny")).run())
    assert (checks["health"].ok, checks["health"].reason) == (False, "GET /health answered 503")
    assert checks["chat"].reason == (
        'POST /v1/chat/completions answered 500: {"error":{"message":"EngineCore '
        'encountered an issue. See stack trace (above) for the root cause.","type":'
        '"InternalServerError","param":null,"code":500}}'
    )
    assert (checks["stream"].ok, checks["stream"].reason) == (False, "streamed chat answered 500")


def test_vllm_stream_whose_engine_dies_before_the_first_token(start_vllm_standin):
    """The stream's 200 headers are out, the engine hangs, then dies: the SSE stream carries only an
    error event and [DONE]."""
    server = start_vllm_standin()
    assert requests.post(server.base_url + "/standin/fault", json={"mode": "hang"}, timeout=5).status_code == 200
    checker = VllmChecker(VllmExpectations(server.base_url, "tiny", generation_timeout_s=10))
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_check, "stream", checker.stream)
        deadline = time.monotonic() + 5
        for _ in range(100):  # until the streamed request is inside the (hung) engine
            running = parse_metrics(requests.get(server.base_url + "/metrics", timeout=2).text)
            if running.get("vllm:num_requests_running") == 1 or future.done() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert running.get("vllm:num_requests_running") == 1, running
        requests.post(server.base_url + "/standin/fault", json={"mode": "dead"}, timeout=5)
        check = future.result(timeout=15)
    assert (check.ok, check.reason) == (False, "the stream ended without any content")


def test_vllm_frozen_server_health_did_not_answer(start_vllm_standin):
    """The whole API server frozen (SIGSTOP): no token, and /health does not answer within its 5 s."""
    server = start_vllm_standin()
    checker = VllmChecker(VllmExpectations(server.base_url, "tiny", request_timeout_s=1, generation_timeout_s=1))
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        check = run_check("chat", checker.chat)
        assert time.monotonic() - started < 20
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert (check.ok, check.reason) == (
        False,
        "engine not generating: no token within 1 s (GET /health did not answer)",
    )


def test_vllm_checker_pointed_at_an_ollama_port(ollama_shared):
    """A wrong port (Ollama's): /health and /metrics do not exist there."""
    checks = by_name(VllmChecker(VllmExpectations(ollama_shared.base_url, MODEL, max_tokens=4)).run())
    assert (checks["health"].ok, checks["health"].reason) == (False, "GET /health answered 404")
    assert (checks["metrics"].ok, checks["metrics"].reason) == (False, "GET /metrics answered 404")


def test_vllm_metrics_without_the_engine_gauges():
    """PURPOSE-BUILT server: no stand-in serves /metrics without vLLM's gauges. This one answers like an
    older exporter with the request gauges only (no generation counter, no KV-cache gauge)."""
    text = b"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"
    with canned_server({("GET", "/metrics"): (200, "text/plain; version=0.0.4", text)}) as url:
        check = run_check("metrics", VllmChecker(VllmExpectations(url, "tiny")).metrics)
    assert (check.ok, check.reason) == (False, "/metrics lacks vllm:generation_tokens_total, vllm:kv_cache_usage_perc")


# -------------------------------------------------------------------------------------------- Ollama


def test_ollama_healthy_server_says_what_it_saw(ollama_shared):
    checks = by_name(ollama(ollama_shared).run())
    assert all(c.ok for c in checks.values()), {n: c.reason for n, c in checks.items() if not c.ok}
    assert checks["version"].reason == "Ollama 0.12.6"
    assert checks["models"].reason == "1 model(s) present"
    chat = checks["chat"]
    assert re.fullmatch(rf"TTFT {NUMBER} ms, 16 tokens", chat.reason), chat.reason
    assert chat.reason == f"TTFT {chat.numbers['ttft_ms']} ms, 16 tokens"
    assert checks["openai"].reason == f"/v1 answers as {MODEL}"
    keep = checks["keep_alive"]
    assert re.fullmatch(r"expires in \d+ s \(spec keep-alive 5m\)", keep.reason), keep.reason
    assert keep.reason == f"expires in {keep.numbers['expires_in_s']} s (spec keep-alive 5m)"
    assert abs(keep.numbers["expires_in_s"] - 300) <= 30


def test_ollama_pinned_version_that_matches(ollama_shared):
    check = run_check("version", ollama(ollama_shared, version="0.12.6").version)
    assert (check.ok, check.reason) == (True, "Ollama 0.12.6")


def test_ollama_spec_without_models_or_keep_alive(ollama_shared):
    checks = by_name(ollama(ollama_shared, models=[], keep_alive=None).run())
    assert list(checks) == ["version", "models", "chat"]
    assert (checks["models"].ok, checks["models"].reason) == (True, "0 model(s) present")
    assert (checks["chat"].ok, checks["chat"].reason) == (True, "no model in the spec: generation not checked")
    check = run_check("keep_alive", ollama(ollama_shared, keep_alive=None).keep_alive)
    assert (check.ok, check.reason) == (True, "no keep-alive in the spec: not checked")


def test_ollama_server_with_nothing_pulled(start_ollama_standin):
    server = start_ollama_standin()
    checks = by_name(ollama(server).run())
    assert (checks["models"].ok, checks["models"].reason) == (False, f"not pulled: {MODEL} (the server has none)")
    assert checks["chat"].reason == f'POST /api/chat answered 404: {{"error":"model \'{MODEL}\' not found"}}'
    assert checks["openai"].reason == (
        f'POST /v1/chat/completions answered 404: {{"error":{{"message":"model '
        f'\'{MODEL}\' not found","type":"not_found_error","param":null,"code":null}}}}'
    )


def test_ollama_generation_of_zero_tokens_is_no_content(ollama_shared):
    """num_predict 0 / max_tokens 0: the server answers 200 with a final line (or a message) and no text."""
    checks = by_name(ollama(ollama_shared, max_tokens=0).run())
    assert (checks["chat"].ok, checks["chat"].reason) == (
        False,
        "the NDJSON stream ended without content or without its final line",
    )
    assert (checks["openai"].ok, checks["openai"].reason) == (False, "empty content from /v1")


def test_ollama_keep_alive_zero_still_loaded(ollama_shared):
    """The server keeps models 5 minutes (its default); the spec says unload at once."""
    checks = by_name(ollama(ollama_shared, keep_alive="0").run())
    assert (checks["keep_alive"].ok, checks["keep_alive"].reason) == (False, "still loaded with keep-alive 0")


def test_ollama_keep_alive_zero_on_the_server(start_ollama_standin):
    server = start_ollama_standin(env={"OLLAMA_KEEP_ALIVE": "0"})
    pull(server)
    unloaded = by_name(ollama(server, keep_alive="0").run())["keep_alive"]
    assert (unloaded.ok, unloaded.reason) == (True, "unloaded right after use (keep-alive 0)")
    wanted_30m = by_name(ollama(server, keep_alive="30m").run())["keep_alive"]
    assert (wanted_30m.ok, wanted_30m.reason) == (False, f"{MODEL} is not loaded right after a chat (keep-alive 30m)")


def test_ollama_keep_alive_forever(start_ollama_standin):
    """Negative keep-alive: Ollama shows an expiry at Go's largest duration (~292 years): "never expires"."""
    server = start_ollama_standin(env={"OLLAMA_KEEP_ALIVE": "-1"})
    pull(server)
    check = by_name(ollama(server, keep_alive="-1").run())["keep_alive"]
    assert check.ok
    assert check.reason == "never expires (spec keep-alive -1)"
    assert check.numbers["expires_in_s"] > 100 * 365 * 24 * 3600


def test_ollama_no_first_token_in_time(start_ollama_standin):
    """The stand-in takes 3 s to its first token; the check gives it 0.5 s."""
    server = start_ollama_standin(env={"OLLAMA_STANDIN_TTFT": "3"}, fast=False)
    pull(server)
    started = time.monotonic()
    check = run_check("chat", ollama(server, generation_timeout_s=0.5).chat)
    assert time.monotonic() - started < 3
    assert (check.ok, check.reason) == (False, "engine not generating: no token within 0.5 s")


def test_ollama_error_inside_the_stream():
    """PURPOSE-BUILT server: the Ollama stand-in never fails mid-stream. Real Ollama does, when its model
    runner dies during a generation: a 200 NDJSON stream whose last line is {"error": ...}."""
    error = "an error was encountered while running the model: unexpected EOF"
    lines = [{"model": MODEL, "message": {"role": "assistant", "content": "The"}, "done": False}, {"error": error}]
    routes = {
        ("GET", "/api/version"): (200, "application/json", json_bytes({"version": "0.12.6"})),
        ("GET", "/api/tags"): (200, "application/json", json_bytes({"models": [{"name": MODEL}]})),
        ("POST", "/api/chat"): (200, "application/x-ndjson", b"".join(json_bytes(line) + b"\n" for line in lines)),
    }
    with canned_server(routes) as url:
        checks = by_name(OllamaChecker(OllamaExpectations(url, models=[MODEL])).run())
    assert (checks["chat"].ok, checks["chat"].reason) == (False, f"Ollama error: {error}")


# ---------------------------------------------------------------------------------- checks.py branch


def test_a_url_that_cannot_be_parsed_says_so_with_the_url():
    """Port out of range (a typo): no connection is ever tried."""
    checks = by_name(OllamaChecker(OllamaExpectations("http://127.0.0.1:99999")).run())
    assert list(checks) == ["version"], "an unusable URL is said once, not by every check"
    assert (checks["version"].ok, checks["version"].reason) == (
        False,
        "the URL cannot be used: Failed to parse: http://127.0.0.1:99999/api/version",
    )


# ------------------------------------------------------- answers of the wrong kind, said in words


HTML = b"<html><body>502 Bad Gateway</body></html>"


def test_an_answer_that_is_not_json_is_named_with_its_start():
    """PURPOSE-BUILT server: a proxy's HTML page where the API's JSON should be."""
    with canned_server(
        {("GET", "/version"): (200, "text/html", HTML), ("GET", "/api/version"): (200, "text/html", HTML)}
    ) as url:
        vllm_version = run_check("version", VllmChecker(VllmExpectations(url, "tiny")).version)
        ollama_version = run_check("version", OllamaChecker(OllamaExpectations(url)).version)
    expected = "answered with something that is not JSON: '<html><body>502 Bad Gateway</body></html>'"
    assert (vllm_version.ok, vllm_version.reason) == (False, expected)
    assert (ollama_version.ok, ollama_version.reason) == (False, expected)


def test_version_that_does_not_answer_200_or_lacks_a_version_says_so():
    """PURPOSE-BUILT server: a 502 from /version (never "vLLM None"), and JSON without a version."""
    routes = {
        ("GET", "/version"): (502, "text/plain", b"bad gateway"),
        ("GET", "/api/version"): (200, "application/json", b"{}"),
    }
    with canned_server(routes) as url:
        vllm_version = run_check("version", VllmChecker(VllmExpectations(url, "tiny", version="0.32.0")).version)
        ollama_version = run_check("version", OllamaChecker(OllamaExpectations(url)).version)
    assert (vllm_version.ok, vllm_version.reason) == (False, "GET /version answered 502: bad gateway")
    assert (ollama_version.ok, ollama_version.reason) == (
        False,
        "GET /api/version answered without a version: is this Ollama?",
    )


def test_json_of_the_wrong_shape_is_a_failed_check_not_a_crash():
    """PURPOSE-BUILT server: a 200 chat answer of {} (no choices)."""
    with canned_server({("POST", "/v1/chat/completions"): (200, "application/json", b"{}")}) as url:
        check = run_check("chat", VllmChecker(VllmExpectations(url, "tiny")).chat)
    assert (check.ok, check.reason) == (
        False,
        "unexpected answer: a field the API promises is missing or of the wrong type (KeyError('choices'))",
    )


def test_a_reply_without_content_names_its_finish_reason():
    """PURPOSE-BUILT server: what a reasoning model returns when max_tokens ends inside its reasoning."""
    reply = {
        "choices": [
            {
                "message": {"role": "assistant", "content": None, "reasoning_content": "Let me"},
                "finish_reason": "length",
            }
        ],
        "usage": {"completion_tokens": 16, "prompt_tokens": 9},
    }
    with canned_server({("POST", "/v1/chat/completions"): (200, "application/json", json_bytes(reply))}) as url:
        check = run_check("chat", VllmChecker(VllmExpectations(url, "tiny")).chat)
    assert (check.ok, check.reason) == (False, "the reply has no content (finish_reason length, 16 completion tokens)")


def test_models_without_max_model_len_pass_and_say_it_is_missing(ollama_shared):
    """Ollama's /v1/models has no max_model_len: when the spec asks for none, the check says what it saw."""
    pull(ollama_shared)
    check = run_check("models", VllmChecker(VllmExpectations(ollama_shared.base_url, MODEL)).models)
    assert (check.ok, check.reason) == (True, f"{MODEL} listed (the server gives no max_model_len)")


def test_a_read_timeout_names_the_address_and_the_limit():
    """A listening socket that never answers (accepts, reads nothing back): a read timeout."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        check = run_check(
            "version", OllamaChecker(OllamaExpectations(f"http://127.0.0.1:{port}", request_timeout_s=0.5)).version
        )
    assert (check.ok, check.reason) == (False, f"127.0.0.1:{port} did not answer within 0.5 s (read timeout)")


def test_https_against_a_plain_http_engine_is_a_tls_failure_not_nothing_answers(ollama_shared):
    url = ollama_shared.base_url.replace("http://", "https://")
    check = run_check("version", OllamaChecker(OllamaExpectations(url)).version)
    where = url.removeprefix("https://")
    assert not check.ok
    assert check.reason.startswith(f"TLS with {where} failed ([SSL")
    assert check.reason.endswith("): does it serve https, and is its certificate from the CA given?")
    assert "SSLError(" not in check.reason and "_ssl.c" not in check.reason


def test_vllm_stream_that_stalls_after_its_first_tokens(start_vllm_standin):
    """Tokens flow, then the engine hangs: said as a stall after N tokens, not as "nothing answers"."""
    server = start_vllm_standin(env={"VLLM_STANDIN_TOKEN_DELAY": "0.3"}, fast=False)
    checker = VllmChecker(VllmExpectations(server.base_url, "tiny", generation_timeout_s=1.5, max_tokens=16))
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_check, "stream", checker.stream)
        deadline = time.monotonic() + 10
        for _ in range(200):  # until the first tokens went out
            generated = parse_metrics(requests.get(server.base_url + "/metrics", timeout=2).text)
            if generated.get("vllm:generation_tokens_total", 0) >= 1 or future.done() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        requests.post(server.base_url + "/standin/fault", json={"mode": "hang"}, timeout=5)
        check = future.result(timeout=30)
    assert not check.ok
    assert re.fullmatch(r"the stream stalled after \d+ token\(s\): nothing more within 1.5 s", check.reason), (
        check.reason
    )
    requests.post(server.base_url + "/standin/fault", json={"mode": "ok"}, timeout=5)
