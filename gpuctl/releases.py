"""Releases of each vLLM engine, kept on its host: what was deployed, when, and whether it verified.

Every deploy that changes an engine's files records them as a release under
/var/lib/gpuctl/releases/ENGINE (0700 root): compose file, unit, and release.json (image, gpuctl's version,
the engine spec's hash, time, verify outcome). The env file (the engine's secrets) is not kept: a release
runs with the live one, so a rollback never brings back a rotated key. `gpuctl verify` marks the live
release passed or failed. `gpuctl history` lists them; `gpuctl rollback` puts a recorded release's files
back, restarts the engine (its unit waits for the healthcheck) and verifies it. Images are never removed
by gpuctl, so an earlier release's image is still on the host. The host side is templates/vllm/release.sh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from gpuctl import __version__, host_layout
from gpuctl.deploy.scripts import script_command
from gpuctl.deploy.units import restart_command
from gpuctl.errors import GpuctlError
from gpuctl.spec import VllmSpec
from gpuctl.verify.remote import Remote


@dataclass
class Release:
    id: str
    engine: str
    image: str
    created: str
    gpuctl_version: str
    spec_sha256: str
    verify: str
    current: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _script(command: str, engine: VllmSpec, *extra: str) -> str:
    root = host_layout.vllm_releases_dir(engine.name)
    unit = host_layout.unit_path(engine.unit_name)
    return script_command("vllm/release.sh", command, str(root), str(engine.config_dir), str(unit), *extra)


def spec_hash(engine: VllmSpec) -> str:
    """The engine's settings as the inventory gave them (secrets by reference, never their values)."""
    return hashlib.sha256(engine.model_dump_json().encode()).hexdigest()[:16]


def record_command(engine: VllmSpec, adopt: bool = False) -> str:
    """The host command that keeps the engine's live files as a new release (run by deploy after a change).
    The host adds the release's id and time (its UTC clock). ADOPT: before a change, keep the running files
    as a release when none matches them (an engine deployed before releases were recorded, or edited by
    hand), so a rollout can return to them."""
    meta = {
        "engine": engine.label,
        "image": engine.image,
        "gpuctl_version": __version__,
        "spec_sha256": spec_hash(engine),
    }
    if adopt:
        meta["image"] = "(as found running)"
    return _script("adopt" if adopt else "record", engine, json.dumps(meta))


def list_releases(remote: Remote, engine: VllmSpec) -> list[Release]:
    """The engine's releases on the host, oldest first (empty when none were recorded)."""
    out = remote.run(_script("list", engine), timeout=30)
    if not out.ok:
        raise GpuctlError(f"{remote.host.name}: {engine.label}: cannot list releases: {out.stderr.strip()[:200]}")
    return [parse_release(line) for line in out.stdout.splitlines() if line.strip()]


def parse_release(line: str) -> Release:
    """One `release.sh list` line: ID, live (true/false) and release.json, tab-separated. A release.json that
    is not what gpuctl wrote (edited by hand, cut short) still gives its id, with '?' for what it lacks."""
    parts = line.split("\t", 2)
    try:
        data = json.loads(parts[2]) if len(parts) == 3 else {}
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}

    def text(key: str) -> str:
        return str(data.get(key, "?"))

    return Release(
        id=parts[0],
        engine=text("engine"),
        image=text("image"),
        created=text("created"),
        gpuctl_version=text("gpuctl_version"),
        spec_sha256=text("spec_sha256"),
        verify=text("verify"),
        current=len(parts) > 1 and parts[1] == "true",
    )


def mark(remote: Remote, engine: VllmSpec, passed: bool) -> None:
    """Write the verify outcome into the engine's live release (nothing when no release matches it)."""
    remote.run(_script("mark", engine, "passed" if passed else "failed"), timeout=30)


def rollback_target(releases: list[Release], to: str | None) -> Release:
    """The release to return to: --to ID, else the newest verified release older than the live one."""
    if to is not None:
        found = [r for r in releases if r.id == to]
        if not found:
            raise GpuctlError(f"no release {to} (recorded: {', '.join(r.id for r in releases) or 'none'})")
        return found[0]
    live = next((i for i, r in enumerate(releases) if r.current), len(releases))
    earlier = [r for r in releases[:live] if r.verify == "passed"]
    if not earlier:
        raise GpuctlError("no verified release older than the live one: name one with --to (see gpuctl history)")
    return earlier[-1]


def restore(remote: Remote, engine: VllmSpec, release: Release) -> str | None:
    """Put RELEASE's files back and restart the engine (waiting for its healthcheck); the error, or None."""
    restart = restart_command(engine.unit_name)
    command = f"{_script('restore', engine, release.id)} && systemctl daemon-reload && {{ {restart}; }}"
    out = remote.run(command, timeout=engine.start_timeout_s + 120)
    return None if out.ok else (out.stderr.strip() or out.stdout.strip())[-400:]
