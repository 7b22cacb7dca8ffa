"""Engines that heal: the host restarts a vLLM engine whose container turned unhealthy (gpuctl-heal.timer,
with backoff), and a deploy treats an unhealthy engine as a difference to repair."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server, systemd
from pyinfra.operations.util import any_changed

from gpuctl.deploy.facts import ContainerHealth, EngineGenerates, UnitActiveState
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.units import restart_command, running_and_enabled
from gpuctl.render import HealingFiles
from gpuctl.spec import VllmSpec, on_host_address

HEAL_TIMER = "gpuctl-heal.timer"


@deploy("Engine healing")
def healing(files: HealingFiles) -> None:
    """Install the heal script with its timer and service; keep the timer enabled and running."""
    changes = [put_rendered(item) for item in files.all()]
    systemd.daemon_reload(name="systemd daemon-reload", _if=any_changed(*changes))
    running_and_enabled(HEAL_TIMER, f"{HEAL_TIMER} enabled and running")


GENERATION_PROBE_S = 30
"""A healthy engine that gives no token in this long is hung (its /health still answers)."""


@deploy("vLLM engine")
def repair_unhealthy(engine: VllmSpec, restarting: bool) -> None:
    """Restart ENGINE when its unit is active but its container is unhealthy, or healthy yet generating
    nothing (one one-token completion on the host); not when its files changed (RESTARTING already)."""
    if restarting or host.get_fact(UnitActiveState, unit=engine.unit_name) != "active":
        return
    health = host.get_fact(ContainerHealth, container=engine.project)
    why = None
    if health == "unhealthy":
        why = "its container is unhealthy"
    elif (
        health == "healthy"
        and host.get_fact(
            EngineGenerates,
            address=on_host_address(engine.bind, engine.port),
            env_file=str(engine.config_dir / "vllm.env"),
            model=engine.served_name,
            timeout_s=GENERATION_PROBE_S,
        )
        is False
    ):
        why = f"it answers /health but gave no token in {GENERATION_PROBE_S} s"
    if why is None:
        host.noop(f"{engine.project} is {health or 'without a health status'} and generating")
        return
    server.shell(name=f"Restart {engine.unit_name} ({why})", commands=[restart_command(engine.unit_name)])
