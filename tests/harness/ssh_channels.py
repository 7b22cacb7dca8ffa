"""Count the SSH channels (command executions and file transfers) a deploy opens on each host.

Each pyinfra command runs in its own channel and each file transfer opens one (paramiko's
`Transport.open_channel`, which `open_session` and SFTP both go through). Counted in this process, per
peer address, while the context is active; used by benchmarks/deploy_noop.py and the regression test on
the count of a no-op deploy."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import paramiko


@contextlib.contextmanager
def counting() -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    original = paramiko.Transport.open_channel

    def open_channel(self: paramiko.Transport, *args: Any, **kwargs: Any) -> Any:
        try:
            peer = str(self.getpeername()[0])
        except (OSError, AttributeError, TypeError):
            peer = "?"
        counts[peer] += 1
        return original(self, *args, **kwargs)

    paramiko.Transport.open_channel = open_channel  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        paramiko.Transport.open_channel = original  # type: ignore[method-assign]
