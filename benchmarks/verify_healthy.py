"""How long `gpuctl verify` takes on a healthy engine, and where the time goes.

Engines on 127.0.0.1: the vLLM STAND-IN and the Ollama STAND-IN with their default token delays
(TTFT 20 ms, 5 ms per token), and the real CPU build of vLLM serving the tiny test model when its
cached venv exists (or --real-vllm builds it). Each is verified as a URL target (`gpuctl verify URL
--engine … --model …`, a fresh process each time, best and median of the repeats), then once in
process with each check timed. Host checks over SSH are not part of a URL target. Prints figures only.

    python benchmarks/verify_healthy.py [--repeats 5] [--real-vllm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gpuctl.verify.ollama_api import OllamaChecker, OllamaExpectations  # noqa: E402
from gpuctl.verify.openai_api import VllmChecker, VllmExpectations  # noqa: E402
from harness import engine  # noqa: E402
from harness.standin_common import start_ollama, start_vllm  # noqa: E402

GPUCTL = [sys.executable, "-c", "from gpuctl.cli import main; main()"]
KEY_VAR = "GPUCTL_BENCH_VERIFY_KEY"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def time_cli(label: str, args: list[str], repeats: int, key: str | None) -> None:
    env = {**os.environ, "NO_COLOR": "1", **({KEY_VAR: key} if key else {})}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([*GPUCTL, "verify", *args], capture_output=True, text=True, timeout=300, env=env)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"verify {label} failed:\n{done.stdout}\n{done.stderr}")
    print(
        f"{label}: gpuctl verify (fresh process) best {min(times) * 1e3:,.0f} ms, "
        f"median {statistics.median(times) * 1e3:,.0f} ms ({repeats} runs)"
    )


def time_checks(label: str, checker: VllmChecker | OllamaChecker, names: list[str]) -> None:
    parts = []
    total = 0.0
    for name in names:
        started = time.perf_counter()
        check = getattr(checker, "openai_shim" if name == "openai" else name)()
        took = time.perf_counter() - started
        total += took
        parts.append(f"{name} {took * 1e3:.0f}" + ("" if check.ok else " (FAIL)"))
    print(f"{label}: in process {total * 1e3:,.0f} ms = " + ", ".join(parts) + " (ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real-vllm", action="store_true", help="build the CPU vLLM venv if it is not cached")
    args = parser.parse_args(argv)
    print(f"before: {load()}")
    vllm_checks = ["health", "version", "models", "chat", "stream", "auth", "metrics"]

    with tempfile.TemporaryDirectory() as tmp:
        with start_vllm(
            ["serve", "org/tiny", "--served-model-name", "tiny", "--api-key", "k", "--disable-uvicorn-access-log"],
            log_dir=Path(tmp),
            fast=False,
        ) as vllm:
            label = "vLLM stand-in"
            time_cli(
                label,
                [vllm.base_url, "--engine", "vllm", "--model", "tiny", "--api-key-env", KEY_VAR],
                args.repeats,
                "k",
            )
            time_checks(
                label, VllmChecker(VllmExpectations(vllm.base_url, "tiny", api_key="k", key_required=True)), vllm_checks
            )
        with start_ollama(Path(tmp) / "models", log_dir=Path(tmp), fast=False) as ollama:
            requests.post(f"{ollama.base_url}/api/pull", json={"model": "llama3.1:8b", "stream": False}, timeout=30)
            label = "Ollama stand-in"
            time_cli(label, [ollama.base_url, "--engine", "ollama", "--model", "llama3.1:8b"], args.repeats, None)
            time_checks(
                label,
                OllamaChecker(OllamaExpectations(ollama.base_url, models=["llama3.1:8b"])),
                ["version", "models", "chat", "openai"],
            )

    if args.real_vllm or engine.is_complete(engine.engine_venv_path()):
        venv = engine.ensure_engine_venv(progress=True)
        server = engine.start_vllm_server(venv, engine.ensure_tiny_model(venv))
        try:
            label = f"real vLLM {server.version} (CPU, tiny model)"
            time_cli(
                label,
                [server.base_url, "--engine", "vllm", "--model", server.served_model_name, "--api-key-env", KEY_VAR],
                args.repeats,
                server.api_key,
            )
            time_checks(
                label,
                VllmChecker(
                    VllmExpectations(
                        server.base_url, server.served_model_name, api_key=server.api_key, key_required=True
                    )
                ),
                vllm_checks,
            )
        finally:
            server.stop()
    else:
        print("real vLLM: skipped (no cached engine venv; --real-vllm builds it, ~2 min)")
    print(f"after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
