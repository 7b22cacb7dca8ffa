"""Releases of each engine, kept on its host: what was deployed, when, and whether it verified.

Every deploy that changes an engine records its files as a release under /var/lib/gpuctl/releases/ENGINE
(0700 root), with release.json (image or Ollama version, gpuctl's version, the engine spec's hash, time,
verify outcome):
- a vLLM engine: its compose file and unit. The env file (the engine's secrets) is not kept: a release runs
  with the live one, so a rollback never brings back a rotated key. Images are never removed by gpuctl, so
  an earlier release's image is still on the host.
- Ollama: its unit, drop-in and the version marker of the release installed; the binaries of the live
  release and the two before it stay installed side by side (templates/ollama/install-ollama.sh).
`gpuctl verify` marks the live release passed or failed. `gpuctl history` lists them; `gpuctl rollback` puts
a recorded release back (for Ollama: switches to its binary, installing it again when it was pruned),
restarts the engine and verifies it. The host side is templates/releases/release.sh.
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
from gpuctl.spec import OllamaSpec, VllmSpec
from gpuctl.verify.remote import Remote

Engine = VllmSpec | OllamaSpec
AS_FOUND = "(as found running)"
"""What a release kept before a change records for what it cannot know (its image, its spec's hash)."""


@dataclass
class Release:
    id: str
    engine: str
    image: str
    """What ran: the vLLM image, or 'ollama VERSION'."""
    created: str
    gpuctl_version: str
    spec_sha256: str
    verify: str
    current: bool
    ollama_version: str | None = None
    spec: dict[str, Any] | None = None
    """The engine's settings when it was recorded (secrets by reference only); None for a release kept as
    found running."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def engine_of(engine: Engine, release: Release) -> Engine:
    """ENGINE as RELEASE ran it, for verifying that release after a rollback: its recorded settings (the
    current ones when it recorded none, or when this gpuctl cannot read them), with its Ollama version."""
    recorded: Engine = engine
    if release.spec is not None:
        try:
            recorded = type(engine).model_validate(release.spec)
        except ValueError:
            recorded = engine
    if isinstance(recorded, OllamaSpec) and isinstance(engine, OllamaSpec):
        recorded._layout = engine.layout  # where it is installed is the host's, not the release's
    if isinstance(recorded, OllamaSpec) and release.ollama_version not in (None, "?"):
        recorded = recorded.model_copy(update={"version": release.ollama_version})
    return recorded


def releases_dir(engine: Engine) -> str:
    if isinstance(engine, OllamaSpec):
        return str(engine.layout.releases_dir)
    return str(host_layout.vllm_releases_dir(engine.name))


def release_files(engine: Engine) -> list[str]:
    """NAME=PATH of each live file a release keeps (the names are those inside a release's folder)."""
    if isinstance(engine, OllamaSpec):
        return [
            f"ollama.service={engine.layout.unit}",
            f"override.conf={engine.layout.dropin}",
            f"version={engine.layout.version_marker}",
        ]
    return [
        f"compose.yaml={engine.config_dir / 'compose.yaml'}",
        f"unit.service={host_layout.unit_path(engine.unit_name)}",
    ]


def release_command(command: str, engine: Engine, arg: str = "-") -> str:
    """templates/releases/release.sh COMMAND for ENGINE's files."""
    return script_command("releases/release.sh", command, releases_dir(engine), arg, *release_files(engine))


def spec_hash(engine: Engine) -> str:
    """The engine's settings as the inventory gave them (secrets by reference, never their values)."""
    return hashlib.sha256(engine.model_dump_json().encode()).hexdigest()[:16]


def record_command(engine: Engine, running_version: str | None = None, adopt: bool = False) -> str:
    """The host command that keeps the engine's live files as a new release (run by deploy after a change).
    The host adds the release's id and time (its UTC clock). ADOPT: before a change, keep the running files
    as a release when none matches them (an engine deployed before releases were recorded, or edited by
    hand), so a rollout can return to them; RUNNING_VERSION is then the Ollama release found installed."""
    meta: dict[str, Any] = {"engine": engine.label}
    if isinstance(engine, OllamaSpec):
        version = running_version if adopt else engine.version
        meta |= {"image": f"ollama {version}", "ollama_version": str(version)}
    else:
        meta["image"] = AS_FOUND if adopt else engine.image
    meta |= {"gpuctl_version": __version__, "spec_sha256": AS_FOUND if adopt else spec_hash(engine)}
    if not adopt:
        meta["spec"] = json.loads(engine.model_dump_json(exclude_unset=True))  # secrets: references only
    return release_command("adopt" if adopt else "record", engine, json.dumps(meta))


def list_releases(remote: Remote, engine: Engine) -> list[Release]:
    """The engine's releases on the host, oldest first (empty when none were recorded)."""
    out = remote.run(release_command("list", engine), timeout=30)
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

    version = data.get("ollama_version")
    spec = data.get("spec")
    return Release(
        id=parts[0],
        engine=text("engine"),
        image=text("image"),
        created=text("created"),
        gpuctl_version=text("gpuctl_version"),
        spec_sha256=text("spec_sha256"),
        verify=text("verify"),
        current=len(parts) > 1 and parts[1] == "true",
        ollama_version=str(version) if version is not None else None,
        spec=spec if isinstance(spec, dict) else None,
    )


def mark(remote: Remote, engine: Engine, passed: bool) -> None:
    """Write the verify outcome into the engine's live release (nothing when no release matches it)."""
    remote.run(release_command("mark", engine, "passed" if passed else "failed"), timeout=30)


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


def restore(remote: Remote, engine: Engine, release: Release) -> str | None:
    """Put RELEASE back and restart the engine (a vLLM unit waits for its healthcheck); the error, or None.
    For Ollama, its release's binary becomes the live one first (installed again, checksum verified, when it
    was pruned), then the unit and drop-in come back."""
    steps = [
        release_command("restore", engine, release.id),
        f"{engine.systemctl} daemon-reload",
        restart_command(engine.unit_name, systemctl=engine.systemctl, journalctl=engine.journalctl),
    ]
    timeout = 120
    if isinstance(engine, OllamaSpec):
        if not release.ollama_version or release.ollama_version == "?":
            return f"release {release.id} names no Ollama version"
        arch = remote.run("uname -m", timeout=30).stdout.strip()
        try:
            steps.insert(0, ollama_switch_command(engine.model_copy(update={"version": release.ollama_version}), arch))
        except GpuctlError as exc:
            return str(exc)
        timeout += 600  # a pruned release is downloaded again
    else:
        timeout += engine.start_timeout_s
    out = remote.run(" && ".join(f"{{ {step}; }}" for step in steps), timeout=timeout)
    return None if out.ok else (out.stderr.strip() or out.stdout.strip())[-400:]


def ollama_switch_command(ollama: OllamaSpec, host_arch: str) -> str:
    """Make OLLAMA's version the live one (imported here: deploy.ollama imports this module)."""
    from gpuctl.deploy.ollama import install_command

    return install_command(ollama, host_arch)
