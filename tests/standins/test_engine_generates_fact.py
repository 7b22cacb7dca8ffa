"""deploy's generation probe (gpuctl.deploy.facts.EngineGenerates), its shell command run for real with
`sh` against the vLLM STAND-IN on loopback: a healthy engine gives a token; one that answers /health but
hangs gives none in time; the key travels from the 0600 env file to curl on stdin, never in argv."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from gpuctl.deploy.facts import EngineGenerates

KEY = "secret"


def probe(standin, env_file: Path, timeout_s: int = 3) -> tuple[bool, str]:
    fact = EngineGenerates()
    command = fact.command(standin.base_url.removeprefix("http://"), str(env_file), "tiny", timeout_s)
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout_s + 10)
    return fact.process(out.stdout.splitlines()), command


def test_a_generating_engine_passes_and_the_key_stays_off_the_command_line(start_vllm_standin, tmp_path):
    standin = start_vllm_standin(["serve", "org/tiny", "--served-model-name", "tiny", "--api-key", KEY])
    env_file = tmp_path / "vllm.env"
    env_file.write_text(f"VLLM_API_KEY='{KEY}'\n")
    ok, command = probe(standin, env_file)
    assert ok is True
    assert KEY not in command
    env_file.write_text("VLLM_API_KEY='wrong-key-0123456789'\n")
    assert probe(standin, env_file)[0] is False  # 401 is not a token


def test_an_engine_that_answers_health_but_hangs_fails_the_probe(start_vllm_standin, tmp_path):
    standin = start_vllm_standin()
    requests.post(f"{standin.base_url}/standin/fault", json={"mode": "hang"}, timeout=5).raise_for_status()
    assert requests.get(f"{standin.base_url}/health", timeout=5).status_code == 200
    (tmp_path / "vllm.env").write_text("")
    assert probe(standin, tmp_path / "vllm.env", timeout_s=2)[0] is False
    requests.post(f"{standin.base_url}/standin/fault", json={"mode": "none"}, timeout=5).raise_for_status()
    assert probe(standin, tmp_path / "vllm.env")[0] is True
