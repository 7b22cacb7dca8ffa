"""Run the gpuctl CLI in-process (click's runner) from a chosen folder, for fast CLI tests."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from gpuctl.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@contextmanager
def chdir(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> CliResult:
    """Invoke `gpuctl ARGS` in CWD; exceptions propagate so a traceback can never pass unnoticed."""
    runner = CliRunner()
    with chdir(cwd):
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)
