"""On a machine without systemd as PID 1 (a container, WSL without systemd) deploy and verify say so
up front, in one sentence, instead of pyinfra's fact error or "ollama.service is ? and ?".

This machine is such a machine (TESTING.md: PID 1 is not systemd here); the test is skipped where
systemd runs. The deploy stops at its first fact (`test -d /run/systemd/system`): nothing is changed.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.cli import run_cli

pytestmark = pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd runs here")

SAID = (
    "this machine does not run systemd as PID 1 (a container, or WSL without systemd): gpuctl runs engines "
    "as systemd services; use a host or VM with systemd (WSL: [boot] systemd=true in /etc/wsl.conf)"
)


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "lap.py").write_text(
        textwrap.dedent("""
        from gpuctl.inventory import Host, Ollama
        laptop = [Host("lap", local=True, ollama=Ollama(version="0.40.2", port=11998, cpu_fallback=True))]
    """)
    )
    return tmp_path


def test_deploy_says_systemd_is_needed_before_any_change(laptop):
    result = run_cli("deploy", "lap", "--yes", "--json", cwd=laptop)
    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["hosts"]
    assert (outcome["status"], outcome["failed_operation"], outcome["error"]) == ("failed", "prepare", SAID)
    assert not Path("/etc/systemd/system/ollama.service.d/override.conf").exists()


def test_verify_says_systemd_is_needed_and_how_to_deploy(laptop):
    result = run_cli("verify", "lap", cwd=laptop)
    assert result.exit_code == 1
    report = json.loads(run_cli("verify", "lap", "--json", cwd=laptop).stdout)
    checks = {c["name"]: c["reason"] for c in report["engines"][0]["checks"]}
    assert checks["unit"] == SAID
    assert (
        checks["version"]
        == "nothing answers on 127.0.0.1:11998 (connection refused): is the engine deployed and running?"
    )
    assert "hint: nothing answered; to deploy it: gpuctl deploy inventories/lap.py --limit lap" in result.stderr
