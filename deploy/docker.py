"""Docker engine and the Compose v2 plugin, enabled at boot."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from gpuctl.spec import HostSpec


@deploy("Docker")
def docker(spec: HostSpec) -> None:
    """Install the Docker packages from the spec and keep docker.service enabled and running."""
    apt.packages(name="Docker engine and Compose v2 plugin", packages=spec.docker.packages,
                 update=True, cache_time=3600, no_recommends=True)  # fmt: skip
    systemd.service(name="docker.service enabled and running", service="docker.service", running=True, enabled=True)
