"""Fixtures for the stand-in tests: servers on 127.0.0.1, always stopped at the end."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from harness.standin_common import OLLAMA_STANDIN, VLLM_STANDIN, Standin, start_ollama, start_vllm

StartOllama = Callable[..., Standin]
StartVllm = Callable[..., Standin]


def load_script(path: Path, name: str) -> ModuleType:
    """Import a stand-in file as a module (for unit tests of its helpers)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ollama_module() -> ModuleType:
    """ollama_standin.py imported as a module."""
    return load_script(OLLAMA_STANDIN, "ollama_standin_under_test")


@pytest.fixture(scope="session")
def vllm_module() -> ModuleType:
    """vllm_standin.py imported as a module."""
    return load_script(VLLM_STANDIN, "vllm_standin_under_test")


@pytest.fixture
def start_ollama_standin(tmp_path: Path) -> Iterator[StartOllama]:
    """Factory: start_ollama_standin(env={...}, models_dir=...) -> Standin; all stopped after."""
    started: list[Standin] = []

    def start(env: dict[str, str] | None = None, models_dir: Path | None = None, **kwargs: object) -> Standin:
        standin = start_ollama(models_dir or tmp_path / "models", env, log_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(standin)
        return standin

    yield start
    for standin in started:
        standin.stop()


@pytest.fixture
def start_vllm_standin(tmp_path: Path) -> Iterator[StartVllm]:
    """Factory: start_vllm_standin(args, env={...}) -> Standin; all stopped after the test."""
    started: list[Standin] = []

    def start(args: list[str] | None = None, env: dict[str, str] | None = None, **kwargs: object) -> Standin:
        standin = start_vllm(
            args or ["serve", "org/tiny", "--served-model-name", "tiny"], env, log_dir=tmp_path, **kwargs
        )  # type: ignore[arg-type]
        started.append(standin)
        return standin

    yield start
    for standin in started:
        standin.stop()


@pytest.fixture(scope="module")
def ollama_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    """One fast Ollama stand-in per module with ``tinyllama`` and ``qwen2.5:0.5b`` pulled."""
    import requests

    tmp = tmp_path_factory.mktemp("ollama-shared")
    standin = start_ollama(tmp / "models", log_dir=tmp)
    try:
        for name in ("tinyllama", "qwen2.5:0.5b"):
            resp = requests.post(f"{standin.base_url}/api/pull", json={"model": name, "stream": False}, timeout=10)
            resp.raise_for_status()
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="module")
def vllm_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    """One fast vLLM stand-in per module: served name ``tiny``, API key ``secret``."""
    tmp = tmp_path_factory.mktemp("vllm-shared")
    standin = start_vllm(
        ["serve", "org/tiny", "--served-model-name", "tiny", "--api-key", "secret", "--max-model-len", "1024"],
        log_dir=tmp,
    )
    try:
        yield standin
    finally:
        standin.stop()
