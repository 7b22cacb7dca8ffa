"""Which distribution a host runs, and what gpuctl can deploy there: decided before any change.

The facts behind each refusal (package names per distribution, Docker versions) are in
gpuctl.outside with their sources; the README's supported-hosts table says the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host

from gpuctl import outside
from gpuctl.deploy.facts import CommandSucceeds, OsRelease
from gpuctl.errors import NO_SYSTEMD, GpuctlError
from gpuctl.spec import HostSpec


@dataclass(frozen=True)
class Distribution:
    """A host's distribution from /etc/os-release: id ('ubuntu', 'debian'), version ('24.04', '12'), codename."""

    id: str
    version: str
    codename: str
    pretty: str

    @classmethod
    def from_os_release(cls, fields: dict[str, str]) -> Distribution:
        return cls(
            fields.get("ID", "").lower(),
            fields.get("VERSION_ID", ""),
            fields.get("VERSION_CODENAME", ""),
            fields.get("PRETTY_NAME") or fields.get("ID") or "an unknown distribution",
        )


def host_distribution() -> Distribution:
    return Distribution.from_os_release(host.get_fact(OsRelease) or {})


def refusal(spec: HostSpec, dist: Distribution) -> str | None:
    """Why SPEC cannot be deployed on DIST (one line), or None."""
    supported = outside.SUPPORTED_DISTRIBUTIONS
    if dist.id not in supported:
        names = ", ".join(f"{name.capitalize()} {' / '.join(versions)}" for name, versions in supported.items())
        return f"gpuctl deploys to {names} (apt and systemd); this host runs {dist.pretty}"
    if spec.gpus is not None and dist.id == "debian":
        return (
            f"GPU hosts on {dist.pretty} are refused: gpuctl installs the NVIDIA driver from Ubuntu's "
            f"packages (nvidia-headless-N-server-open), which Debian lacks; use Ubuntu 22.04/24.04 for GPU "
            f"hosts (Debian serves CPU engines such as Ollama with cpu_fallback=True)"
        )
    if (
        spec.needs_docker()
        and dist.id == "debian"
        and docker_source(spec, dist) == "distribution"
        and not spec.docker.packages
    ):
        return (
            f"{dist.pretty}'s own Docker is docker.io 20.10 (no CDI) and it has no Compose v2 package: "
            'set docker=Docker(source="docker") (Docker\'s repository, the default on Debian)'
        )
    return None


def docker_source(spec: HostSpec, dist: Distribution) -> str:
    """'docker' (Docker's own apt repository) or 'distribution' (the distribution's packages)."""
    if spec.docker.source != "auto":
        return spec.docker.source
    return "distribution" if dist.id == "ubuntu" or spec.docker.packages else "docker"


def docker_packages(spec: HostSpec, dist: Distribution) -> list[str]:
    """The inventory's packages, else those of the chosen source for DIST; pinned where versions= says."""
    if spec.docker.packages:
        names = list(spec.docker.packages)
    elif docker_source(spec, dist) == "docker":
        names = list(outside.DOCKER_CE_PACKAGES)
    else:
        names = list(outside.DOCKER_DISTRIBUTION_PACKAGES[dist.id])
    pins = spec.docker.versions
    return [f"{name}={pins[name]}" if name in pins else name for name in names]


def require_supported(spec: HostSpec) -> Distribution:
    """The host's distribution; stop this host (before any change) when SPEC cannot be deployed there."""
    if not host.get_fact(CommandSucceeds, test="test -d /run/systemd/system"):
        raise GpuctlError(f"{'this machine' if spec.local else spec.name} {NO_SYSTEMD}")
    dist = host_distribution()
    reason = refusal(spec, dist)
    if reason is not None:
        raise GpuctlError(reason)
    return dist
