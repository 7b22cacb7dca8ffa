"""The `gpuctl bench` load generator's ceiling: streamed tokens/s and requests/s it sustains on this machine.

Runs gpuctl's own client (gpuctl.bench.client: asyncio + aiohttp, real sockets on 127.0.0.1), closed
loop at concurrency 64 for a fixed duration per reply length, against two servers that stream as fast
as they can, one SSE event (one HTTP chunk) per token:
- `standin`: the vLLM STAND-IN (tests/harness/vllm_standin.py, FAST mode: no TTFT or token delay); a
  threaded stdlib server that itself needs about a core, so it shares the 2 cores with the client;
- `fast`: benchmarks/fast_stream_server.py, a minimal asyncio server that writes pre-rendered vLLM-shaped
  replies, so the client gets most of the machine.
The client's CPU time per token (process CPU over the level / output tokens) says how far it is from
saturating a core; machine-wide CPU and steal show what else ran. Prints figures only.

    python benchmarks/bench_ceiling.py [--server both] [--concurrency 64] [--output-tokens 16,40,220] \
        [--duration 5] [--repeats 3]

Target (issue #8): at least 20,000 streamed tokens/s and 500 requests/s at concurrency 64.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gpuctl.bench import client  # noqa: E402
from harness.standin_common import free_port, start_vllm  # noqa: E402

TOKENS_TARGET, REQUESTS_TARGET = 20_000, 500
FAST_SERVER = Path(__file__).resolve().parent / "fast_stream_server.py"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of all CPUs so far, from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split()[1:9]
    )
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait - steal, steal, total


@contextlib.contextmanager
def standin_server() -> Iterator[tuple[str, int]]:
    with start_vllm(
        [
            "serve",
            "org/tiny",
            "--served-model-name",
            "tiny",
            "--max-model-len",
            "8192",
            "--max-num-seqs",
            "1024",
            "--disable-uvicorn-access-log",
        ]
    ) as server:
        yield server.base_url, server.process.pid


@contextlib.contextmanager
def fast_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(FAST_SERVER), "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):  # up to 10 s
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(
    name: str, base_url: str, pid: int, args: argparse.Namespace, shapes: list[int]
) -> dict[int, client.LevelStats]:
    endpoint = client.Endpoint(base_url, "openai", "tiny", exact_output=True)
    best: dict[int, client.LevelStats] = {}
    for repeat in range(1, args.repeats + 1):
        for tokens in shapes:
            settings = client.Settings(
                concurrency=[args.concurrency],
                prompt_tokens=args.prompt_tokens,
                output_tokens=tokens,
                duration_s=args.duration,
                calibrate=repeat == 1,
            )
            server_cpu0, ticks0 = process_cpu(pid), machine_ticks()
            (level,) = client.run(endpoint, settings).levels
            server_cpu = process_cpu(pid) - server_cpu0
            busy, steal, total = (b - a for a, b in zip(ticks0, machine_ticks(), strict=False))
            cpus = os.cpu_count() or 1
            others = max(0.0, busy / max(total, 1) * cpus - (level.client_cpu_s + server_cpu) / level.window_s)
            print(
                f"{name} run {repeat} c={args.concurrency} {tokens:>3} tokens/reply: "
                f"{level.aggregate_tok_s:>8,.0f} tok/s "
                f"{level.requests_per_s:>6,.0f} req/s; client CPU {level.client_cpu_us_per_token:5.1f} µs/token "
                f"({level.client_cpu_s / level.window_s:4.0%} of a core), server {server_cpu / level.window_s:4.0%}, "
                f"other processes ~{others:.0%}, steal {steal / max(total, 1):.0%}; {level.requests:,} requests, "
                f"{level.errors} errors"
            )
            if tokens not in best or level.aggregate_tok_s > best[tokens].aggregate_tok_s:
                best[tokens] = level
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["standin", "fast", "both"], default="both")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--output-tokens", default="16,40,220", help="reply lengths to measure, comma-separated")
    parser.add_argument("--prompt-tokens", type=int, default=180)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    shapes = [int(n) for n in args.output_tokens.split(",")]
    servers = {
        "standin": ("vLLM stand-in (tests/harness/vllm_standin.py, FAST)", standin_server),
        "fast": ("fast stream server (benchmarks/fast_stream_server.py)", fast_server),
    }
    chosen = list(servers) if args.server == "both" else [args.server]

    print(f"before: {load()}")
    results = {}
    for key in chosen:
        label, start = servers[key]
        with start() as (base_url, pid):
            results[key] = measure(key, base_url, pid, args, shapes)
    print(f"after: {load()}")
    for key in chosen:
        print(
            f"best of {args.repeats} against the {servers[key][0]}, concurrency {args.concurrency}, "
            f"{args.duration:g} s each:"
        )
        for tokens, level in results[key].items():
            ok = level.aggregate_tok_s >= TOKENS_TARGET and level.requests_per_s >= REQUESTS_TARGET
            print(
                f"  {tokens:>3} tokens/reply: {level.aggregate_tok_s:,.0f} streamed tok/s, "
                f"{level.requests_per_s:,.0f} req/s, client {level.client_cpu_us_per_token:.1f} µs CPU per token "
                f"(~{1e6 / level.client_cpu_us_per_token:,.0f} "
                "tok/s per core of client CPU)" + ("  [meets ≥20,000 tok/s and ≥500 req/s]" if ok else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
