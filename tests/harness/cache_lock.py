"""An exclusive file lock with a bounded wait: one builder of a cached asset per machine.

(Not named filelock: tiny_model.py runs as a script from this folder, where that name would shadow the
`filelock` package that huggingface_hub imports.)"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def bounded_lock(
    path: Path, timeout_s: float, *, poll_s: float = 1.0, error: Callable[[str], Exception] = TimeoutError
) -> Iterator[None]:
    """Hold an exclusive flock on PATH; raise ERROR(message) when another holder keeps it over TIMEOUT_S."""
    with open(path, "w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise error(f"lock {path} held for over {timeout_s:.0f} s") from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
