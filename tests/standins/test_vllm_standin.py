"""Tests of the vLLM STAND-IN (tests/harness/vllm_standin.py): CLI, routes, metrics, faults.

``data/vllm_0.32.0_real.json`` holds response shapes recorded from the real vLLM 0.32.0 (the
CPU build, tiny local model): the stand-in must answer the same requests with the same status
codes, content types, JSON key sets and SSE event sequence.
"""

from __future__ import annotations

import ast
import json
import re
import socket
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from harness.standin_common import VLLM_STANDIN, Standin, free_port, run_cli

TIMEOUT = 10
AUTH = {"Authorization": "Bearer secret"}
GOLDEN = json.loads((Path(__file__).parent / "data" / "vllm_0.32.0_real.json").read_text())
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}

# The flags gpuctl renders (gpuctl/spec.py VllmSpec.command_args), both boolean spellings.
GPUCTL_ARGS = [
    "org/Model-8B",
    "--served-model-name",
    "m",
    "--host",
    "0.0.0.0",
    "--port",
    "8000",
    "--gpu-memory-utilization",
    "0.9",
    "--kv-cache-dtype",
    "fp8",
    "--tensor-parallel-size",
    "2",
    "--max-model-len",
    "8192",
    "--max-num-seqs",
    "64",
    "--dtype",
    "bfloat16",
    "--quantization",
    "awq",
    "--enable-chunked-prefill",
    "--no-enable-prefix-caching",
]


