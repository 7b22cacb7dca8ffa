"""Facts read once per host per deploy.

pyinfra 3 keeps no fact cache: every `host.get_fact` runs its command again, one SSH channel each, and each
channel costs the host a shell and milliseconds of CPU. Facts that gpuctl reads several times while it
prepares a host (the package list, the state of its rendered files) are read once here. `start` forgets a
host's facts when its deploy begins, so nothing read before an earlier deploy is reused.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host

_FACTS: dict[str, dict[tuple[Any, ...], Any]] = {}
"""By host name (each host prepares in its own greenlet: the key keeps them apart)."""


def start() -> None:
    _FACTS[host.name] = {}


def fact(cls: Any, **kwargs: Any) -> Any:
    """host.get_fact(CLS, **KWARGS), read once per host per deploy."""
    cache = _FACTS.setdefault(host.name, {})
    key = (cls, *sorted(kwargs.items()))
    if key not in cache:
        cache[key] = host.get_fact(cls, **kwargs)
    return cache[key]
