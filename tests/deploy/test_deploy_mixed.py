"""A fleet of unlike hosts (one Ollama, one vLLM): each host's plan, commands and diffs speak of that
host's own operations and name it. pyinfra shares an operation's hash between hosts by position, so
without gpuctl's per-host names a vLLM host was reported as changing "Ollama | Directory …".

Real fleet hosts over SSH, dry runs only (nothing is installed); the Ollama release is the test mirror.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from harness import mirror
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

VERSION = "0.13.0"


def host_entry(host: Host, engine: str) -> str:
    return (
        f"Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r}, "
        f"ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking='yes', {engine})"
    )


def test_mixed_fleet_reports_each_hosts_own_operations_and_names_the_host_in_diffs(fleet: Fleet, tmp_path):
    ollama_host, vllm_host = fleet.new_host("mixo"), fleet.new_host("mixv")
    mirror.serve(ollama_host)
    mirror.publish(ollama_host, VERSION)
    ollama = f"ollama=Ollama(version={VERSION!r}, cpu_fallback=True, release_url={mirror.MIRROR_URL!r})"
    vllm = (
        'docker=dict(packages=["docker.io", "docker-compose-plugin"]), '
        'vllm=Vllm(image="gpuctl-test/vllm-standin:v0.32.0", model="org/tiny-model", gpu_access="none")'
    )
    inventory = tmp_path / "mixed.py"
    inventory.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Host, Ollama, Vllm
        laptops = [{host_entry(ollama_host, ollama)}]
        servers = [{host_entry(vllm_host, vllm)}]
    """)
    )
    result = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--dry", "--json"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    hosts = {h["host"]: h for h in json.loads(result.stdout)["hosts"]}
    ollama_ops, vllm_ops = hosts["mixo"]["changes"], hosts["mixv"]["changes"]
    assert ollama_ops and all(op.startswith("Ollama | ") for op in ollama_ops), ollama_ops
    assert vllm_ops and all(
        op.startswith(("Docker | ", "vLLM engine | ", "Engine healing | ", "Directory ", "File ")) for op in vllm_ops
    ), vllm_ops
    assert not [op for op in vllm_ops if "Ollama" in op or "ollama" in op]
    assert not [op for op in ollama_ops if "vLLM" in op or "Docker" in op]
    assert set(hosts["mixv"]["commands"]) == set(vllm_ops) and set(hosts["mixo"]["commands"]) == set(ollama_ops)

    diff = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--dry", "--diff"], capture_output=True, text=True, timeout=300
    )
    assert diff.returncode == 0, diff.stderr
    assert "+++ mixo:/etc/systemd/system/ollama.service.d/override.conf (rendered)" in diff.stdout
    assert "+++ mixv:/etc/gpuctl/vllm-main/compose.yaml (rendered)" in diff.stdout
    headers = [line for line in diff.stdout.splitlines() if line.startswith(("--- ", "+++ "))]
    assert headers and all(line[4:].startswith(("mixo:/", "mixv:/")) for line in headers), headers