def sse_events(resp: requests.Response) -> list[str]:
    """``data:`` payloads of an SSE body in order (events are separated by blank lines)."""
    blocks = [b for b in resp.text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [b[len("data: ") :] for b in blocks]


def shape(value: Any) -> Any:
    """JSON value reduced to its shape (same reduction as the golden file)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def body_shape(text: str) -> Any:
    """Shape of a JSON body, or the list of shapes of an SSE body."""
    text = text.strip()
    if text.startswith("data:"):
        return [
            e if e == "[DONE]" else shape(json.loads(e))
            for e in (b[6:] for b in text.split("\n\n") if b.startswith("data:"))
        ]
    try:
        return shape(json.loads(text))
    except ValueError:
        return text


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample in a Prometheus exposition (labels matched as a subset)."""
    for line in text.splitlines():
        m = re.match(r"^([^{\s]+)(?:\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    raise AssertionError(f"{name} {labels} not in metrics")


# --- command line --------------------------------------------------------------------------------


def test_help_exits_zero() -> None:
    result = run_cli(VLLM_STANDIN, ["serve", "--help"])
    assert result.returncode == 0
    assert result.stdout.startswith("usage: vllm serve [model_tag] [options]")
    assert "--max-model-len" in result.stdout and "STAND-IN" in result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "m", "--swap-space", "4"], "unrecognized arguments: --swap-space 4"),
        (["serve", "m", "--disable-log-requests"], "unrecognized arguments: --disable-log-requests"),
        (["serve", "m", "--task", "generate"], "unrecognized arguments: --task generate"),
        (["serve", "m", "--kv-cache-dtype", "fp4"], "argument --kv-cache-dtype: invalid choice: 'fp4'"),
        (["serve", "m", "--port", "http"], "argument --port: invalid int value: 'http'"),
    ],
)
def test_unknown_or_bad_flags_exit_2(argv: list[str], message: str) -> None:
    result = run_cli(VLLM_STANDIN, argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "usage: vllm serve [model_tag] [options]"
    assert lines[-1].startswith(f"vllm serve: error: {message}")


def test_served_model_name_without_model_is_rejected() -> None:
    result = run_cli(VLLM_STANDIN, ["serve", "--served-model-name", "m"])
    assert result.returncode == 1
    assert "`model` should be provided as the first positional argument" in result.stderr


def test_accepts_every_flag_gpuctl_renders(vllm_module: ModuleType) -> None:
    for argv in (
        ["serve", *GPUCTL_ARGS],
        GPUCTL_ARGS,
        ["serve", "--model", *GPUCTL_ARGS],  # the last: deprecated form
        [
            "serve",
            "org/Model-8B",
            "-tp",
            "2",
            "--max_model_len",
            "32k",
            "--no-enable-chunked-prefill",
            "--enable-prefix-caching",
            "--enforce-eager",
            "--trust-remote-code",
            "--download-dir",
            "/d",
            "--generation-config",
            "vllm",
            "--enable-log-requests",
            "--uvicorn-log-level",
            "warning",
            "-O3",
            "--max-num-batched-tokens",
            "8192",
            "--api-key",
            "k",
        ],
    ):
        args = vllm_module.parse_cli(argv)
        assert args.model == "org/Model-8B"
    args = vllm_module.parse_cli(["serve", *GPUCTL_ARGS])
    assert (args.served_model_name, args.kv_cache_dtype, args.tensor_parallel_size) == (["m"], "fp8", 2)
    assert (args.enable_chunked_prefill, args.enable_prefix_caching) == (True, False)
    assert vllm_module.parse_cli(["serve", "x", "--max_model_len", "32k"]).max_model_len == 32000


def test_flag_table_is_the_real_one(vllm_module: ModuleType) -> None:
    options = {o for a in vllm_module.build_parser()._actions for o in a.option_strings}
    assert len(options) > 400  # vLLM 0.32 has ~430 option strings
    assert {"--no-enable-prefix-caching", "-tp", "--device-memory-utilization"} <= options
    assert not {"--swap-space", "--disable-log-requests", "--task"} & options


def test_port_in_use_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli(
            VLLM_STANDIN, ["serve", "m", "--host", "127.0.0.1", "--port", str(port)], {"VLLM_STANDIN_FAST": "1"}
        )
    assert result.returncode == 1 and "Address already in use" in result.stderr


# --- start-up ------------------------------------------------------------------------------------


def test_cold_start_refuses_connections_then_logs_ready(start_vllm_standin) -> None:
    port = free_port()
    standin = start_vllm_standin(
        ["serve", "org/tiny", "--max-model-len", "4096"],
        {"VLLM_STANDIN_STARTUP_DELAY": "0.8", "VLLM_STANDIN_KV_CACHE_TOKENS": "100000"},
        port=port,
        wait=False,
    )
    time.sleep(0.3)
    with pytest.raises(requests.ConnectionError):
        requests.get(standin.base_url + "/health", timeout=1)
    deadline = time.monotonic() + TIMEOUT
    status = None
    while time.monotonic() < deadline and status != 200:
        try:
            status = requests.get(standin.base_url + "/health", timeout=1).status_code
        except requests.ConnectionError:
            time.sleep(0.05)
    assert status == 200
    log = standin.log_text()
    assert f"Starting vLLM server on http://127.0.0.1:{port}" in log
    assert "INFO:     Application startup complete." in log
    kv = re.search(r"KV cache size: ([\d,]+) tokens", log)
    conc = re.search(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x", log)
    assert kv and kv.group(1) == "100,000"
    assert conc and (conc.group(1), conc.group(2)) == ("4,096", "24.41")
    assert log.index("KV cache size") < log.index("Application startup complete.")


# --- simple routes and auth --------------------------------------------------------------------


def test_health_ping_version_are_open(vllm_shared: Standin) -> None:
    base = vllm_shared.base_url
    for method, path in (("GET", "/health"), ("GET", "/ping"), ("POST", "/ping")):
        resp = requests.request(method, base + path, timeout=TIMEOUT)
        assert (resp.status_code, resp.text) == (200, ""), path
    assert requests.get(base + "/version", timeout=TIMEOUT).json() == {"version": "0.32.0"}
    assert requests.get(base + "/metrics", timeout=TIMEOUT).status_code == 200
    assert requests.post(base + "/tokenize", json={"prompt": "a b"}, timeout=TIMEOUT).status_code == 200


def test_v1_routes_need_the_key(vllm_shared: Standin) -> None:
    base = vllm_shared.base_url
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "secret"}):
        resp = requests.get(base + "/v1/models", headers=headers, timeout=TIMEOUT)
        assert (resp.status_code, resp.json()) == (401, {"error": "Unauthorized"})
    chat = requests.post(base + "/v1/chat/completions", json=CHAT, timeout=TIMEOUT)
    assert chat.status_code == 401
    ok = requests.get(base + "/v1/models", headers={"Authorization": "bearer secret"}, timeout=TIMEOUT)
    assert ok.status_code == 200


