"""apt packages without needless index refreshes.

pyinfra's `apt.packages(update=True, cache_time=3600)` runs `apt-get update` whenever the index is older
than an hour, even when every package is installed: a deploy that changes nothing would report the host
changed once an hour. Here the index is refreshed (at most hourly, as before) only when a package must be
installed; with every package present the step is a no-op.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt

from gpuctl import pyinfra_adapter
from gpuctl.deploy import memo

INDEX_MAX_AGE_S = 3600


def apt_installed(name: str, packages: list[str]) -> None:
    """PACKAGES installed (without recommends), refreshing the package index first if it is older than an
    hour and something is missing."""
    if not pyinfra_adapter.apt_would_install(host, packages, memo.fact(DebPackages) or {}):
        host.noop(f"{name}: installed")
        return
    apt.packages(name=name, packages=packages, update=True, cache_time=INDEX_MAX_AGE_S, no_recommends=True)
