"""Release records: templates/vllm/release.sh run for real with sh, cp, cmp and sed on folders laid out like
a host's (the engine's compose folder and unit in a temporary root), and gpuctl.releases' choice of target."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from gpuctl.errors import GpuctlError
from gpuctl.releases import Release, parse_release, rollback_target
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

    def record(self, image: str, command: str = "record") -> str:
        self.live(image)
        meta = json.dumps({"engine": "vllm:main", "image": image, "gpuctl_version": "0", "spec_sha256": "x"})
        out = self.release(command, meta).stdout
        return out.strip().removeprefix("recorded release ")

    def listed(self) -> list[Release]:
        return [parse_release(line) for line in self.release("list").stdout.splitlines()]


def test_record_list_mark_and_restore(tmp_path):
    engine = Engine(tmp_path)
    first = engine.record("vllm:v1")
    [only] = engine.listed()
    assert only.as_dict() | {"created": "-"} == {
        "id": first,
        "engine": "vllm:main",
        "image": "vllm:v1",
        "created": "-",
        "gpuctl_version": "0",
        "spec_sha256": "x",
        "verify": "pending",
        "current": True,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", only.created)
    assert engine.release("mark", "passed").stdout == f"release {first}: verify passed\n"
    second = engine.record("vllm:v2")
    assert second > first  # UTC times sort in time order, a second within one second gets -002
    assert [(r.id, r.image, r.verify, r.current) for r in engine.listed()] == [
        (first, "vllm:v1", "passed", False),
        (second, "vllm:v2", "pending", True),
    ]
    (engine.config / "vllm.env").write_text("VLLM_API_KEY='sk-rotated'\n")
    assert engine.release("restore", first).stdout == f"restored release {first}\n"
    assert (engine.config / "compose.yaml").read_text() == "image: vllm:v1\n"
    assert [r.current for r in engine.listed()] == [True, False]
    # Secrets are not kept: a release runs with the live env file, so a rollback keeps a rotated key.
    assert (engine.config / "vllm.env").read_text() == "VLLM_API_KEY='sk-rotated'\n"
    assert sorted(os.listdir(engine.root / second)) == ["compose.yaml", "release.json", "unit.service"]
    assert stat.S_IMODE(engine.root.stat().st_mode) == 0o700


def test_live_files_edited_by_hand_match_no_release_and_are_adopted_once(tmp_path):
    engine = Engine(tmp_path)
    engine.record("vllm:v1")
    (engine.config / "compose.yaml").write_text("image: edited-by-hand\n")
    assert [r.current for r in engine.listed()] == [False]
    assert engine.release("mark", "failed").stdout == "no recorded release matches the live files\n"
    meta = json.dumps({"engine": "vllm:main", "image": "(as found running)"})
    adopted = engine.release("adopt", meta).stdout
    assert adopted.startswith("recorded release ")
    assert engine.release("adopt", meta).stdout.startswith("the live files are a recorded release already")
    assert [(r.image, r.current) for r in engine.listed()] == [("vllm:v1", False), ("(as found running)", True)]


def test_pruning_keeps_ten_and_never_the_live_or_the_newest_verified_release(tmp_path):
    engine = Engine(tmp_path)
    good = engine.record("vllm:good")
    engine.release("mark", "passed")
    ids = [engine.record(f"vllm:bad{i}") for i in range(12)]  # twelve failed rollouts in a row
    listed = [r.id for r in engine.listed()]
    assert listed == [good, *ids[-9:]] and len(listed) == 10
    refused = subprocess.run(
        ["sh", str(SCRIPT), "restore", str(engine.root), str(engine.config), str(engine.unit), ids[0]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (refused.returncode, refused.stderr) == (1, f"no release {ids[0]} under {engine.root}\n")


def test_an_interrupted_record_is_no_release_and_is_cleared_by_the_next(tmp_path):
    engine = Engine(tmp_path)
    first = engine.record("vllm:v1")
    leftover = engine.root / "20990101T000000Z.part"
    leftover.mkdir()
    (leftover / "release.json").write_text("{}")
    assert [r.id for r in engine.listed()] == [first]
    engine.record("vllm:v2")
    assert not leftover.exists()


def test_a_release_json_edited_by_hand_still_lists_with_question_marks():
    assert parse_release("20261205T010000Z\ttrue\t{not json").as_dict() == {
        "id": "20261205T010000Z",
        "engine": "?",
        "image": "?",
        "created": "?",
        "gpuctl_version": "?",
        "spec_sha256": "?",
        "verify": "?",
        "current": True,
    }
    assert parse_release('20261205T010000Z\tfalse\t{"image": "x"}').image == "x"


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
