"""Scripts shipped under templates/, run on a host as one command."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

from gpuctl.render import templates_dir


def script_command(path: str, *args: str) -> str:
    """`sh -c SCRIPT NAME ARGS…`: run a script shipped under templates/ (PATH is relative to it, such as
    'vllm/preflight.sh') with ARGS. The script travels inside the command, so nothing is uploaded first
    and `deploy --dry` shows it whole; NAME ($0, in its messages) is the file's name without '.sh'."""
    script = (templates_dir() / path).read_text()
    words = [shlex.quote(PurePosixPath(path).stem), *(home_quoted(arg) for arg in args)]
    return f"sh -c {shlex.quote(script)} {' '.join(words)}"


def home_quoted(arg: str) -> str:
    """ARG quoted for the shell; a path in the user's home (a user-level install: `~/…`, or `NAME=~/…`) with
    its `~` as "$HOME", which the host's shell expands for the user that runs the command."""
    match = re.fullmatch(r"([A-Za-z0-9_.-]+=)?~(/.*)", arg)
    if match is None:
        return shlex.quote(arg)
    name, rest = match.groups()
    return f'{shlex.quote(name) if name else ""}"$HOME"{shlex.quote(rest)}'
