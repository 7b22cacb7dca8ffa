"""`gpuctl discover`: the host's facts (templates/discover/host-facts.sh, run for real on this machine and
parsed), the engine and model proposed by the planner, and an entry that `gpuctl check` and `gpuctl plan`
accept. GPU hosts are described by host-facts output shaped like real nvidia-smi/lspci (stand-in text:
no GPU here; the real capture of the H100 host is in tests/data)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gpuctl.discover import facts_command, host_name, parse, pci_name, propose
from harness.cli import run_cli

RTX_4090 = """os_id=ubuntu
os_version=24.04
os_name=Ubuntu 24.04.3 LTS
kernel=6.8.0-85-generic
arch=x86_64
cpus=32
cpu_model=AMD EPYC 9354 32-Core Processor
mem_kib=263000000
disk_avail_bytes=900000000000
docker=none
toolkit=none
smi_gpu=GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-5b1c0a38-4b2c-8f8e-2e4b-0c9d1b7a6e11)
smi_gpu=GPU 1: NVIDIA GeForce RTX 4090 (UUID: GPU-7e2f5d44-9a0b-4c3d-8e1f-2a3b4c5d6e7f)
smi_memory=0, GPU-5b1c0a38-4b2c-8f8e-2e4b-0c9d1b7a6e11, 24564, 1
smi_memory=1, GPU-7e2f5d44-9a0b-4c3d-8e1f-2a3b4c5d6e7f, 24564, 1
driver=580.95.05
cuda=13.0
pci_gpu=01:00.0 VGA compatible controller [0300]: NVIDIA Corporation AD102 [GeForce RTX 4090] [10de:2684] (rev a1)
pci_gpu=02:00.0 VGA compatible controller [0300]: NVIDIA Corporation AD102 [GeForce RTX 4090] [10de:2684] (rev a1)
nvswitches=0
"""


def test_the_facts_script_runs_here_and_reads_this_machine():
    out = subprocess.run(["sh", "-c", facts_command()], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = parse(out.stdout)
    assert (found.os_id, found.arch, found.gpus) == ("debian", "x86_64", [])  # this machine: no GPU
    assert found.cpus >= 1 and found.ram_gib > 1 and found.disk_free_gib and found.disk_free_gib > 0


def test_gpus_come_from_nvidia_smi_or_else_the_pci_bus():
    found = parse(RTX_4090)
    assert [(g.name, g.memory_mib) for g in found.gpus] == [("NVIDIA GeForce RTX 4090", 24564)] * 2
    assert (found.driver, found.cuda, found.docker) == ("580.95.05", "13.0", None)
    no_driver = parse("\n".join(line for line in RTX_4090.splitlines() if not line.startswith("smi_")))
    assert [g.name for g in no_driver.gpus] == ["GeForce RTX 4090"] * 2
    assert pci_name("00:06.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)") == (
        "H100 SXM5 80GB"
    )


@pytest.mark.parametrize(
    ("users", "engine", "says"),
    [(1, "ollama", "Ollama(version="), (16, "vllm", "tensor_parallel_size=2")],
)
def test_the_entry_is_an_inventory_that_check_and_plan_accept(tmp_path, users, engine, says):
    proposal = propose("gpu-01", "203.0.113.9", parse(RTX_4090), users)
    assert proposal.engine == engine and proposal.plan is not None and proposal.plan.verdict == "fits"
    text = proposal.as_dict()["entry"]
    assert says in text and "Gpu(model='RTX 4090', count=2, memory_gib=24.0" in text
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "gpu-01.py").write_text(text)
    env = {"VLLM_API_KEY": "x", "HF_TOKEN": "y"}
    assert run_cli("check", "gpu-01", cwd=tmp_path, env=env).exit_code == 0
    plan = run_cli("plan", "gpu-01", "--json", cwd=tmp_path, env=env)
    assert plan.exit_code == 0 and {e["verdict"] for e in json.loads(plan.stdout)["engines"]} == {"fits"}


def test_discover_local_prints_the_facts_and_an_entry(tmp_path):
    result = run_cli("discover", "--local", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["found"]["os_id"] == "debian" and data["proposal"]["engine"] == "ollama"
    (tmp_path / "local.py").write_text(data["proposal"]["entry"])
    assert run_cli("check", str(tmp_path / "local.py")).exit_code == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "error: give an ADDRESS to reach over SSH, or --local for this machine"),
        (["203.0.113.9", "--local"], "error: give an ADDRESS to reach over SSH, or --local for this machine"),
        (["http://203.0.113.9"], "error: http://203.0.113.9: "),
    ],
)
def test_bad_discover_input_is_one_line(args, said):
    result = run_cli("discover", *args)
    assert result.exit_code == 2 and result.stderr.startswith(said) and result.stderr.count("\n") == 1, result.stderr


def test_host_names_from_addresses():
    assert [host_name(a) for a in ("gpu-07.example.com", "203.0.113.9", "2001:db8::5")] == [
        "gpu-07",
        "host-203-0-113-9",
        "host-2001-db8-5",
    ]


def test_the_real_h100_capture_is_read_as_one_h100(tmp_path):
    """tests/data/nvidia-smi-h100.txt is a real H100 host's nvidia-smi banner: its CUDA version is what
    host-facts.sh's sed extracts."""
    banner = (Path(__file__).parents[1] / "data" / "nvidia-smi-h100.txt").read_text()
    sed = r"s/.*CUDA\( UMD\)\{0,1\} Version: *\([0-9.]*\).*/\2/p"
    cuda = subprocess.run(["sed", "-n", sed], input=banner, capture_output=True, text=True).stdout.split()
    assert cuda[:1] == ["13.0"], cuda


def test_discover_out_writes_the_entry_and_never_overwrites(tmp_path):
    out = tmp_path / "local.py"
    assert run_cli("discover", "--local", "--out", str(out)).exit_code == 0
    assert out.read_text().startswith("from gpuctl.inventory import Host, Ollama\n")
    again = run_cli("discover", "--local", "--out", str(out))
    assert again.exit_code == 2 and "exists already" in again.stderr
