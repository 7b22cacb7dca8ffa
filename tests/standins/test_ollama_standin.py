"""Tests of the Ollama STAND-IN (tests/harness/ollama_standin.py): real routes, shapes, env."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest
import requests

from harness.standin_common import OLLAMA_STANDIN, Standin, free_port, run_cli

TIMEOUT = 10


def ndjson(resp: requests.Response) -> list[dict]:
    """Parse an NDJSON body line by line (every line must be one JSON object)."""
    lines = resp.text.splitlines()
    assert lines, "empty stream"
    return [json.loads(line) for line in lines]


def sse_events(resp: requests.Response) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order; events are separated by blank lines."""
    blocks = [b for b in resp.text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [b[len("data: ") :] for b in blocks]


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC3339 timestamp as Ollama writes it."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def ps(base: str) -> dict[str, dict]:
    """/api/ps as {name: entry}."""
    resp = requests.get(f"{base}/api/ps", timeout=TIMEOUT)
    assert resp.status_code == 200
    return {m["name"]: m for m in resp.json()["models"]}


def pull(base: str, name: str) -> None:
    """Pull a catalog model (non-streamed)."""
    resp = requests.post(f"{base}/api/pull", json={"model": name, "stream": False}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "success"}


# --- parsing helpers (unit level) ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, ("http", "127.0.0.1", 11434)),
        ("0.0.0.0", ("http", "0.0.0.0", 11434)),
        ("0.0.0.0:8080", ("http", "0.0.0.0", 8080)),
        ("http://10.1.2.3:9000", ("http", "10.1.2.3", 9000)),
        ("http://example.com", ("http", "example.com", 80)),
        ("[::1]:5000", ("http", "::1", 5000)),
    ],
)
def test_ollama_host_parsing(ollama_module: ModuleType, raw: str | None, expected: tuple[str, str, int]) -> None:
    assert ollama_module.parse_ollama_host(raw) == expected


