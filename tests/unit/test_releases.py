"""Release records: templates/releases/release.sh run for real with sh, cp, cmp and sed on folders laid out
like a host's (a vLLM engine's compose folder and unit, or Ollama's unit, drop-in and version marker, in a
temporary root), and gpuctl.releases' choice of target and host commands."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from gpuctl.errors import GpuctlError
from gpuctl.releases import Release, parse_release, release_files, rollback_target
from gpuctl.render import templates_dir
from gpuctl.spec import OllamaSpec, VllmSpec
from harness import mirror

SCRIPT = templates_dir() / "releases" / "release.sh"


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

    def files(self) -> list[str]:
        return [f"compose.yaml={self.config / 'compose.yaml'}", f"unit.service={self.unit}"]

    def release(self, command: str, arg: str = "-", check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["sh", str(SCRIPT), command, str(self.root), arg, *self.files()]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)

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
        "ollama_version": None,
        "spec": None,
    }
    assert engine.release("live").stdout == f"{first}\n"
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


def test_the_first_record_keeps_the_state_folder_readable_and_only_releases_private(tmp_path):
    """Found by the ACME fleet test: a first record under umask 077 made /var/lib/gpuctl 0700, and nginx
    could no longer serve the ACME challenges inside it."""
    engine = Engine(tmp_path / "state")
    engine.live("vllm:v1")
    engine.root = tmp_path / "state" / "gpuctl" / "releases" / "vllm-main"
    argv = [
        "sh",
        "-c",
        f'umask 077; exec sh {SCRIPT} "$@"',
        "release",
        "record",
        str(engine.root),
        "{}",
        *engine.files(),
    ]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode) for p in (engine.root.parent.parent, engine.root.parent, engine.root)
    }
    assert modes == {"gpuctl": 0o755, "releases": 0o700, "vllm-main": 0o700}


def test_live_files_edited_by_hand_match_no_release_and_are_adopted_once(tmp_path):
    engine = Engine(tmp_path)
    engine.record("vllm:v1")
    (engine.config / "compose.yaml").write_text("image: edited-by-hand\n")
    assert [r.current for r in engine.listed()] == [False]
    assert engine.release("live").stdout == "none\n"
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
    refused = engine.release("restore", ids[0], check=False)
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
        "ollama_version": None,
        "spec": None,
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


def test_an_ollama_release_is_its_unit_drop_in_and_installed_version_and_restores_through_the_link(tmp_path):
    """install-ollama.sh and release.sh together, on Ollama's real layout under a scratch root: the version
    marker is read through the /usr/local/lib/ollama link, so switching the binary back makes the old
    release live again, and restoring it writes nothing into another release's files."""
    root = tmp_path / "root"
    unit, dropin = (
        root / "etc/systemd/system/ollama.service",
        root / "etc/systemd/system/ollama.service.d/override.conf",
    )
    dropin.parent.mkdir(parents=True)
    marker = root / "usr/local/lib/ollama/.gpuctl-version"
    files = [f"ollama.service={unit}", f"override.conf={dropin}", f"version={marker}"]
    installer = templates_dir() / "ollama" / "install-ollama.sh"

    def publish(version: str) -> str:
        folder = tmp_path / "mirror" / f"v{version}"
        folder.mkdir(parents=True)
        data = mirror.release_files(version)
        for name, content in data.items():
            (folder / name).write_bytes(content)
        (folder / "sha256sum.txt").write_text(mirror.checksum_file(data))
        return f"file://{folder}"

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout

    def deploy(version: str, keep_alive: str) -> None:
        run(
            "sh",
            str(installer),
            version,
            publish(version),
            str(tmp_path / "dl"),
            str(root / "usr/local"),
            "ollama-linux-amd64.tgz",
        )
        unit.write_text("[Service]\nExecStart=/usr/local/bin/ollama serve\n")
        dropin.write_text(f"[Service]\nEnvironment=OLLAMA_KEEP_ALIVE={keep_alive}\n")
        meta = {"engine": "ollama", "image": f"ollama {version}", "ollama_version": version}
        run("sh", str(SCRIPT), "record", str(tmp_path / "releases"), json.dumps(meta), *files)

    def listed() -> list[Release]:
        out = run("sh", str(SCRIPT), "list", str(tmp_path / "releases"), "-", *files)
        return [parse_release(line) for line in out.splitlines()]

    deploy("0.13.0", "5m")
    deploy("0.13.5", "1h")
    first, second = listed()
    assert (first.ollama_version, first.current, second.ollama_version, second.current) == (
        "0.13.0",
        False,
        "0.13.5",
        True,
    )
    run(
        "sh",
        str(installer),
        "0.13.0",
        "file:///nowhere",
        str(tmp_path / "dl"),
        str(root / "usr/local"),
        "ollama-linux-amd64.tgz",
    )
    assert [r.current for r in listed()] == [False, False]  # binary switched, drop-in not yet
    run("sh", str(SCRIPT), "restore", str(tmp_path / "releases"), first.id, *files)
    assert [r.current for r in listed()] == [True, False]
    assert dropin.read_text().endswith("OLLAMA_KEEP_ALIVE=5m\n")
    newer = root / "usr/local/lib/gpuctl-ollama/0.13.5/lib/ollama/.gpuctl-version"
    assert newer.read_text() == "0.13.5\n"


def test_release_commands_name_each_engines_own_files():
    ollama = OllamaSpec(version="0.13.0")
    assert release_files(ollama) == [
        "ollama.service=/etc/systemd/system/ollama.service",
        "override.conf=/etc/systemd/system/ollama.service.d/override.conf",
        "version=/usr/local/lib/ollama/.gpuctl-version",
    ]
    vllm = VllmSpec(name="main", image="vllm/vllm-openai:v0.32.0", model="m")
    assert release_files(vllm) == [
        "compose.yaml=/etc/gpuctl/vllm-main/compose.yaml",
        "unit.service=/etc/systemd/system/gpuctl-vllm-main.service",
    ]


def test_a_rolled_back_engine_is_verified_as_its_release_ran_it():
    """After a rollback, verify expects what the restored release ran (its recorded settings and Ollama
    version), not the inventory that failed; a release kept as found running has only its version."""
    from gpuctl.releases import engine_of, record_command

    now = OllamaSpec(version="0.40.2", keep_alive="1h")
    then = OllamaSpec(version="0.13.0", keep_alive="-1")
    command = record_command(then)
    recorded = parse_release(
        "1\ttrue\t"
        + json.dumps({"ollama_version": "0.13.0", "spec": json.loads(then.model_dump_json(exclude_unset=True))})
    )
    assert engine_of(now, recorded) == then
    found = parse_release("2\tfalse\t" + json.dumps({"ollama_version": "0.12.6", "spec_sha256": "(as found running)"}))
    assert engine_of(now, found) == now.model_copy(update={"version": "0.12.6"})
    unreadable = parse_release("3\tfalse\t" + json.dumps({"spec": {"version": "0.13.0", "no_such_field": 1}}))
    assert engine_of(now, unreadable) == now
    vllm = VllmSpec(name="main", image="vllm/vllm-openai:v0.32.0", model="m", served_model_name="old")
    newer = vllm.model_copy(update={"served_model_name": "new", "image": "vllm/vllm-openai:v0.33.0"})
    assert (
        engine_of(
            newer,
            parse_release("4\ttrue\t" + json.dumps({"spec": json.loads(vllm.model_dump_json(exclude_unset=True))})),
        )
        == vllm
    )
    assert '"spec": {"version": "0.13.0"' in command  # recorded with every release gpuctl deploys
