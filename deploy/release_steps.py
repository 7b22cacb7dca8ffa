"""The deploy steps around an engine's releases (gpuctl.releases): whether its files change, and keeping the
running files as a release before they are replaced."""

from __future__ import annotations

from hashlib import sha1

from pyinfra import host
from pyinfra.operations import server

from gpuctl import releases
from gpuctl.deploy.facts import LiveRelease
from gpuctl.deploy.files import sha1_on_host
from gpuctl.render import RenderedFile


def files_differ(rendered: list[RenderedFile]) -> bool:
    """Whether any of the engine's files on the host differs from the rendered one."""
    return any(sha1_on_host(item.path) != sha1(item.content.encode()).hexdigest() for item in rendered)


def keep_running_release(engine: releases.Engine, running_version: str | None = None) -> None:
    """Keep the engine's running files as a release when none recorded matches them (deployed before releases
    were recorded, or edited by hand), so a rollout can return to them. RUNNING_VERSION: Ollama's, found."""
    live = host.get_fact(LiveRelease, command=releases.release_command("live", engine))
    if live == "none":
        server.shell(
            name=f"Keep the running {engine.label} as a release (none recorded matches it)",
            commands=[releases.record_command(engine, running_version, adopt=True)],
        )
    elif live in ("absent", None):
        host.noop(f"{engine.label}: nothing running to keep as a release")
    else:
        host.noop(f"the running {engine.label} is release {live}")
