"""A container's state as Docker reports it, read with docker-py's own model.

docker-py's `Container` model reads the JSON of `docker inspect NAME`, fetched over SSH (with the
host's sudo, as every other check runs), since the Docker socket is not exposed remotely: no
`docker.DockerClient` connects here, the model only parses what the host's own `docker` printed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from docker.models.containers import Container

from gpuctl.verify.remote import Output

NO_HEALTHCHECK = "none"
"""The health shown for a container without a healthcheck (docker-py itself would say 'unknown')."""
ABSENT = "absent"
"""The status `container_status` gives when Docker knows no container of that name."""


class Runs(Protocol):
    """What the reader needs of a host: `Remote`, or a test's stand-in for SSH."""

    def run(self, command: str, timeout: float = ...) -> Output: ...


@dataclass(frozen=True)
class ContainerState:
    """What `docker inspect` says of one container."""

    name: str
    status: str  # running, exited, restarting, created, paused, dead
    health: str  # healthy, unhealthy, starting, or NO_HEALTHCHECK
    restart_count: int
    exit_code: int

    @classmethod
    def from_attrs(cls, attrs: dict) -> ContainerState:
        """One element of `docker inspect`'s JSON list, through docker-py's `Container` model."""
        container = Container(attrs=attrs)
        state = attrs.get("State") or {}
        return cls(
            name=container.name or "",
            status=container.status,
            health=container.health if state.get("Health") else NO_HEALTHCHECK,
            restart_count=int(attrs.get("RestartCount") or 0),
            exit_code=int(state.get("ExitCode") or 0),
        )


@dataclass(frozen=True)
class Inspection:
    """The container's state, or None with Docker's own words for why not (e.g. 'No such object: …')."""

    state: ContainerState | None
    error: str = ""


def parse_inspect(out: Output) -> Inspection:
    """`docker inspect NAME`'s output → the first container's state, or None with the error text."""
    if not out.ok:
        return Inspection(None, out.stderr.strip())
    try:
        found = json.loads(out.stdout)
    except json.JSONDecodeError:
        return Inspection(None, f"docker inspect printed something that is not JSON: {out.stdout.strip()[:80]!r}")
    if not isinstance(found, list) or not found or not isinstance(found[0], dict):
        return Inspection(None, "docker inspect listed no container")
    if not isinstance(found[0].get("State"), dict):  # an image, network or volume of that name
        return Inspection(None, "docker inspect found something that is not a container")
    return Inspection(ContainerState.from_attrs(found[0]))


def inspect_container(remote: Runs, name: str, timeout: float = 30) -> Inspection:
    """Run `docker inspect NAME` on the host and read it."""
    return parse_inspect(remote.run(f"docker inspect {name}", timeout=timeout))


def container_state(remote: Runs, name: str, timeout: float = 30) -> ContainerState | None:
    """The container's state, or None when the host has no container NAME (or Docker cannot say)."""
    return inspect_container(remote, name, timeout).state


def container_status(remote: Runs, name: str, timeout: float = 30) -> str:
    """'running', 'exited', 'restarting', … or 'absent' when the host has no container NAME."""
    state = container_state(remote, name, timeout)
    return ABSENT if state is None else state.status
