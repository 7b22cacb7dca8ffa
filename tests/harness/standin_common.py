"""Test-side helpers to run the Ollama and vLLM STAND-INS as local subprocesses.

The stand-ins themselves (``ollama_standin.py``, ``vllm_standin.py``) are single, self-contained
files that never import this module: they get copied onto test hosts and into test images.
This module only starts them on 127.0.0.1 for tests, waits (bounded) until they answer, and
always stops them::

    with start_ollama(models_dir=tmp_path / "models") as ollama:
        requests.post(f"{ollama.base_url}/api/pull", json={"model": "tinyllama"})

    with start_vllm(["serve", "org/model", "--served-model-name", "m"]) as vllm:
        requests.get(f"{vllm.base_url}/health")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

HARNESS_DIR = Path(__file__).resolve().parent
OLLAMA_STANDIN = HARNESS_DIR / "ollama_standin.py"
VLLM_STANDIN = HARNESS_DIR / "vllm_standin.py"
DEFAULT_START_TIMEOUT_S = 15.0


class StandinError(RuntimeError):
    """A stand-in did not start (its log is in the message)."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Standin:
    """A running stand-in process."""

    name: str
    process: subprocess.Popen
    port: int
    log_path: Path
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the process wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status code of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return None


def wait_until_up(standin: Standin, path: str, timeout: float) -> None:
    """Poll ``path`` until it answers 200; StandinError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not standin.alive():
            raise StandinError(f"{standin.name} exited with {standin.process.returncode}:\n{standin.log_text()}")
        if http_status(standin.base_url + path, timeout=0.5) == 200:
            return
        time.sleep(0.05)
    standin.stop()
    raise StandinError(f"{standin.name} not up after {timeout}s:\n{standin.log_text()}")


def _launch(name: str, command: list[str], env: Mapping[str, str], port: int, log_dir: Path | None) -> Standin:
    """Start a process with its output in a log file."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"gpuctl-{name}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "w") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env)
        )
    return Standin(name=name, process=process, port=port, log_path=log_path, command=command, env=dict(env))


def _base_env(extra: Mapping[str, str] | None, prefix: str) -> dict[str, str]:
    """The caller's environment without stand-in/engine settings leaking in, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    env.update(extra or {})
    return env


class StartOptions(TypedDict, total=False):
    """Keyword options of ``start_ollama`` and ``start_vllm``, all optional (defaults: ``_start``)."""

    port: int | None  # where it listens (127.0.0.1); default: a free port
    fast: bool  # set <NAME>_STANDIN_FAST=1 (no delays) unless ``env`` sets it; default True
    wait: bool  # return only once it answers; default True
    log_dir: Path | None  # where its log goes; default: a new temp dir
    timeout: float  # bound of that wait, in seconds; default DEFAULT_START_TIMEOUT_S


def _start(
    name: str,
    command: list[str],
    port: int,
    own_env: Mapping[str, str],
    env: Mapping[str, str] | None,
    *,
    ready_path: str,
    fast: bool = True,
    wait: bool = True,
    log_dir: Path | None = None,
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> Standin:
    """Launch stand-in ``name`` and, when ``wait``, poll ``ready_path`` until it answers.

    Its environment: the caller's without ``<NAME>_*`` variables, plus ``own_env``, plus
    ``<NAME>_STANDIN_FAST=1`` when ``fast``, plus ``env`` (which overrides all of them).
    """
    prefix = f"{name.upper()}_"
    full_env = _base_env(own_env, prefix)
    if fast:
        full_env[f"{prefix}STANDIN_FAST"] = "1"
    full_env.update(env or {})
    standin = _launch(name, command, full_env, port, log_dir)
    if wait:
        wait_until_up(standin, ready_path, timeout)
    return standin


def start_ollama(models_dir: Path, env: Mapping[str, str] | None = None, **options: Unpack[StartOptions]) -> Standin:
    """Run ``ollama_standin.py serve`` on 127.0.0.1 with OLLAMA_MODELS=models_dir (``options``: StartOptions).

    ``env`` adds/overrides variables (OLLAMA_KEEP_ALIVE, OLLAMA_NUM_PARALLEL, ...); ``fast``
    sets OLLAMA_STANDIN_FAST=1 unless ``env`` sets delays itself.
    """
    port = options.pop("port", None) or free_port()
    own_env = {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models_dir)}
    command = [sys.executable, str(OLLAMA_STANDIN), "serve"]
    return _start("ollama", command, port, own_env, env, ready_path="/", **options)


def start_vllm(
    args: Sequence[str] = ("serve", "standin/model"),
    env: Mapping[str, str] | None = None,
    **options: Unpack[StartOptions],
) -> Standin:
    """Run ``vllm_standin.py ARGS --host 127.0.0.1 --port PORT`` (``options``: StartOptions).

    ``fast`` sets VLLM_STANDIN_FAST=1 (no token delays) unless ``env`` overrides it.
    """
    port = options.pop("port", None) or free_port()
    command = [sys.executable, str(VLLM_STANDIN), *args, "--host", "127.0.0.1", "--port", str(port)]
    return _start("vllm", command, port, {}, env, ready_path="/health", **options)


def run_cli(
    script: Path,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a stand-in as a command (``ollama list``, ``vllm serve --help``...) and capture."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(script), *args], env=full_env, input=stdin, capture_output=True, text=True, timeout=timeout
    )
