"""How a deploy becomes a rollout (gpuctl.rollout.plan): --rolling, --verify and Rollout(...) settings on
groups, read from real inventory files; and bad rollout input as one line of error before any host."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpuctl import inventory
from gpuctl.rollout import plan, rolling_setting
from harness.cli import run_cli

INVENTORY = """
from gpuctl.inventory import Defaults, Host, Ollama, Rollout

canary = [Host("c1", address="192.0.2.1")]
canary_defaults = Defaults(rollout=Rollout(batch=1))
gpu = [Host(f"g{i}", address=f"192.0.2.{10 + i}") for i in range(1, 6)]
gpu_defaults = Defaults(rollout=Rollout(batch="40%", max_failed=1))
dev = [Host("d1", address="192.0.2.30"), Host("d2", address="192.0.2.31")]
defaults = Defaults(ollama=Ollama(version="0.13.0", cpu_fallback=True))
"""


def load(tmp_path: Path, text: str = INVENTORY) -> inventory.Inventory:
    path = tmp_path / "fleet.py"
    path.write_text(textwrap.dedent(text))
    return inventory.load(str(path))


def names(phases) -> list[tuple[str, list[list[str]], int, bool]]:
    return [(p.why, [[h.name for h in b] for b in p.batches()], p.max_failed, p.verify) for p in phases]


@pytest.mark.parametrize(
    ("text", "hosts", "size"),
    [("1", 3, 1), ("2", 3, 2), ("5", 3, 3), ("25%", 10, 3), ("100%", 4, 4), ("1%", 3, 1), (" 50% ", 5, 3)],
)
def test_a_rolling_batch_is_hosts_or_a_share_of_them_rounded_up(text, hosts, size):
    assert rolling_setting(text).size(hosts) == size


@pytest.mark.parametrize("text", ["0", "-1", "abc", "0%", "150%", "1.5"])
def test_a_bad_rolling_batch_is_one_line_of_bad_input(text):
    result = run_cli("deploy", "prod", "--rolling", text, "--yes")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --rolling {text}: ") and result.stderr.count("\n") == 1, result.stderr


def test_groups_with_a_rollout_setting_roll_in_their_own_batches_then_the_rest_at_once(tmp_path):
    hosts = list(load(tmp_path).hosts.values())
    assert names(plan(hosts, None, None, verify=False)) == [
        ("Rollout(batch=1, max_failed=0)", [["c1"]], 0, True),
        ("Rollout(batch='40%', max_failed=1)", [["g1", "g2"], ["g3", "g4"], ["g5"]], 1, True),
        ("all at once", [["d1", "d2"]], 2, False),
    ]
    # --verify verifies the hosts without a setting too; --max-failed overrides every group's.
    assert names(plan(hosts, None, 3, verify=True))[1:] == [
        ("Rollout(batch='40%', max_failed=1)", [["g1", "g2"], ["g3", "g4"], ["g5"]], 3, True),
        ("all at once", [["d1", "d2"]], 2, True),
    ]
    # --rolling makes one sequence of every host, whatever the groups say.
    assert names(plan(hosts, "3", None, verify=False)) == [
        ("--rolling 3", [["c1", "g1", "g2"], ["g3", "g4", "g5"], ["d1", "d2"]], 0, True)
    ]


def test_without_settings_or_flags_a_deploy_is_plain(tmp_path):
    hosts = list(load(tmp_path).hosts.values())
    plain = [h for h in hosts if h.name.startswith("d")]
    assert plan(plain, None, None, verify=False) is None
    assert names(plan(plain, None, None, verify=True)) == [("all at once", [["d1", "d2"]], 2, True)]


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("Rollout(batch=0)", "batch: must be at least 1 host"),
        ("Rollout(batch='all')", "batch: 'all' is neither a number of hosts (2) nor a share of them"),
        ("Rollout(max_failed=-1)", "max_failed: "),
        ("Rollout(bach=2)", "bach: "),
    ],
)
def test_a_bad_rollout_setting_names_file_group_host_and_field(tmp_path, setting, said):
    path = tmp_path / "fleet.py"
    path.write_text(
        "from gpuctl.inventory import Defaults, Host, Rollout\n"
        f'gpu = [Host("g1", address="192.0.2.1")]\ngpu_defaults = Defaults(rollout={setting})\n'
    )
    result = run_cli("check", str(path))
    assert result.exit_code == 2, result.output
    assert "g1" in result.stderr and f"rollout.{said}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_rollback_of_an_engine_no_host_has_is_one_line_before_any_connection():
    result = run_cli("rollback", "prod", "--engine", "vllm:nope", "--yes")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --engine vllm:nope: no such engine on gpu-01, gpu-02, gpu-h100-01")
    assert "(engines: vllm:main)" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_host_with_no_release_before_the_batch_rolls_back_to_the_files_the_deploy_kept():
    """Found in review: an engine deployed before releases existed has no release before the batch; the deploy
    keeps its running files as one ("as found running") before replacing them, and that is the way back."""
    from gpuctl.releases import AS_FOUND, Release
    from gpuctl.rollout import back_to
    from gpuctl.spec import HostSpec, OllamaSpec

    host = HostSpec(name="h", address="192.0.2.1", ollama=OllamaSpec(version="0.13.0", cpu_fallback=True))
    kept = Release("1", "ollama", "ollama 0.12.6", "t", "0", AS_FOUND, "pending", False, "0.12.6")
    new = Release("2", "ollama", "ollama 0.13.0", "t", "0", "abc", "failed", True, "0.13.0")
    choose = back_to({("h", "ollama"): None}, host)
    assert choose(host.ollama, [kept, new]) is kept
    with pytest.raises(Exception, match="nothing to roll back to"):
        choose(host.ollama, [new])
