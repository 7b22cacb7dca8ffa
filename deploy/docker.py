"""Docker engine and the Compose v2 plugin, enabled at boot: the distribution's packages on Ubuntu,
Docker's own signed apt repository on Debian (whose docker.io is 20.10, with no Compose v2)."""

from __future__ import annotations

import shlex

from pyinfra.api import deploy
from pyinfra.operations import files

from gpuctl.deploy.apt_source import signed_apt_source
from gpuctl.deploy.distribution import Distribution, docker_packages, docker_source
from gpuctl.deploy.packages import apt_installed
from gpuctl.deploy.units import running_and_enabled
from gpuctl.host_layout import APT_KEYRINGS_DIR, DOCKER_KEYRING, DOCKER_SOURCES
from gpuctl.spec import HostSpec


@deploy("Docker")
def docker(spec: HostSpec, dist: Distribution) -> None:
    """Install the Docker packages for DIST and keep docker.service enabled and running."""
    if docker_source(spec, dist) == "docker" and not spec.docker.packages:
        docker_repository(spec, dist)
    apt_installed("Docker engine and Compose v2 plugin", docker_packages(spec, dist))
    running_and_enabled("docker.service", "docker.service enabled and running")


def docker_repository(spec: HostSpec, dist: Distribution) -> None:
    """Docker's apt repository for DIST's codename, signed by Docker's key (docs.docker.com, install on Debian)."""
    url = spec.docker.repository.format(distribution=dist.id).rstrip("/")
    files.directory(name=f"Directory {APT_KEYRINGS_DIR}", path=str(APT_KEYRINGS_DIR), present=True, mode="0755")
    signed_apt_source(
        "Docker",
        f"curl -fsSL --retry 3 {shlex.quote(url + '/gpg')} -o {DOCKER_KEYRING} && chmod a+r {DOCKER_KEYRING}",
        str(DOCKER_KEYRING),
        str(DOCKER_SOURCES),
        f"deb [signed-by={DOCKER_KEYRING}] {url} {dist.codename} stable",
    )