@pytest.mark.parametrize(
    "raw, seconds",
    [
        (None, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("30s", 30.0),
        ("0", 0.0),
        ("120", 120.0),
        ("-1", float("inf")),
        ("-1m", float("inf")),
        ("junk", 300.0),
    ],
)
def test_keep_alive_env_parsing(ollama_module: ModuleType, raw: str | None, seconds: float) -> None:
    assert ollama_module.keep_alive_from_env(raw) == seconds


# --- general routes ---------------------------------------------------------------------------


def test_root_version_and_unknown_routes(ollama_shared: Standin) -> None:
    base = ollama_shared.base_url
    root = requests.get(base + "/", timeout=TIMEOUT)
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert requests.head(base + "/", timeout=TIMEOUT).status_code == 200
    assert requests.get(base + "/api/version", timeout=TIMEOUT).json() == {"version": "0.12.6"}
    missing = requests.get(base + "/api/nope", timeout=TIMEOUT)
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert requests.get(base + "/api/pull", timeout=TIMEOUT).status_code == 405


def test_no_authentication_anywhere(ollama_shared: Standin) -> None:
    """Ollama has no auth: a bogus bearer token changes nothing."""
    resp = requests.get(
        ollama_shared.base_url + "/api/tags", headers={"Authorization": "Bearer wrong"}, timeout=TIMEOUT
    )
    assert resp.status_code == 200


def test_tags_shape(ollama_shared: Standin) -> None:
    models = requests.get(ollama_shared.base_url + "/api/tags", timeout=TIMEOUT).json()["models"]
    by_name = {m["name"]: m for m in models}
    assert set(by_name) == {"tinyllama:latest", "qwen2.5:0.5b"}
    tiny = by_name["tinyllama:latest"]
    assert tiny["model"] == "tinyllama:latest"
    assert isinstance(tiny["size"], int) and tiny["size"] > 0
    assert len(tiny["digest"]) == 64
    parse_time(tiny["modified_at"])
    assert tiny["details"]["format"] == "gguf"
    assert {"family", "parameter_size", "quantization_level", "families"} <= set(tiny["details"])


# --- pull -------------------------------------------------------------------------------------


def test_pull_streams_progress_then_success(start_ollama_standin) -> None:
    base = start_ollama_standin().base_url
    resp = requests.post(base + "/api/pull", json={"model": "llama3.1:8b"}, timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    events = ndjson(resp)
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [e for e in events if e["status"].startswith("pulling ") and "digest" in e]
    assert layers and all(e["digest"].startswith("sha256:") for e in layers)
    assert all(e["status"] == "pulling " + e["digest"][7:19] for e in layers)
    done = [e for e in layers if e.get("completed") == e["total"]]
    assert len(done) == len({e["digest"] for e in layers})
    names = [m["name"] for m in requests.get(base + "/api/tags", timeout=TIMEOUT).json()["models"]]
    assert names == ["llama3.1:8b"]


def test_pull_unknown_model_real_error_shapes(start_ollama_standin) -> None:
    base = start_ollama_standin().base_url
    streamed = requests.post(base + "/api/pull", json={"model": "no-such-model"}, timeout=TIMEOUT)
    assert streamed.status_code == 200
    assert ndjson(streamed) == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    single = requests.post(base + "/api/pull", json={"name": "no-such-model", "stream": False}, timeout=TIMEOUT)
    assert single.status_code == 500
    assert single.json() == {"error": "pull model manifest: file does not exist"}


def test_pull_catalog_from_env_and_latest_tag(start_ollama_standin) -> None:
    base = start_ollama_standin({"OLLAMA_STANDIN_CATALOG": "acme/widget,phi3:mini"}).base_url
    pull(base, "acme/widget")
    pull(base, "phi3:mini")
    names = {m["name"] for m in requests.get(base + "/api/tags", timeout=TIMEOUT).json()["models"]}
    assert names == {"acme/widget:latest", "phi3:mini"}
    resp = requests.post(base + "/api/pull", json={"model": "tinyllama", "stream": False}, timeout=TIMEOUT)
    assert resp.status_code == 500  # not in this catalog


def test_pulled_models_survive_restart(start_ollama_standin, tmp_path: Path) -> None:
    models = tmp_path / "persist"
    first = start_ollama_standin(models_dir=models)
    pull(first.base_url, "tinyllama")
    assert (models / "manifests/registry.ollama.ai/library/tinyllama/latest").is_file()
    assert first.stop() == 0
    second = start_ollama_standin(models_dir=models)
    names = [m["name"] for m in requests.get(second.base_url + "/api/tags", timeout=TIMEOUT).json()["models"]]
    assert names == ["tinyllama:latest"]


# --- generate / chat ----------------------------------------------------------------------------


def test_generate_streams_ndjson_by_default(ollama_shared: Standin) -> None:
    resp = requests.post(
        ollama_shared.base_url + "/api/generate",
        json={"model": "tinyllama", "prompt": "Why is the sky blue?", "options": {"num_predict": 5}},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    lines = ndjson(resp)
    tokens, final = lines[:-1], lines[-1]
    assert len(tokens) == 5 and all(t["done"] is False for t in tokens)
    assert all(t["model"] == "tinyllama" and t["response"] for t in tokens)
    assert "".join(t["response"] for t in tokens) == "The quick brown fox jumps"
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["response"] == "" and final["eval_count"] == 5
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int), key
    assert final["total_duration"] >= final["eval_duration"]
    parse_time(final["created_at"])


def test_generate_non_stream_and_default_length(ollama_shared: Standin) -> None:
    resp = requests.post(
        ollama_shared.base_url + "/api/generate",
        json={"model": "tinyllama:latest", "prompt": "hi", "stream": False},
        timeout=TIMEOUT,
    )
    body = resp.json()
    assert resp.status_code == 200 and body["done"] is True
    assert body["done_reason"] == "stop"
    assert len(body["response"].split()) == body["eval_count"] == 24


def test_chat_streams_messages(ollama_shared: Standin) -> None:
    resp = requests.post(
        ollama_shared.base_url + "/api/chat",
        json={
            "model": "qwen2.5:0.5b",
            "options": {"num_predict": 3},
            "messages": [{"role": "user", "content": "hello"}],
        },
        timeout=TIMEOUT,
    )
    lines = ndjson(resp)
    assert [line["message"]["role"] for line in lines] == ["assistant"] * 4
    assert "".join(line["message"]["content"] for line in lines) == "The quick brown"
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 3
    single = requests.post(
        ollama_shared.base_url + "/api/chat",
        json={
            "model": "qwen2.5:0.5b",
            "stream": False,
            "options": {"num_predict": 2},
            "messages": [{"role": "user", "content": "hello"}],
        },
        timeout=TIMEOUT,
    ).json()
    assert single["message"] == {"role": "assistant", "content": "The quick"}


@pytest.mark.parametrize(
    "path, body, status, error",
    [
        ("/api/generate", {"model": "ghost", "prompt": "x"}, 404, "model 'ghost' not found"),
        (
            "/api/chat",
            {"model": "ghost", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model 'ghost' not found",
        ),
        ("/api/chat", {"messages": []}, 400, "model is required"),
        ("/api/show", {"model": "ghost"}, 404, "model 'ghost' not found"),
        ("/api/embed", {"model": "ghost", "input": "x"}, 404, 'model "ghost" not found, try pulling it first'),
        (
            "/api/generate",
            {"model": "tinyllama", "prompt": "x", "keep_alive": "soon"},
            400,
            'time: invalid duration "soon"',
        ),
    ],
)
def test_error_shapes(ollama_shared: Standin, path: str, body: dict, status: int, error: str) -> None:
    resp = requests.post(ollama_shared.base_url + path, json=body, timeout=TIMEOUT)
    assert (resp.status_code, resp.json()) == (status, {"error": error})


def test_malformed_and_missing_body(ollama_shared: Standin) -> None:
    bad = requests.post(ollama_shared.base_url + "/api/chat", data="{oops", timeout=TIMEOUT)
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid character 'o' looking for beginning of value"}
    empty = requests.post(ollama_shared.base_url + "/api/generate", timeout=TIMEOUT)
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})


# --- keep-alive and /api/ps ---------------------------------------------------------------------


def seconds_until(entry: dict) -> float:
    """Seconds from now until a /api/ps entry expires."""
    return (parse_time(entry["expires_at"]) - dt.datetime.now(dt.UTC)).total_seconds()


def test_ps_follows_keep_alive(start_ollama_standin) -> None:
    base = start_ollama_standin().base_url
    pull(base, "tinyllama")
    assert ps(base) == {}
    gen = {"model": "tinyllama", "prompt": "x", "stream": False, "options": {"num_predict": 1}}
    requests.post(base + "/api/generate", json=gen, timeout=TIMEOUT).raise_for_status()
    entry = ps(base)["tinyllama:latest"]
    assert 290 < seconds_until(entry) <= 300  # default 5m
    assert entry["size_vram"] == entry["size"] > 0
    assert entry["details"]["family"] == "llama" and len(entry["digest"]) == 64
    requests.post(base + "/api/generate", json={**gen, "keep_alive": "10m"}, timeout=TIMEOUT).raise_for_status()
    assert 590 < seconds_until(ps(base)["tinyllama:latest"]) <= 600
    requests.post(base + "/api/generate", json={**gen, "keep_alive": -1}, timeout=TIMEOUT).raise_for_status()
    assert parse_time(ps(base)["tinyllama:latest"]["expires_at"]).year > 2200
    requests.post(base + "/api/generate", json={**gen, "keep_alive": 0}, timeout=TIMEOUT).raise_for_status()
    assert ps(base) == {}


def test_empty_prompt_loads_and_unloads(start_ollama_standin) -> None:
    base = start_ollama_standin().base_url
    pull(base, "tinyllama")
    load = requests.post(base + "/api/generate", json={"model": "tinyllama", "keep_alive": -1}, timeout=TIMEOUT).json()
    assert (load["done"], load["done_reason"], load["response"]) == (True, "load", "")
    assert parse_time(ps(base)["tinyllama:latest"]["expires_at"]).year > 2200
    unload = requests.post(base + "/api/chat", json={"model": "tinyllama", "keep_alive": 0}, timeout=TIMEOUT).json()
    assert unload["done_reason"] == "unload"
    assert unload["message"] == {"role": "assistant", "content": ""}
    assert ps(base) == {}


def test_env_keep_alive_forever_and_short_expiry(start_ollama_standin, tmp_path: Path) -> None:
    forever = start_ollama_standin({"OLLAMA_KEEP_ALIVE": "-1"}).base_url
    pull(forever, "tinyllama")
    requests.post(forever + "/api/generate", json={"model": "tinyllama"}, timeout=TIMEOUT)
    assert parse_time(ps(forever)["tinyllama:latest"]["expires_at"]).year > 2200
    short = start_ollama_standin({"OLLAMA_KEEP_ALIVE": "300ms"}, models_dir=tmp_path / "other").base_url
    pull(short, "tinyllama")
    requests.post(short + "/api/generate", json={"model": "tinyllama"}, timeout=TIMEOUT)
    assert "tinyllama:latest" in ps(short)
    deadline = time.monotonic() + 5
    while ps(short) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ps(short) == {}


def test_max_loaded_models_evicts_least_recent(start_ollama_standin) -> None:
    base = start_ollama_standin({"OLLAMA_MAX_LOADED_MODELS": "1"}).base_url
    pull(base, "tinyllama")
    pull(base, "qwen2.5:0.5b")
    for name in ("tinyllama", "qwen2.5:0.5b"):
        requests.post(base + "/api/generate", json={"model": name}, timeout=TIMEOUT)
    assert list(ps(base)) == ["qwen2.5:0.5b"]


# --- settings from the environment --------------------------------------------------------------


def test_env_settings_visible_in_standin_config(start_ollama_standin) -> None:
    standin = start_ollama_standin(
        {
            "OLLAMA_NUM_PARALLEL": "3",
            "OLLAMA_MAX_LOADED_MODELS": "2",
            "OLLAMA_KEEP_ALIVE": "1h",
            "OLLAMA_FLASH_ATTENTION": "1",
            "OLLAMA_KV_CACHE_TYPE": "q8_0",
            "OLLAMA_CONTEXT_LENGTH": "8192",
            "OLLAMA_ORIGINS": "https://a.example",
        }
    )
    cfg = requests.get(standin.base_url + "/api/standin/config", timeout=TIMEOUT).json()
    assert cfg["standin"] is True
    assert (cfg["host"], cfg["port"]) == ("127.0.0.1", standin.port)
    assert cfg["num_parallel"] == 3 and cfg["max_loaded_models"] == 2
    assert cfg["keep_alive"] == "1h" and cfg["keep_alive_seconds"] == 3600
    assert cfg["flash_attention"] is True
    assert cfg["kv_cache_type"] == cfg["effective_kv_cache_type"] == "q8_0"
    assert cfg["context_length"] == 8192 and cfg["origins"] == "https://a.example"
    assert cfg["env"]["OLLAMA_NUM_PARALLEL"] == "3"
    assert cfg["models_dir"].endswith("models") and cfg["pid"] == standin.process.pid


def test_kv_cache_type_needs_flash_attention(start_ollama_standin) -> None:
    standin = start_ollama_standin({"OLLAMA_KV_CACHE_TYPE": "q4_0"})
    cfg = requests.get(standin.base_url + "/api/standin/config", timeout=TIMEOUT).json()
    assert (cfg["kv_cache_type"], cfg["effective_kv_cache_type"]) == ("q4_0", "f16")
    assert cfg["keep_alive_seconds"] == 300 and cfg["num_parallel"] == 1


def test_ollama_host_with_scheme(start_ollama_standin) -> None:
    port = free_port()
    standin = start_ollama_standin({"OLLAMA_HOST": f"http://127.0.0.1:{port}"}, port=port)
    assert requests.get(standin.base_url + "/", timeout=TIMEOUT).text == "Ollama is running"


def test_port_in_use_fails_like_ollama(start_ollama_standin, tmp_path: Path) -> None:
    running = start_ollama_standin()
    result = run_cli(
        OLLAMA_STANDIN, ["serve"], {"OLLAMA_HOST": f"127.0.0.1:{running.port}", "OLLAMA_MODELS": str(tmp_path / "m2")}
    )
    assert result.returncode == 1
    assert f"Error: listen tcp 127.0.0.1:{running.port}: bind: address already in use" in result.stderr


# --- concurrency: OLLAMA_NUM_PARALLEL and OLLAMA_MAX_QUEUE --------------------------------------


def stream_generation(base: str, model: str, record: list[tuple[str, str, float]], tag: str) -> None:
    """Stream one generation, recording (tag, 'token'|'done', arrival time) per line."""
    with requests.post(
        base + "/api/generate",
        stream=True,
        timeout=TIMEOUT,
        json={"model": model, "prompt": "x", "options": {"num_predict": 4}},
    ) as r:
        for line in r.iter_lines():
            if line:
                kind = "done" if json.loads(line)["done"] else "token"
                record.append((tag, kind, time.monotonic()))


def run_two_concurrent(base: str) -> list[tuple[str, str, float]]:
    """Two concurrent streamed generations; the merged, time-ordered event list."""
    record: list[tuple[str, str, float]] = []
    threads = [threading.Thread(target=stream_generation, args=(base, "tinyllama", record, t)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    return sorted(record, key=lambda e: e[2])


SLOW = {"OLLAMA_STANDIN_FAST": "0", "OLLAMA_STANDIN_TTFT": "0.05", "OLLAMA_STANDIN_TOKEN_DELAY": "0.05"}


def test_num_parallel_1_serialises_generations(start_ollama_standin) -> None:
    base = start_ollama_standin({**SLOW, "OLLAMA_NUM_PARALLEL": "1"}).base_url
    pull(base, "tinyllama")
    events = run_two_concurrent(base)
    assert len(events) == 10
    first = events[0][0]
    # all of the first request's lines (4 tokens + done) come before any of the second's
    assert [e[0] for e in events] == [first] * 5 + [("b" if first == "a" else "a")] * 5


def test_num_parallel_2_overlaps_generations(start_ollama_standin) -> None:
    base = start_ollama_standin({**SLOW, "OLLAMA_NUM_PARALLEL": "2"}).base_url
    pull(base, "tinyllama")
    events = run_two_concurrent(base)
    order = [e[0] for e in events]
    first_done = next(i for i, e in enumerate(events) if e[1] == "done")
    assert set(order[:first_done]) == {"a", "b"}  # both produced tokens before either finished


def test_queue_full_answers_503(start_ollama_standin) -> None:
    base = start_ollama_standin(
        {**SLOW, "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_QUEUE": "1", "OLLAMA_STANDIN_TOKEN_DELAY": "0.2"}
    ).base_url
    pull(base, "tinyllama")
    record: list[tuple[str, str, float]] = []
    threads = [
        threading.Thread(target=stream_generation, args=(base, "tinyllama", record, t)) for t in ("running", "queued")
    ]
    threads[0].start()
    deadline = time.monotonic() + 5
    while not record and time.monotonic() < deadline:  # the first one holds the only slot
        time.sleep(0.01)
    threads[1].start()
    while time.monotonic() < deadline:  # the second one is waiting in the queue
        runtime = requests.get(base + "/api/standin/config", timeout=TIMEOUT).json()["runtime"]
        if runtime["pending_requests"] == 1:
            break
        time.sleep(0.01)
    third = requests.post(base + "/api/generate", json={"model": "tinyllama", "prompt": "x"}, timeout=TIMEOUT)
    assert third.status_code == 503
    assert third.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    for t in threads:
        t.join(TIMEOUT)
    assert sum(1 for e in record if e[1] == "done") == 2


# --- model management ---------------------------------------------------------------------------


def test_show_copy_delete_create(start_ollama_standin) -> None:
    base = start_ollama_standin().base_url
    pull(base, "tinyllama")
    show = requests.post(base + "/api/show", json={"model": "tinyllama"}, timeout=TIMEOUT)
    body = show.json()
    assert show.status_code == 200
    assert body["details"]["format"] == "gguf" and "completion" in body["capabilities"]
    assert body["model_info"]["general.architecture"] == "llama"
    assert body["modelfile"].startswith('# Modelfile generated by "ollama show"')
    copy = requests.post(base + "/api/copy", json={"source": "tinyllama", "destination": "mine:v1"}, timeout=TIMEOUT)
    assert copy.status_code == 200
    created = requests.post(
        base + "/api/create", timeout=TIMEOUT, json={"model": "pirate", "from": "tinyllama", "system": "Arr."}
    )
    assert [e["status"] for e in ndjson(created)][-1] == "success"
    assert requests.post(base + "/api/show", json={"model": "pirate"}, timeout=TIMEOUT).json()["system"] == "Arr."
    digests = {m["name"]: m["digest"] for m in requests.get(base + "/api/tags", timeout=TIMEOUT).json()["models"]}
    assert set(digests) == {"tinyllama:latest", "mine:v1", "pirate:latest"}
    # Ollama's CopyModel copies the manifest byte for byte: one digest for both names (server/images.go).
    assert digests["mine:v1"] == digests["tinyllama:latest"] != digests["pirate:latest"]
    gone = requests.delete(base + "/api/delete", json={"model": "mine:v1"}, timeout=TIMEOUT)
    assert (gone.status_code, gone.text) == (200, "")
    again = requests.delete(base + "/api/delete", json={"model": "mine:v1"}, timeout=TIMEOUT)
    assert (again.status_code, again.json()) == (404, {"error": "model 'mine:v1' not found"})


def test_embed_is_deterministic(ollama_shared: Standin) -> None:
    url = ollama_shared.base_url + "/api/embed"
    one = requests.post(url, json={"model": "tinyllama", "input": ["a", "b"]}, timeout=TIMEOUT).json()
    two = requests.post(url, json={"model": "tinyllama", "input": "a"}, timeout=TIMEOUT).json()
    assert len(one["embeddings"]) == 2 and len(one["embeddings"][0]) == 384
    assert one["embeddings"][0] == two["embeddings"][0] != one["embeddings"][1]
    assert abs(sum(v * v for v in two["embeddings"][0]) - 1) < 1e-3


# --- OpenAI compatibility -----------------------------------------------------------------------


def test_openai_models_and_chat(ollama_shared: Standin) -> None:
    base = ollama_shared.base_url
    models = requests.get(base + "/v1/models", timeout=TIMEOUT).json()
    assert models["object"] == "list"
    assert {m["id"] for m in models["data"]} == {"tinyllama:latest", "qwen2.5:0.5b"}
    assert all(m["object"] == "model" and m["owned_by"] == "library" for m in models["data"])
    body = requests.post(
        base + "/v1/chat/completions",
        timeout=TIMEOUT,
        json={"model": "tinyllama", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    ).json()
    assert body["object"] == "chat.completion" and body["model"] == "tinyllama"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "The quick brown fox"}
    assert body["choices"][0]["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4


def test_openai_chat_stream_sse(ollama_shared: Standin) -> None:
    resp = requests.post(
        ollama_shared.base_url + "/v1/chat/completions",
        timeout=TIMEOUT,
        json={
            "model": "tinyllama",
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert resp.headers["Content-Type"] == "text/event-stream"
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c["choices"][0]["delta"]["content"] for c in chunks[:-1] if c["choices"]]
    assert "".join(content) == "The quick brown"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_openai_completions_and_errors(ollama_shared: Standin) -> None:
    base = ollama_shared.base_url
    body = requests.post(
        base + "/v1/completions", timeout=TIMEOUT, json={"model": "qwen2.5:0.5b", "prompt": "hi", "max_tokens": 2}
    ).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "The quick"
    missing = requests.post(
        base + "/v1/chat/completions",
        timeout=TIMEOUT,
        json={"model": "ghost", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"message": "model 'ghost' not found", "type": "not_found_error", "param": None, "code": None}
    }


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_version_against_server(start_ollama_standin) -> None:
    standin = start_ollama_standin({"OLLAMA_STANDIN_VERSION": "0.1.0"})
    env = {"OLLAMA_HOST": f"127.0.0.1:{standin.port}"}
    same = run_cli(OLLAMA_STANDIN, ["--version"], {**env, "OLLAMA_STANDIN_VERSION": "0.1.0"})
    assert (same.returncode, same.stdout) == (0, "ollama version is 0.1.0\n")
    other = run_cli(OLLAMA_STANDIN, ["-v"], env)
    assert other.stdout.splitlines() == ["ollama version is 0.1.0", "Warning: client version is 0.12.6"]


def test_cli_version_without_server() -> None:
    result = run_cli(OLLAMA_STANDIN, ["-v"], {"OLLAMA_HOST": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "Warning: could not connect to a running Ollama instance",
        "Warning: client version is 0.12.6",
    ]


def test_cli_pull_list_ps(start_ollama_standin) -> None:
    standin = start_ollama_standin()
    env = {"OLLAMA_HOST": f"127.0.0.1:{standin.port}"}
    pulled = run_cli(OLLAMA_STANDIN, ["pull", "tinyllama"], env)
    assert pulled.returncode == 0 and pulled.stdout.splitlines()[-1] == "success"
    missing = run_cli(OLLAMA_STANDIN, ["pull", "nope"], env)
    assert missing.returncode == 1
    assert "Error: pull model manifest: file does not exist" in missing.stderr
    listed = run_cli(OLLAMA_STANDIN, ["list"], env)
    assert listed.stdout.split()[:4] == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert "tinyllama:latest" in listed.stdout
    run_cli(OLLAMA_STANDIN, ["run", "tinyllama", "hi"], env)
    assert "tinyllama:latest" in run_cli(OLLAMA_STANDIN, ["ps"], env).stdout


def test_cli_without_server_fails() -> None:
    result = run_cli(OLLAMA_STANDIN, ["list"], {"OLLAMA_HOST": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert "could not connect to ollama server" in result.stderr


def test_a_runner_that_cannot_start_fails_every_load_while_the_server_answers(start_ollama_standin) -> None:
    """STAND-IN knob OLLAMA_STANDIN_FAULT=runner-exit: a release whose server starts but whose model runner
    dies on this machine (what the fleet's broken Ollama release does)."""
    base = start_ollama_standin(env={"OLLAMA_STANDIN_FAULT": "runner-exit"}).base_url
    pull(base, "qwen2.5:0.5b")
    assert requests.get(f"{base}/api/version", timeout=5).status_code == 200
    body = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    chat = requests.post(f"{base}/api/chat", json=body, timeout=5)
    assert (chat.status_code, chat.json()) == (500, {"error": "llama runner process has terminated: exit status 2"})
    shim = requests.post(f"{base}/v1/chat/completions", json=body, timeout=5)
    assert shim.status_code == 500 and "llama runner process has terminated" in shim.text
