"""`gpuctl discover` over SSH on real fleet hosts: one with the GPU STAND-IN (fake lspci/nvidia-smi whose
output is copied from a real H100, harness/gpu_standin.py), one CPU-only. Everything else is read from the
real host. Each printed entry, saved as an inventory in a folder outside the checkout and named through
$GPUCTL_INVENTORIES, is accepted by `gpuctl check` and fitted by `gpuctl plan`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from harness import gpu_standin
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> Iterator[tuple[Host, Host]]:
    gpu, cpu = fleet.new_host("found-gpu"), fleet.new_host("found-cpu")
    try:
        gpu_standin.install(gpu, gpus=2, driver_loaded=True)
        yield gpu, cpu
    finally:
        gpu.destroy()
        cpu.destroy()


def gpuctl(*args: str, cwd: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpuctl", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})}
    )


def discover(host: Host, *extra: str) -> dict:
    result = gpuctl(
        "discover",
        host.address,
        "--key",
        str(host.ssh_key),
        "--known-hosts",
        str(host.known_hosts),
        "--name",
        host.name,
        "--json",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("which", ["gpu", "cpu"])
def test_discover_prints_an_entry_that_check_and_plan_accept_from_outside_the_checkout(hosts, tmp_path, which):
    host = hosts[0] if which == "gpu" else hosts[1]
    data = discover(host, "--users", "8")
    found, proposal = data["found"], data["proposal"]
    assert found["os_id"] == "debian" and found["cpus"] >= 1 and found["ram_gib"] > 0
    if which == "gpu":
        assert [g["name"] for g in found["gpus"]] == ["NVIDIA H100 80GB HBM3"]  # what the stand-in's -L says
        assert (found["driver"], found["cuda"]) == (gpu_standin.DRIVER_VERSION, "13.0")
        assert proposal["engine"] == "vllm" and "Gpu(model='H100 80GB', count=1" in proposal["entry"]
    else:
        assert found["gpus"] == [] and proposal["engine"] == "ollama" and "cpu_fallback=True" in proposal["entry"]
    folder, elsewhere = tmp_path / "mine", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / f"{host.name}.py").write_text(proposal["entry"])
    env = {"GPUCTL_INVENTORIES": str(folder), "VLLM_API_KEY": "x", "HF_TOKEN": "y"}
    check = gpuctl("check", host.name, cwd=str(elsewhere), env=env)
    assert check.returncode == 0, check.stderr
    plan = gpuctl("plan", host.name, "--json", cwd=str(elsewhere), env=env)
    assert plan.returncode == 0 and {e["verdict"] for e in json.loads(plan.stdout)["engines"]} == {"fits"}


def test_discover_changes_nothing_on_the_host(hosts):
    gpu, _ = hosts
    folders = "/etc /usr/local /var/lib/dpkg /var/lib/gpuctl /var/cache/gpuctl"
    listing = f"find {folders} -xdev -type f 2>/dev/null | sort | xargs -r md5sum 2>/dev/null"
    before = gpu.run(listing).stdout
    discover(gpu)
    assert gpu.run(listing).stdout == before and before