def test_api_key_from_environment(start_vllm_standin) -> None:
    standin = start_vllm_standin(env={"VLLM_API_KEY": "from-env"})
    base = standin.base_url
    assert requests.get(base + "/v1/models", timeout=TIMEOUT).status_code == 401
    assert (
        requests.get(base + "/v1/models", headers={"Authorization": "Bearer from-env"}, timeout=TIMEOUT).status_code
        == 200
    )
    assert "'api_key'" not in standin.log_text() and "from-env" not in standin.log_text()


def test_models_card(vllm_shared: Standin) -> None:
    body = requests.get(vllm_shared.base_url + "/v1/models", headers=AUTH, timeout=TIMEOUT).json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert (card["id"], card["object"], card["owned_by"], card["root"], card["parent"]) == (
        "tiny",
        "model",
        "vllm",
        "org/tiny",
        None,
    )
    assert card["max_model_len"] == 1024
    assert card["permission"][0]["object"] == "model_permission"


# --- generation ----------------------------------------------------------------------------------


def test_chat_completion_with_usage(vllm_shared: Standin) -> None:
    resp = requests.post(
        vllm_shared.base_url + "/v1/chat/completions", headers=AUTH, json={**CHAT, "max_tokens": 5}, timeout=TIMEOUT
    )
    body = resp.json()
    assert resp.status_code == 200 and body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["content"] == "The quick brown fox jumps"
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5
    assert body["system_fingerprint"].startswith("vllm-0.32.0-")


def test_chat_without_max_tokens_stops(vllm_shared: Standin) -> None:
    body = requests.post(
        vllm_shared.base_url + "/v1/chat/completions",
        headers=AUTH,
        json={"messages": CHAT["messages"]},
        timeout=TIMEOUT,
    ).json()
    assert body["model"] == "tiny"  # no model: the first served name
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 24


def test_chat_stream_line_by_line(vllm_shared: Standin) -> None:
    resp = requests.post(
        vllm_shared.base_url + "/v1/chat/completions",
        headers=AUTH,
        json={**CHAT, "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}},
        timeout=TIMEOUT,
    )
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    role, *tokens, usage = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [t["choices"][0]["delta"]["content"] for t in tokens] == ["The", " quick", " brown"]
    assert [t["choices"][0]["finish_reason"] for t in tokens] == [None, None, "length"]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 3


def test_completions_plain_and_streamed(vllm_shared: Standin) -> None:
    url = vllm_shared.base_url + "/v1/completions"
    body = requests.post(
        url, headers=AUTH, json={"model": "tiny", "prompt": "Once", "max_tokens": 2}, timeout=TIMEOUT
    ).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "The quick"
    assert body["usage"]["completion_tokens"] == 2
    streamed = requests.post(
        url, headers=AUTH, timeout=TIMEOUT, json={"model": "tiny", "prompt": "Once", "max_tokens": 2, "stream": True}
    )
    events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    texts = [json.loads(e)["choices"][0]["text"] for e in events[:-1]]
    assert texts == ["The", " quick"]


@pytest.mark.parametrize(
    "body, status, error",
    [
        (
            {**CHAT, "model": "nope"},
            404,
            {
                "message": "The model `nope` does not exist. Valid aliases: tiny.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            },
        ),
        (
            {**CHAT, "max_tokens": 5000},
            400,
            {
                "message": "max_tokens=5000 cannot be greater than max_model_len=1024. Please request "
                "fewer output tokens. (parameter=max_tokens, value=5000)",
                "type": "BadRequestError",
                "param": "max_tokens",
                "code": 400,
            },
        ),
        (
            {"model": "tiny"},
            400,
            {
                "message": "1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', "
                "'msg': 'Field required', 'input': '<dict of 1 items>'}",
                "type": "Bad Request",
                "param": "body.messages",
                "code": 400,
            },
        ),
    ],
)
def test_error_bodies(vllm_shared: Standin, body: dict, status: int, error: dict) -> None:
    resp = requests.post(vllm_shared.base_url + "/v1/chat/completions", headers=AUTH, json=body, timeout=TIMEOUT)
    assert (resp.status_code, resp.json()) == (status, {"error": error})


def test_unknown_route_and_method(vllm_shared: Standin) -> None:
    base = vllm_shared.base_url
    assert requests.get(base + "/nope", timeout=TIMEOUT).json() == {"detail": "Not Found"}
    wrong = requests.get(base + "/v1/chat/completions", headers=AUTH, timeout=TIMEOUT)
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})


