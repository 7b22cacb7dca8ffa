"""How long the CPU vLLM test engine takes to build and start, and what it costs in memory.

Prints (no assertions): the engine venv build time (or "cached"), the tiny model build time,
cold start to /health, the first chat completion's latency, the server's RSS (API server plus
its EngineCore and worker), and the KV-cache line vLLM logged.

Run from the repository root::

    python benchmarks/engine_startup.py [--kv-cache-gib 1] [--max-model-len 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import engine  # noqa: E402


def timed(label: str, func, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Call func, print how long it took, return its result."""
    started = time.monotonic()
    result = func(*args, **kwargs)
    print(f"{label}: {time.monotonic() - started:.1f} s")
    return result


def first_completion_seconds(server: engine.VllmServer, max_tokens: int = 16) -> float:
    """Latency of one non-streamed chat completion."""
    body = json.dumps(
        {
            "model": server.served_model_name,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Hello!"}],
        }
    ).encode()
    request = urllib.request.Request(
        f"{server.base_url}/v1/chat/completions",
        data=body,
        headers={**server.headers, "Content-Type": "application/json"},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv-cache-gib", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args(argv)

    venv_was_built = engine.is_complete(engine.engine_venv_path())
    venv = timed("engine venv (ensure)", engine.ensure_engine_venv, progress=True)
    marker = engine.read_marker(venv)
    state = "cached" if venv_was_built else "built now"
    print(
        f"engine venv: {venv} ({state}; first build took {marker['build_seconds']} s, "
        f"{marker['size_bytes'] / 2**30:.2f} GiB, vllm {marker['vllm_version']}, torch {marker['torch_version']})"
    )
    model = timed("tiny model (ensure)", engine.ensure_tiny_model, venv)

    server = engine.start_vllm_server(
        venv, model, kv_cache_space_gib=args.kv_cache_gib, max_model_len=args.max_model_len
    )
    try:
        print(f"cold start to /health: {server.startup_seconds:.1f} s (vLLM {server.version})")
        print(f"first completion: {first_completion_seconds(server):.2f} s")
        print(f"second completion: {first_completion_seconds(server):.2f} s")
        print(
            f"RSS: {server.rss_total_bytes() / 2**20:.0f} MiB over {len(server.all_pids())} processes "
            f"(API server {engine.rss_bytes(server.api_pid) / 2**20:.0f} MiB)"
        )
        print(
            f"KV cache ({args.kv_cache_gib} GiB): {server.kv_cache_tokens} tokens, "
            f"max concurrency {server.max_concurrency}x"
        )
        print(f"log line: {server.kv_cache_log_line}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
