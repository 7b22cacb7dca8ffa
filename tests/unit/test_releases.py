"""Release records: templates/vllm/release.sh run for real with sh, cp, cmp and sed on folders laid out like
a host's (the engine's compose folder and unit in a temporary root), and gpuctl.releases' choice of target."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from gpuctl.errors import GpuctlError
from gpuctl.releases import Release, rollback_target
from gpuctl.render import templates_dir

SCRIPT = templates_dir() / "vllm" / "release.sh"


class Engine:
    """A host's vLLM engine laid out under TMP: config folder, unit, and the releases root."""

    def __init__(self, tmp: Path) -> None:
        self.root, self.config, self.unit = tmp / "releases" / "vllm-main", tmp / "etc" / "vllm-main", tmp / "unit"
        self.config.mkdir(parents=True)

    def live(self, image: str, secret: str = "VLLM_API_KEY='sk-1'") -> None:
        (self.config / "compose.yaml").write_text(f"image: {image}\n")
        env = self.config / "vllm.env"
        env.write_text(secret + "\n")
        env.chmod(0o600)
        self.unit.write_text("[Service]\n")

    def release(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["sh", str(SCRIPT), command, str(self.root), str(self.config), str(self.unit), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)

    def record(self, image: str) -> str:
        self.live(image)
        meta = json.dumps({"engine": "vllm:main", "image": image, "gpuctl_version": "0", "spec_sha256": "x"})
        out = self.release("record", meta).stdout
        return out.strip().removeprefix("recorded release ")

    def listed(self) -> list[dict]:
        return [json.loads(line) for line in self.release("list").stdout.splitlines()]


def test_record_list_mark_and_restore(tmp_path):
    engine = Engine(tmp_path)
    first = engine.record("vllm:v1")
    assert engine.listed()[0] | {"created": "-"} == {
        "current": True,
        "id": first,
        "created": "-",
        "verify": "pending",
        "engine": "vllm:main",
        "image": "vllm:v1",
        "gpuctl_version": "0",
        "spec_sha256": "x",
    }
    assert engine.release("mark", "passed").stdout == f"release {first}: verify passed\n"
    second = engine.record("vllm:v2")
    assert second > first  # UTC times sort in time order, a second within one second gets -2
    listed = engine.listed()
    assert [(r["id"], r["image"], r["verify"], r["current"]) for r in listed] == [
        (first, "vllm:v1", "passed", False),
        (second, "vllm:v2", "pending", True),
    ]
    assert engine.release("restore", first).stdout == f"restored release {first}\n"
    assert (engine.config / "compose.yaml").read_text() == "image: vllm:v1\n"
    assert [r["current"] for r in engine.listed()] == [True, False]
    # Secrets stay private: the folder is 0700, the env file keeps 0600, release.json holds no secret.
    assert stat.S_IMODE(engine.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((engine.root / second / "vllm.env").stat().st_mode) == 0o600
    assert stat.S_IMODE((engine.config / "vllm.env").stat().st_mode) == 0o600
    assert "sk-1" not in (engine.root / second / "release.json").read_text()


def test_live_files_edited_by_hand_match_no_release(tmp_path):
    engine = Engine(tmp_path)
    engine.record("vllm:v1")
    (engine.config / "compose.yaml").write_text("image: edited-by-hand\n")
    assert [r["current"] for r in engine.listed()] == [False]
    assert engine.release("mark", "failed").stdout == "no recorded release matches the live files\n"


def test_only_the_newest_ten_are_kept_and_an_unknown_release_is_refused(tmp_path):
    engine = Engine(tmp_path)
    ids = [engine.record(f"vllm:v{i}") for i in range(12)]
    assert [r["id"] for r in engine.listed()] == ids[2:]
    refused = subprocess.run(
        ["sh", str(SCRIPT), "restore", str(engine.root), str(engine.config), str(engine.unit), ids[0]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (refused.returncode, refused.stderr) == (1, f"no release {ids[0]} under {engine.root}\n")
    assert not any(name.endswith(".part") for name in os.listdir(engine.root))


def release(id: str, verify: str = "passed", current: bool = False) -> Release:
    return Release(id, "vllm:main", "img", id, "0", "x", verify, current)


def test_the_target_is_the_newest_verified_release_older_than_the_live_one():
    recorded = [release("1"), release("2", "failed"), release("3"), release("4", "pending", current=True)]
    assert rollback_target(recorded, None).id == "3"
    assert rollback_target(recorded[:2] + [release("3", current=True)], None).id == "1"  # 2 failed verify
    assert rollback_target(recorded, "2").id == "2"  # named: taken as it is
    with pytest.raises(GpuctlError, match=r"no release 9 \(recorded: 1, 2, 3, 4\)"):
        rollback_target(recorded, "9")
    with pytest.raises(GpuctlError, match="no verified release older than the live one"):
        rollback_target([release("1", "failed"), release("2", current=True)], None)


@pytest.mark.parametrize(
    ("text", "hosts", "size"),
    [("1", 3, 1), ("2", 3, 2), ("5", 3, 3), ("25%", 10, 3), ("100%", 4, 4), ("1%", 3, 1), (" 50% ", 5, 3)],
)
def test_a_rolling_batch_is_hosts_or_a_share_of_them_rounded_up(text, hosts, size):
    from gpuctl.rollout import batch_size

    assert batch_size(text, hosts) == size


@pytest.mark.parametrize("text", ["0", "-1", "abc", "0%", "150%", "1.5"])
def test_a_bad_rolling_batch_is_one_line_of_bad_input(text):
    from harness.cli import run_cli

    result = run_cli("deploy", "prod", "--rolling", text, "--yes")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --rolling {text}: ") and result.stderr.count("\n") == 1, result.stderr
