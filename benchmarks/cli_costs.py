"""gpuctl's own costs on this machine: start-up of `gpuctl --help` and `gpuctl check prod`, and rendering a
200-host inventory (generated in a temporary folder).

Each command runs as a fresh process, the way an operator runs it; the best and the median of the
repeats are printed with the load average (the 2-core test machines are often busy). The render is
also timed in-process, split into loading (validation) and rendering. Prints figures only.

    python benchmarks/cli_costs.py [--repeats 7] [--hosts 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPUCTL = [sys.executable, "-c", "from gpuctl.cli import main; main()"]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def timed_runs(argv: list[str], repeats: int, cwd: Path) -> list[float]:
    """Wall seconds of each run of ARGV (which must succeed)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return times


def show(label: str, times: list[float]) -> None:
    print(
        f"{label}: best {min(times) * 1e3:,.0f} ms, median {statistics.median(times) * 1e3:,.0f} ms ({len(times)} runs)"
    )


def inventory_of(hosts: int) -> str:
    """A fleet of HOSTS: RTX 4090 vLLM boxes, H100 pairs with a 70B model, and Ollama laptops, 1 in 3 each."""
    lines = []
    for i in range(hosts):
        address = f"10.{i // 250}.{i % 250}.10"
        lines.append(f'    Host("node-{i:03d}", address="{address}"),')
    return textwrap.dedent("""
        from gpuctl.inventory import Defaults, Driver, Gpu, Host, Ollama, Secret, Vllm

        defaults = Defaults(driver=Driver(branch=580))
        rtx = [
        {rtx}
        ]
        rtx_defaults = Defaults(gpus=Gpu(model="RTX 4090", count=1, memory_gib=24), vllm=Vllm(
            image="vllm/vllm-openai:v0.32.0", model="meta-llama/Llama-3.1-8B-Instruct",
            served_model_name="llama-3.1-8b",
            max_model_len=16384, kv_cache_dtype="fp8", api_key=Secret.env("VLLM_API_KEY")))
        h100 = [
        {h100}
        ]
        h100_defaults = Defaults(gpus=Gpu(model="H100 80GB", count=2, memory_gib=80), vllm=Vllm(
            image="vllm/vllm-openai:v0.32.0", model="RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
            served_model_name="llama-3.3-70b", tensor_parallel_size=2, max_model_len=32768, kv_cache_dtype="fp8"))
        laptops = [
        {laptops}
        ]
        laptops_defaults = Defaults(gpus=Gpu(model="RTX 4090", count=1, memory_gib=24),
                                    ollama=Ollama(version="0.12.6", models=["llama3.1:8b"]))
    """).format(rtx="\n".join(lines[0::3]), h100="\n".join(lines[1::3]), laptops="\n".join(lines[2::3]))


def render_in_process(inventory_path: Path, out: Path) -> tuple[float, float, int]:
    """(load seconds, render+write seconds, files) for the whole inventory, in this process."""
    from gpuctl import inventory
    from gpuctl.render import render_host, write_tree

    started = time.perf_counter()
    inv = inventory.load(str(inventory_path))
    loaded = time.perf_counter()
    files = 0
    for host in inv.hosts.values():
        rendered = render_host(host)
        write_tree(rendered, out / host.name)
        files += len(rendered)
    return loaded - started, time.perf_counter() - loaded, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"before: {load()}; python {sys.version.split()[0]}")

    show("python -c pass (interpreter floor)", timed_runs([sys.executable, "-c", "pass"], args.repeats, REPO))
    show("gpuctl --help", timed_runs([*GPUCTL, "--help"], args.repeats, REPO))
    show("gpuctl check prod", timed_runs([*GPUCTL, "check", "prod"], args.repeats, REPO))
    if shutil.which("gpuctl"):
        show("gpuctl --help (console script)", timed_runs(["gpuctl", "--help"], args.repeats, REPO))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"fleet{args.hosts}.py"
        path.write_text(inventory_of(args.hosts))
        out = folder / "out"
        times = timed_runs(
            [*GPUCTL, "render", str(path), "--out", str(out), "--json"], max(3, args.repeats // 2), folder
        )
        show(f"gpuctl render, {args.hosts}-host inventory (whole command)", times)
        best = min((render_in_process(path, folder / f"in-process-{i}") for i in range(3)), key=lambda r: r[0] + r[1])
        print(
            f"in process, best of 3: load + validate {best[0] * 1e3:,.0f} ms, render + write {best[1] * 1e3:,.0f} ms "
            f"({best[2]:,} files, {best[1] / args.hosts * 1e3:.2f} ms per host)"
        )
    print(f"after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