# --- fidelity against the recorded real vLLM 0.32.0 ---------------------------------------------


def replay_golden_requests(base: str) -> dict[str, tuple[int, str | None, str]]:
    """Send the requests recorded against real vLLM; {name: (status, content-type, body)}."""
    out: dict[str, tuple[int, str | None, str]] = {}
    for call in GOLDEN["requests"]:
        node = ast.parse(call, mode="eval").body
        assert isinstance(node, ast.Call), call
        name, method, path, *rest = [ast.literal_eval(a) for a in node.args]
        auth = {k.arg: ast.literal_eval(k.value) for k in node.keywords}.get("auth", True)
        headers = {"Authorization": "Bearer k"} if auth else {}
        body = rest[0] if rest else None
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        resp = requests.request(
            method, base + path, data=data, timeout=TIMEOUT, headers={**headers, "Content-Type": "application/json"}
        )
        out[name] = (resp.status_code, resp.headers.get("content-type"), resp.text)
    return out


def test_responses_match_real_vllm_shapes(start_vllm_standin) -> None:
    standin = start_vllm_standin(
        ["serve", "/models/tiny", "--served-model-name", "tiny-chat", "--max-model-len", "1024", "--api-key", "k"]
    )
    got = replay_golden_requests(standin.base_url)
    for name, real in GOLDEN["responses"].items():
        status, ctype, body = got[name]
        assert status == real["status"], name
        assert ctype == real["content_type"], name
        assert body_shape(body) == real["shape"], name
    for name, real_body in GOLDEN["error_bodies"].items():
        assert json.loads(got[name][2]) == real_body, name


def test_metric_families_exist_in_real_vllm(vllm_shared: Standin) -> None:
    text = requests.get(vllm_shared.base_url + "/metrics", timeout=TIMEOUT).text
    types = dict(re.findall(r"^# TYPE (vllm:\S+) (\S+)$", text, re.M))
    for family, kind in types.items():
        assert GOLDEN["metric_types"].get(family) == kind, family
    for sample, labels in re.findall(r"^(vllm:[^{\s]+)\{([^}]*)\}", text, re.M):
        if sample == "vllm:cache_config_info":
            continue
        names = ",".join(sorted(re.findall(r'(\w+)="', labels)))
        assert names in GOLDEN["metric_label_names"][sample], sample


# --- metrics count what was served ----------------------------------------------------------------


def test_metrics_count_requests(start_vllm_standin) -> None:
    base = start_vllm_standin(
        ["serve", "org/tiny", "--served-model-name", "tiny", "--kv-cache-dtype", "fp8", "--no-enable-prefix-caching"]
    ).base_url
    before = requests.get(base + "/metrics", timeout=TIMEOUT)
    assert before.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    lab = {"model_name": "tiny"}
    assert metric(before.text, "vllm:generation_tokens_total", **lab) == 0
    for n in (3, 4):
        requests.post(base + "/v1/chat/completions", json={**CHAT, "max_tokens": n}, timeout=TIMEOUT).raise_for_status()
    after = requests.get(base + "/metrics", timeout=TIMEOUT).text
    assert metric(after, "vllm:generation_tokens_total", **lab) == 7
    assert metric(after, "vllm:prompt_tokens_total", **lab) > 0
    assert metric(after, "vllm:request_success_total", finished_reason="length", **lab) == 2
    assert metric(after, "vllm:time_to_first_token_seconds_count", **lab) == 2
    assert metric(after, "vllm:e2e_request_latency_seconds_count", **lab) == 2
    assert metric(after, "vllm:time_to_first_token_seconds_bucket", le="+Inf", **lab) == 2
    assert metric(after, "vllm:num_requests_running", **lab) == 0
    assert metric(after, "vllm:kv_cache_usage_perc", **lab) == 0
    assert metric(after, "vllm:cache_config_info", cache_dtype="fp8", enable_prefix_caching="False") == 1


