"""Scripts shipped under templates/, run on a host as one command."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from gpuctl.render import templates_dir


def script_command(path: str, *args: str) -> str:
    """`sh -c SCRIPT NAME ARGS…`: run a script shipped under templates/ (PATH is relative to it, such as
    'vllm/preflight.sh') with ARGS. The script travels inside the command, so nothing is uploaded first
    and `deploy --dry` shows it whole; NAME ($0, in its messages) is the file's name without '.sh'."""
    script = (templates_dir() / path).read_text()
    return f"sh -c {shlex.quote(script)} {shlex.join([PurePosixPath(path).stem, *args])}"
