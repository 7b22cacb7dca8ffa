"""The hybrid pattern's inventory side: one model name on vLLM and Ollama (`Model(...)`), and `gpuctl env`,
which gives an application what it needs for a target as eval-able shell, dotenv or JSON."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from gpuctl import inventory
from harness.cli import REPO, run_cli

HYBRID = """
from gpuctl.inventory import Gateway, Host, Model, Ollama, Secret, Vllm

LLAMA = Model("llama-3.1-8b", vllm="meta-llama/Llama-3.1-8B-Instruct", ollama="llama3.1:8b")
lab = [
    Host("prod-01", address="192.0.2.21", gateway=Gateway(),
         vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model=LLAMA, gpu_access="none")),
    Host("dev-01", address="192.0.2.22", gateway=Gateway(api_key=Secret.env("DEV_GATEWAY_KEY")),
         ollama=Ollama(version="0.13.0", cpu_fallback=True, models=[LLAMA, "qwen2.5:0.5b"])),
    Host("bare", address="192.0.2.23", ollama=Ollama(version="0.13.0", cpu_fallback=True, models=["qwen2.5:0.5b"])),
    Host("open", address="192.0.2.24", vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model="org/m", gpu_access="none",
         bind="0.0.0.0", unsafe_public_bind=True, api_key=Secret.file("engine.key"))),
]
"""


def write(tmp_path: Path, text: str = HYBRID) -> Path:
    path = tmp_path / "lab.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_one_model_is_served_under_one_name_by_vllm_and_named_so_by_ollama(tmp_path):
    hosts = inventory.load(str(write(tmp_path))).hosts
    [engine] = hosts["prod-01"].vllm
    assert (engine.model, engine.served_name) == ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b")
    ollama = hosts["dev-01"].ollama
    assert ollama.models == ["llama3.1:8b", "qwen2.5:0.5b"]
    assert ollama.aliases == {"llama-3.1-8b": "llama3.1:8b"}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            (
                'LLAMA = Model("llama-3.1-8b", vllm="meta-llama/Llama-3.1-8B-Instruct", ollama="llama3.1:8b")',
                'LLAMA = Model("llama-3.1-8b", ollama="llama3.1:8b")',
            ),
            "prod-01: vllm.model: Model('llama-3.1-8b') names no vllm= weights for this vLLM engine",
        ),
        (
            ("model=LLAMA, gpu_access", 'model=LLAMA, served_model_name="llama", gpu_access'),
            "prod-01: vllm.served_model_name: 'llama' differs from the Model's name 'llama-3.1-8b': the Model names "
            "it on every engine",
        ),
        (
            ('Model("llama-3.1-8b"', 'Model("Llama3:8b"'),
            "prod-01: vllm.model.name: 'Llama3:8b': use lowercase letters, digits",
        ),
        (
            ('models=["qwen2.5:0.5b"])),', 'models=["qwen2.5:0.5b"], aliases={"chat": "tinyllama"})),'),
            "bare: ollama.aliases: 'chat' copies 'tinyllama', which models= does not pull: add it there",
        ),
    ],
)
def test_a_bad_model_identity_is_one_line_naming_host_and_field(tmp_path, change, said):
    path = write(tmp_path, HYBRID.replace(*change))
    result = run_cli("check", str(path))
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())  # one line per error


def test_the_example_laptop_and_production_serve_one_model_name():
    """`gpuctl env dev-laptop` and `gpuctl env prod` give the same OPENAI_MODEL: the app needs no change."""
    laptop = inventory.load("dev-laptop", cwd=REPO).hosts["dev-laptop"].ollama
    prod = inventory.load("prod", cwd=REPO).hosts
    assert laptop.aliases == {"llama-3.1-8b": "qwen2.5:0.5b"}  # the tiny CPU model, under production's name
    assert {e.served_name for h in ("gpu-01", "gpu-02") for e in prod[h].vllm} == {"llama-3.1-8b"}
    models = [
        json.loads(run_cli("env", name, "--format", "json", cwd=REPO).stdout)["OPENAI_MODEL"]
        for name in ("dev-laptop", "prod")
    ]
    assert models == ["llama-3.1-8b", "llama-3.1-8b"]


def test_env_of_a_gateway_host_reads_its_key_by_reference_and_trusts_its_ca(tmp_path):
    path = write(tmp_path)
    keys = tmp_path / ".gpuctl" / "lab"
    keys.mkdir(parents=True)
    (keys / "prod-01.api-key").write_text("sk-gateway-0123456789abcdef0123456789abcdef\n")
    result = run_cli("env", "prod-01", "-i", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        "export OPENAI_BASE_URL=https://192.0.2.21/v1",
        "export OPENAI_MODEL=llama-3.1-8b",
        f"export SSL_CERT_FILE={keys / 'ca.pem'}",
        f'export OPENAI_API_KEY="$(cat {keys / "prod-01.api-key"})"',
    ]
    assert "sk-gateway" not in result.stdout
    # Sourced by a real shell, the key is read from its file.
    shown = subprocess.run(
        ["bash", "-c", 'eval "$1"; echo "$OPENAI_API_KEY $OPENAI_MODEL"', "-", result.stdout],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert shown.stdout == "sk-gateway-0123456789abcdef0123456789abcdef llama-3.1-8b\n"
    revealed = run_cli("env", "prod-01", "-i", str(path), "--format", "dotenv", "--reveal")
    assert "OPENAI_API_KEY=sk-gateway-0123456789abcdef0123456789abcdef" in revealed.stdout


def test_env_of_an_ollama_host_names_the_shared_model_and_its_key_variable(tmp_path, monkeypatch):
    path = write(tmp_path)
    env = json.loads(run_cli("env", "dev-01", "-i", str(path), "--format", "json").stdout)
    assert env["OPENAI_MODEL"] == "llama-3.1-8b"  # the alias, not the tag it copies
    assert env["OPENAI_API_KEY"] == {"env": "DEV_GATEWAY_KEY"}
    shell = run_cli("env", "dev-01", "-i", str(path)).stdout
    assert 'export OPENAI_API_KEY="${DEV_GATEWAY_KEY:?set DEV_GATEWAY_KEY (the API key)}"' in shell
    dotenv = run_cli("env", "dev-01", "-i", str(path), "--format", "dotenv").stdout
    assert "# OPENAI_API_KEY: the value of environment variable DEV_GATEWAY_KEY" in dotenv
    monkeypatch.setenv("DEV_GATEWAY_KEY", "sk-dev-0123456789abcdef0123456789abcdef")
    assert (
        json.loads(run_cli("env", "dev-01", "-i", str(path), "--format", "json", "--reveal").stdout)["OPENAI_API_KEY"]
        == os.environ["DEV_GATEWAY_KEY"]
    )


def test_env_of_an_engine_without_a_gateway(tmp_path):
    path = write(tmp_path)
    (tmp_path / "engine.key").write_text("sk-engine-0123456789abcdef0123456789abcdef\n")
    opened = json.loads(run_cli("env", "open", "-i", str(path), "--format", "json").stdout)
    assert opened["OPENAI_BASE_URL"] == "http://192.0.2.24:8000/v1"
    assert opened["OPENAI_API_KEY"] == {"file": str(tmp_path / "engine.key")}
    assert opened["SSL_CERT_FILE"] is None
    bare = run_cli("env", "bare", "-i", str(path))
    assert bare.exit_code == 2
    assert bare.stderr.startswith(
        "error: bare: ollama listens on 127.0.0.1 and the host has no gateway, so no application elsewhere "
        "reaches it: add gateway=Gateway()"
    )
    laptop = run_cli("env", "dev-laptop", cwd=REPO).stdout.splitlines()[1:]
    assert laptop == [
        "export OPENAI_BASE_URL=http://127.0.0.1:11434/v1",
        "export OPENAI_MODEL=llama-3.1-8b",
        "unset SSL_CERT_FILE",  # switching from production must not keep its CA
        "export OPENAI_API_KEY=ollama",  # Ollama checks no key; the client needs one (Ollama's docs use 'ollama')
    ]


def test_env_of_an_inventory_says_which_engine_it_chose(tmp_path):
    path = write(tmp_path)
    first = run_cli("env", str(path))
    assert first.stdout.splitlines()[0] == (
        "# gpuctl env: prod-01 vllm:main (the first of 4 engines of "
        f"{path}; others: dev-01 ollama, bare ollama, open vllm:main; name a host, or use --model)"
    )
    by_model = json.loads(run_cli("env", str(path), "--model", "qwen2.5:0.5b", "--format", "json").stdout)
    assert (by_model["host"], by_model["note"]) == (
        "dev-01",
        "the first of 2 engines of " + str(path) + "; others: bare ollama; name a host, or use --model",
    )
    missing = run_cli("env", str(path), "--model", "gpt-4")
    assert missing.exit_code == 2
    assert missing.stderr == (
        f"error: {path}: no engine serves model gpt-4 (served: llama-3.1-8b, llama3.1:8b, org/m, qwen2.5:0.5b)\n"
    )


def test_env_of_a_named_model_gives_that_name(tmp_path):
    """--model picks the engine serving that name, alias or tag, and exports the name asked for."""
    path = write(tmp_path)
    tag = json.loads(run_cli("env", "dev-01", "-i", str(path), "--model", "qwen2.5:0.5b", "--format", "json").stdout)
    assert tag["OPENAI_MODEL"] == "qwen2.5:0.5b"
    latest = json.loads(run_cli("env", str(path), "--model", "llama3.1:8b", "--format", "json").stdout)
    assert (latest["host"], latest["OPENAI_MODEL"]) == ("dev-01", "llama3.1:8b")


def test_a_hosts_model_replaces_the_groups_whole(tmp_path):
    """A Model merges as one value: the host's Model without vllm= weights does not borrow the group's."""
    text = """
    from gpuctl.inventory import Defaults, Host, Model, Vllm
    g = [Host("a", address="192.0.2.31", vllm=Vllm(model=Model("chat2", ollama="qwen2.5:0.5b")))]
    g_defaults = Defaults(vllm=Vllm(image="vllm/vllm-openai:v0.32.0", gpu_access="none",
                                    model=Model("chat", vllm="org/a"), served_model_name="chat"))
    """
    result = run_cli("check", str(write(tmp_path, text)))
    assert result.exit_code == 2
    assert "a: vllm.model: Model('chat2') names no vllm= weights for this vLLM engine" in result.stderr
    fixed = text.replace('Model("chat2", ollama="qwen2.5:0.5b")', 'Model("chat2", vllm="org/b")')
    [engine] = inventory.load(str(write(tmp_path, fixed))).hosts["a"].vllm
    assert (engine.model, engine.served_name) == ("org/b", "chat2")


def test_a_loopback_ipv6_engine_without_gateway_hints_a_bracketed_tunnel(tmp_path):
    text = HYBRID.replace(
        'Host("bare", address="192.0.2.23", ollama=Ollama(',
        'Host("bare", address="192.0.2.23", ollama=Ollama(bind="::1", ',
    )
    result = run_cli("env", "bare", "-i", str(write(tmp_path, text)))
    assert "ssh -L 11434:[::1]:11434 192.0.2.23" in result.stderr