def test_max_num_seqs_makes_requests_wait(start_vllm_standin) -> None:
    base = start_vllm_standin(
        ["serve", "org/tiny", "--served-model-name", "tiny", "--max-num-seqs", "1"],
        {"VLLM_STANDIN_FAST": "0", "VLLM_STANDIN_TTFT": "0", "VLLM_STANDIN_TOKEN_DELAY": "0.06"},
    ).base_url
    threads = [
        threading.Thread(
            target=requests.post,
            args=(base + "/v1/completions",),
            kwargs={"json": {"prompt": "x", "max_tokens": 8}, "timeout": TIMEOUT},
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    seen_waiting = 0.0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and seen_waiting == 0:
        text = requests.get(base + "/metrics", timeout=TIMEOUT).text
        running = metric(text, "vllm:num_requests_running")
        seen_waiting = metric(text, "vllm:num_requests_waiting")
        time.sleep(0.02)
    assert (running, seen_waiting) == (1, 1)
    for t in threads:
        t.join(TIMEOUT)
    text = requests.get(base + "/metrics", timeout=TIMEOUT).text
    assert metric(text, "vllm:request_queue_time_seconds_count") == 2


# --- fault injection (stand-in only) --------------------------------------------------------------


def test_hang_fault_health_ok_but_no_token(start_vllm_standin) -> None:
    base = start_vllm_standin().base_url
    assert requests.post(base + "/standin/fault", json={"mode": "hang"}, timeout=TIMEOUT).json() == {"mode": "hang"}
    assert requests.get(base + "/health", timeout=TIMEOUT).status_code == 200
    assert requests.get(base + "/v1/models", timeout=TIMEOUT).status_code == 200
    with pytest.raises(requests.Timeout):
        requests.post(base + "/v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=0.5)
    stream = requests.post(
        base + "/v1/chat/completions", stream=True, timeout=(2, 0.5), json={**CHAT, "max_tokens": 2, "stream": True}
    )
    assert stream.status_code == 200  # headers arrive, tokens never do
    with pytest.raises(requests.ConnectionError):  # read timeout while streaming
        next(stream.iter_lines())
    stream.close()
    requests.post(base + "/standin/fault", json={"mode": "none"}, timeout=TIMEOUT)
    ok = requests.post(base + "/v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=TIMEOUT)
    assert ok.json()["choices"][0]["message"]["content"] == "The quick"


def test_hang_fault_from_environment(start_vllm_standin) -> None:
    base = start_vllm_standin(env={"VLLM_STANDIN_FAULT": "hang"}).base_url
    assert requests.get(base + "/standin/fault", timeout=TIMEOUT).json() == {"mode": "hang"}
    assert requests.get(base + "/health", timeout=TIMEOUT).status_code == 200
    with pytest.raises(requests.Timeout):
        requests.post(base + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=0.5)


def test_dead_fault_fails_health_and_requests(start_vllm_standin) -> None:
    base = start_vllm_standin().base_url
    requests.post(base + "/standin/fault", json={"mode": "dead"}, timeout=TIMEOUT)
    assert requests.get(base + "/health", timeout=TIMEOUT).status_code == 503
    resp = requests.post(base + "/v1/chat/completions", json=CHAT, timeout=TIMEOUT)
    assert resp.status_code == 500
    assert resp.json()["error"]["type"] == "InternalServerError"
    bad = requests.post(base + "/standin/fault", json={"mode": "melt"}, timeout=TIMEOUT)
    assert bad.status_code == 400


def test_sigterm_stops_cleanly(start_vllm_standin) -> None:
    standin = start_vllm_standin()
    assert standin.stop() == 0
    assert "[shutdown] API server: shutdown triggered" in standin.log_text()
