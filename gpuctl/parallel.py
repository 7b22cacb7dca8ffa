"""Run one function per host in parallel, results in inventory order (status, verify, history, rollback)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gpuctl.spec import HostSpec

T = TypeVar("T")
MAX_HOSTS_AT_ONCE = 16


def per_host(hosts: list[HostSpec], func: Callable[[HostSpec], Iterable[T]]) -> list[T]:
    """FUNC for every host at once (at most MAX_HOSTS_AT_ONCE), its results concatenated in HOSTS' order."""
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_HOSTS_AT_ONCE, len(hosts)))) as pool:
        return [item for items in pool.map(func, hosts) for item in items]
