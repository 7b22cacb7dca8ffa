"""Engines that heal: the host restarts a vLLM engine whose container turned unhealthy (gpuctl-heal.timer,
with backoff), and a deploy treats an unhealthy engine as a difference to repair."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server, systemd
from pyinfra.operations.util import any_changed

from gpuctl.deploy.facts import ContainerHealth, UnitActiveState
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.units import restart_command
from gpuctl.render import HealingFiles
from gpuctl.spec import VllmSpec

HEAL_TIMER = "gpuctl-heal.timer"


@deploy("Engine healing")
def healing(files: HealingFiles) -> None:
    """Install the heal script with its timer and service; keep the timer enabled and running."""
    changes = [put_rendered(item) for item in files.all()]
    systemd.daemon_reload(name="systemd daemon-reload", _if=any_changed(*changes))
    systemd.service(name=f"{HEAL_TIMER} enabled and running", service=HEAL_TIMER, running=True, enabled=True)


@deploy("vLLM engine")
def repair_unhealthy(engine: VllmSpec, restarting: bool) -> None:
    """Restart ENGINE when its unit is active but its container is unhealthy (unless RESTARTING already)."""
    if restarting or host.get_fact(UnitActiveState, unit=engine.unit_name) != "active":
        return
    if host.get_fact(ContainerHealth, container=engine.project) == "unhealthy":
        server.shell(
            name=f"Restart {engine.unit_name} (its container is unhealthy)",
            commands=[restart_command(engine.unit_name)],
        )
    else:
        host.noop(f"{engine.project} is not unhealthy")
