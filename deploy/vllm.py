"""A vLLM engine: compose file, 0600 env file and unit; restarted only when its own files change."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gpuctl import releases
from gpuctl.deploy.facts import DockerImageId
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.preflight import vllm_preflight
from gpuctl.deploy.release_steps import files_differ, keep_running_release
from gpuctl.deploy.units import restart_command, start_unless_active
from gpuctl.host_layout import HF_CACHE_DIR
from gpuctl.render import VllmFiles
from gpuctl.spec import HostSpec, VllmSpec


@deploy("vLLM engine")
def vllm_engine(spec: HostSpec, engine: VllmSpec, rendered: VllmFiles) -> None:
    """Install one engine's files, pre-pull its image, then (re)start it only if something changed."""
    for path in (HF_CACHE_DIR, engine.cache_dir / "cache"):
        files.directory(name=f"Directory {path}", path=str(path), present=True, user="root", group="root", mode="0755")
    if host.get_fact(DockerImageId, image=engine.image) is None:
        # Pull before the switch, so the outage is only the restart.
        server.shell(name=f"Pull {engine.image}", commands=[f"docker pull --quiet '{engine.image}'"])
    else:
        host.noop(f"image {engine.image} is present")
    if files_differ(rendered.all()):
        # Before the running engine is replaced: does the pinned image accept every flag, is the
        # driver new enough, is the GPU memory free? A failure stops here, the old engine runs on.
        vllm_preflight(
            name=f"Preflight {engine.project} (image flags, CUDA, GPU memory)", host_spec=spec, engine=engine
        )
        keep_running_release(engine)
    changes = {item.path: put_rendered(item) for item in rendered.all()}
    systemd.daemon_reload(name="systemd daemon-reload", _if=changes[rendered.unit.path].did_change)
    restarted = server.shell(
        name=f"Restart {engine.unit_name} (its files changed)",
        commands=[restart_command(engine.unit_name)],
        _if=any_changed(*changes.values()),
    )
    server.shell(
        name=f"Record the release of {engine.label} (gpuctl history)",
        commands=[releases.record_command(engine)],
        _if=restarted.did_change,
    )
    start_unless_active(engine.unit_name)
