"""The hybrid pattern on real fleet hosts: a laptop-style Ollama host and a vLLM host serve one model name
(`Model("llama-3.1-8b", ...)`), and one application, configured by `eval "$(gpuctl env HOST)"` alone, passes
against both through their gateways.

Stand-ins, named: Ollama is the STAND-IN of harness/ollama_standin.py from the test mirror (its /api/copy
writes the manifest byte for byte, as Ollama's CopyModel does); the vLLM image is the container STAND-IN
(harness/images.py) with gpu_access="none". Real: the official `openai` client, bash, nginx, TLS, Docker,
systemd, SSH, pyinfra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import images, mirror
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

IMAGE = "gpuctl-test/vllm-standin:v0.32.0"
OLLAMA = "0.13.0"
APP = Path(__file__).resolve().parents[1] / "data" / "hybrid_app.py"
ENV = {**os.environ, "GPUCTL_TEST_ENGINE_KEY": "sk-engine-8f14e45fceea167a5a36dedd4bea2543"}


def write_inventory(path: Path, dev: Host, prod: Host) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Gateway, Host, Model, Ollama, Secret, Vllm
        # On the laptop the tiny model answers under production's name.
        LAPTOP = Model("llama-3.1-8b", ollama="qwen2.5:0.5b")
        PROD = Model("llama-3.1-8b", vllm="org/tiny-model")
        hybrid = [
            Host({dev.name!r}, {dev.reach}, gateway=Gateway(),
                 ollama=Ollama(version={OLLAMA!r}, cpu_fallback=True, release_url={mirror.MIRROR_URL!r},
                               models=[LAPTOP])),
            Host({prod.name!r}, {prod.reach}, gateway=Gateway(),
                 docker=dict(packages=["docker.io", "docker-compose-plugin"]),
                 vllm=Vllm(image={IMAGE!r}, model=PROD, gpu_access="none", start_timeout_s=120,
                           api_key=Secret.env("GPUCTL_TEST_ENGINE_KEY"))),
        ]
    """)
    )
    return path


def gpuctl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gpuctl", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def pair(fleet: Fleet) -> Iterator[tuple[Host, Host]]:
    dev, prod = fleet.new_host("dev"), fleet.new_host("prod")
    try:
        mirror.serve(dev)
        mirror.publish(dev, OLLAMA)
        images.install_docker(prod)
        images.load_vllm_standin(fleet, prod, IMAGE)
        yield dev, prod
    finally:
        dev.destroy()
        prod.destroy()


@pytest.fixture(scope="module")
def deployed(pair: tuple[Host, Host], tmp_path_factory) -> Path:
    inventory = write_inventory(tmp_path_factory.mktemp("inv") / "hybrid.py", *pair)
    result = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    changes = {h["host"]: h["changes"] for h in json.loads(result.stdout)["hosts"]}
    assert "Ollama | Name model qwen2.5:0.5b llama-3.1-8b (clients send llama-3.1-8b)" in changes["dev"]
    return inventory


def run_app(target: str, inventory: Path) -> subprocess.CompletedProcess[str]:
    """The application, in a fresh bash that only evals `gpuctl env TARGET` first."""
    script = 'eval "$(gpuctl env "$1" -i "$2")" && exec "$3" "$4"'
    return subprocess.run(
        ["bash", "-c", script, "-", target, str(inventory), sys.executable, str(APP)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in ENV.items() if not k.startswith(("OPENAI_", "SSL_CERT"))},
    )


def test_one_application_passes_against_the_laptop_and_production(pair, deployed):
    dev, prod = pair
    for host in (dev, prod):
        result = run_app(host.name, deployed)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"ok llama-3.1-8b via https://{host.address}/v1/"), result.stdout


def test_verify_checks_the_shared_name_on_both(pair, deployed):
    result = gpuctl("verify", str(deployed), "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    reasons = {(e["host"], c["name"]): c["reason"] for e in json.loads(result.stdout)["engines"] for c in e["checks"]}
    assert reasons[("dev", "models")] == "1 model(s) present, 1 named as applications send them"
    assert reasons[("dev", "openai")] == "/v1 answers as llama-3.1-8b:latest"


def test_a_second_deploy_names_nothing_again(deployed):
    result = gpuctl("deploy", str(deployed), "--yes", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [(h["host"], h["status"]) for h in json.loads(result.stdout)["hosts"]] == [
        ("dev", "unchanged"),
        ("prod", "unchanged"),
    ]


def test_a_name_deleted_on_the_host_is_named_by_verify_and_restored_by_deploy(pair, deployed):
    dev, _ = pair
    dev.run("""curl -fsS -X DELETE http://127.0.0.1:11434/api/delete -d '{"model": "llama-3.1-8b"}'""")
    failed = gpuctl("verify", "dev", "-i", str(deployed), "--json")
    assert failed.returncode == 1
    [engine] = json.loads(failed.stdout)["engines"]
    models = next(c for c in engine["checks"] if c["name"] == "models")
    assert models["reason"] == "llama-3.1-8b is not a name of qwen2.5:0.5b: not listed (gpuctl deploy names it)"
    repaired = gpuctl("deploy", str(deployed), "--limit", "dev", "--yes", "--json")
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert json.loads(repaired.stdout)["hosts"][0]["changes"] == [
        "Ollama | Name model qwen2.5:0.5b llama-3.1-8b (clients send llama-3.1-8b)"
    ]
    assert run_app("dev", deployed).returncode == 0


def test_parity_of_the_laptop_and_production_through_their_gateways(deployed):
    """`gpuctl parity dev prod`: each target as `gpuctl env` gives it (gateway, key, CA), the openai client
    against both; the stand-ins' known differences show (tests/standins/test_parity.py says why)."""
    result = gpuctl("parity", "dev", "prod", "-i", str(deployed), "--require", "chat,stream,tools", "--json")
    report = json.loads(result.stdout)
    print("\nparity dev (Ollama stand-in) vs prod (vLLM stand-in), through their gateways:")
    for name, cells in report["matrix"].items():
        print(f"  {name:22} " + " | ".join(f"{c['status']}: {c['detail'][:60]}" for c in cells))
    assert result.returncode == 1 and report["failing"] == ["tools"]  # production refuses tools
    status = {name: [c["status"] for c in cells] for name, cells in report["matrix"].items()}
    assert status["models"] == status["chat"] == status["stream"] == ["works", "works"]
    assert status["n"] == ["ignored", "works"] and status["max_completion_tokens"] == ["ignored", "works"]
