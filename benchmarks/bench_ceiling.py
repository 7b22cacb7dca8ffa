"""The `gpuctl bench` load generator's ceiling: streamed tokens/s and requests/s it sustains on this machine.

Runs gpuctl's own client (gpuctl.bench.client: asyncio + aiohttp, real sockets on 127.0.0.1) against
the vLLM STAND-IN (tests/harness/vllm_standin.py, unmodified apart from TCP_NODELAY, in its FAST mode:
no TTFT or token delay, one SSE event per token, one socket write per event), closed loop at
concurrency 64 for a fixed duration per shape. The stand-in shares the machine's cores with the
client, so the figures are a floor of the client's ceiling; the client's own CPU time per token says
how far it is from saturating a core. Prints figures only; nothing asserts a time.

    python benchmarks/bench_ceiling.py [--concurrency 64] [--output-tokens 16,40,220] [--duration 5] [--repeats 3]

Target (issue #8): at least 20,000 streamed tokens/s and 500 requests/s at concurrency 64.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gpuctl.bench import client  # noqa: E402
from harness.standin_common import start_vllm  # noqa: E402

TOKENS_TARGET, REQUESTS_TARGET = 20_000, 500


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--output-tokens", default="16,40,220", help="reply lengths to measure, comma-separated")
    parser.add_argument("--prompt-tokens", type=int, default=180)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    shapes = [int(n) for n in args.output_tokens.split(",")]

    print(f"before: {load()}")
    with start_vllm(["serve", "org/tiny", "--served-model-name", "tiny", "--max-model-len", "8192",
                     "--max-num-seqs", "1024", "--disable-uvicorn-access-log"]) as server:  # fmt: skip
        print(f"server: vLLM stand-in (tests/harness/vllm_standin.py, VLLM_STANDIN_FAST=1) on {server.base_url}, "
              f"pid {server.process.pid}")  # fmt: skip
        endpoint = client.Endpoint(server.base_url, "openai", "tiny", exact_output=True)
        best: dict[int, client.LevelStats] = {}
        for repeat in range(1, args.repeats + 1):
            for tokens in shapes:
                settings = client.Settings(concurrency=[args.concurrency], prompt_tokens=args.prompt_tokens,
                                           output_tokens=tokens, duration_s=args.duration, calibrate=repeat == 1)  # fmt: skip
                server_cpu0 = process_cpu(server.process.pid)
                (level,) = client.run(endpoint, settings).levels
                server_cpu = process_cpu(server.process.pid) - server_cpu0
                print(f"run {repeat} c={args.concurrency} {tokens:>3} tokens/reply: {level.aggregate_tok_s:>9,.0f} tok/s "
                      f"{level.requests_per_s:>7,.0f} req/s  client CPU {level.client_cpu_us_per_token:5.1f} µs/token "
                      f"({level.client_cpu_s / level.window_s:4.0%} of a core), server CPU "
                      f"{server_cpu / level.window_s:4.0%} of a core, {level.requests:,} requests, {level.errors} errors, "
                      f"TTFT p50 {level.ttft_s.p50 * 1e3:.1f} ms")  # fmt: skip
                if tokens not in best or level.aggregate_tok_s > best[tokens].aggregate_tok_s:
                    best[tokens] = level
    print(f"after: {load()}")
    print(f"best of {args.repeats} at concurrency {args.concurrency} ({args.duration:g} s each):")
    for tokens, level in best.items():
        ok = level.aggregate_tok_s >= TOKENS_TARGET and level.requests_per_s >= REQUESTS_TARGET
        per_core = 1e6 / level.client_cpu_us_per_token
        print(f"  {tokens:>3} tokens/reply: {level.aggregate_tok_s:,.0f} streamed tok/s, {level.requests_per_s:,.0f} req/s, "
              f"client {level.client_cpu_us_per_token:.1f} µs CPU per token (one core would stream ~{per_core:,.0f} "
              f"tok/s)" + ("  [meets ≥20,000 tok/s and ≥500 req/s]" if ok else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
