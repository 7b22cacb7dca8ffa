"""Monitoring (gpuctl.monitoring): the node exporter on every host of an inventory that has a monitoring
host, and on that host Prometheus with gpuctl's alert rules and the blackbox exporter that probes the
gateways; all from the distribution's packages.

The files go in place before the packages are installed, so the services start with gpuctl's settings
(apt keeps a configuration file that is already there) and Prometheus never listens beyond its bind."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server, systemd
from pyinfra.operations.util import any_changed

from gpuctl.deploy.facts import DockerImageId
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.packages import apt_installed
from gpuctl.deploy.units import restart_command, running_and_enabled, start_unless_active
from gpuctl.host_layout import DCGM_EXPORTER_UNIT_NAME, PROMETHEUS_CONFIG
from gpuctl.outside import (
    BLACKBOX_PACKAGES,
    DCGM_EXPORTER_IMAGE,
    NODE_EXPORTER_PACKAGES,
    PROMETHEUS_PACKAGES,
)
from gpuctl.render import MonitoringFiles, RenderedFile

NODE_EXPORTER = "prometheus-node-exporter.service"
PROMETHEUS = "prometheus.service"
BLACKBOX = "prometheus-blackbox-exporter.service"


@deploy("Monitoring")
def node_exporter(defaults: RenderedFile) -> None:
    """The distribution's node exporter with gpuctl's arguments, running; restarted when they change."""
    changed = put_rendered(defaults)
    packages = list(NODE_EXPORTER_PACKAGES)
    apt_installed("node exporter", packages)
    running_and_enabled(NODE_EXPORTER, f"{NODE_EXPORTER} enabled and running")
    server.shell(
        name=f"Restart {NODE_EXPORTER} (its arguments changed)",
        commands=[f"systemctl restart {NODE_EXPORTER}"],
        _if=changed.did_change,
    )


@deploy("Monitoring")
def dcgm_exporter(unit: RenderedFile) -> None:
    """NVIDIA's DCGM exporter container (pinned image, pulled before its unit changes), running; restarted
    only when its unit changes."""
    if host.get_fact(DockerImageId, image=DCGM_EXPORTER_IMAGE) is None:
        server.shell(name=f"Pull {DCGM_EXPORTER_IMAGE}", commands=[f"docker pull --quiet '{DCGM_EXPORTER_IMAGE}'"])
    changed = put_rendered(unit)
    systemd.daemon_reload(name="systemd daemon-reload", _if=changed.did_change)
    server.shell(
        name=f"Restart {DCGM_EXPORTER_UNIT_NAME} (its unit changed)",
        commands=[restart_command(DCGM_EXPORTER_UNIT_NAME)],
        _if=changed.did_change,
    )
    start_unless_active(DCGM_EXPORTER_UNIT_NAME)


@deploy("Monitoring")
def prometheus(rendered: MonitoringFiles) -> None:
    """Prometheus with the inventory's scrape targets and gpuctl's rules, checked by promtool before it
    reloads them; restarted only when its arguments (listen address, retention) change."""
    arguments = put_rendered(rendered.defaults)
    config = [put_rendered(item) for item in (rendered.config, rendered.rules, rendered.trust)]
    probes = [put_rendered(item) for item in (rendered.blackbox, rendered.blackbox_defaults)]
    packages = [*PROMETHEUS_PACKAGES, *BLACKBOX_PACKAGES]
    apt_installed("Prometheus and the blackbox exporter", packages)
    running_and_enabled(BLACKBOX, f"{BLACKBOX} enabled and running")
    server.shell(
        name=f"Restart {BLACKBOX} (its probe or arguments changed)",
        commands=[f"systemctl restart {BLACKBOX}"],
        _if=any_changed(*probes),
    )
    server.shell(
        name="promtool check config (scrape targets and alert rules)",
        commands=[f"promtool check config {PROMETHEUS_CONFIG}"],
        _if=any_changed(*config, arguments),
    )
    running_and_enabled(PROMETHEUS, f"{PROMETHEUS} enabled and running")
    server.shell(
        name=f"Restart {PROMETHEUS} (its arguments changed)",
        commands=[f"systemctl restart {PROMETHEUS}"],
        _if=arguments.did_change,
    )
    server.shell(
        name=f"Reload {PROMETHEUS} (targets or rules changed)",
        commands=[f"systemctl reload-or-restart {PROMETHEUS}"],
        _if=lambda: any_changed(*config)() and not arguments.did_change(),
    )
