"""What every command prints through: the console, JSON on stdout, and the exit codes.

Exit codes: 0 all good, 1 a host failed, 2 bad input (one clear line, never a traceback).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130


def console(stderr: bool = False) -> Console:
    """A console that drops colour when not a TTY or when NO_COLOR is set."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200  # pipes and logs get whole lines, not an 80-column wrap
    # No markup or emoji codes: host names, engine labels ("vllm:a") and logs are printed as they are.
    return Console(
        stderr=stderr, no_color="NO_COLOR" in os.environ, highlight=False, width=width, markup=False, emoji=False
    )


def emit_json(data: dict[str, Any]) -> None:
    """One JSON document on stdout (progress and warnings go to stderr, so this stays parseable)."""
    print(json.dumps(data, indent=2))


def progress_printer(quiet: bool = False) -> Any:
    """progress(host, message) printing `[host] message` on stderr; None when QUIET."""
    if quiet:
        return None
    err = console(stderr=True)
    return lambda host, message: err.print(f"[{host}] {message}")


def finish(ok: bool) -> None:
    """Exit 0 when OK, else 1 (a host or check failed)."""
    sys.exit(EXIT_OK if ok else EXIT_FAILED)
