"""templates/vllm/heal-engines.sh, run for real with `sh`: it restarts an engine whose container is
unhealthy, backs off while it stays unhealthy, forgets once it is healthy, and leaves alone a unit that
is not active. `docker` and `systemctl` are STAND-INS on PATH (small scripts answering from files and
recording the restarts asked for): no Docker or systemd runs here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "templates" / "vllm" / "heal-engines.sh"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\ncat "{tmp_path}/health-$4" 2>/dev/null\n')
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = is-active ]; then cat "{tmp_path}/active-$2" 2>/dev/null || echo inactive; exit 0; fi\n'
        f'echo "$*" >> "{tmp_path}/asked"\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return tmp_path


def heal(host: Path, health: str, active: str = "active") -> tuple[str, list[str]]:
    (host / "health-gpuctl-vllm-a").write_text(health + "\n")
    (host / "active-gpuctl-vllm-a.service").write_text(active + "\n")
    result = subprocess.run(
        ["sh", str(SCRIPT), str(host / "state"), "gpuctl-vllm-a.service=gpuctl-vllm-a"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{host / 'bin'}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    asked = (host / "asked").read_text().splitlines() if (host / "asked").exists() else []
    return result.stdout.strip(), asked


def test_an_unhealthy_engine_is_restarted_once_then_backed_off(host):
    said, asked = heal(host, "unhealthy")
    assert said == "gpuctl-vllm-a is unhealthy: restarting gpuctl-vllm-a.service (restart 1 while unhealthy)"
    assert asked == ["--no-block restart gpuctl-vllm-a.service"]
    said, asked = heal(host, "unhealthy")
    assert said.startswith("gpuctl-vllm-a is unhealthy; next restart of gpuctl-vllm-a.service in ")
    assert said.endswith(" s (backoff)")
    assert asked == ["--no-block restart gpuctl-vllm-a.service"]  # no second restart inside the backoff


def test_a_healthy_engine_clears_its_count_and_a_starting_one_keeps_it(host):
    heal(host, "unhealthy")
    assert (host / "state" / "gpuctl-vllm-a.service").read_text().split()[0] == "1"
    assert heal(host, "starting") == ("", ["--no-block restart gpuctl-vllm-a.service"])
    assert (host / "state" / "gpuctl-vllm-a.service").exists()
    heal(host, "healthy")
    assert not (host / "state" / "gpuctl-vllm-a.service").exists()
    said, asked = heal(host, "unhealthy")
    assert "(restart 1 while unhealthy)" in said and len(asked) == 2


@pytest.mark.parametrize("state", ["activating", "failed", "inactive"])
def test_a_unit_that_is_not_active_is_left_to_systemd(host, state):
    assert heal(host, "unhealthy", active=state) == ("", [])
