"""NVIDIA container toolkit: signed apt repository, pinned packages, Docker runtime, CDI, NVML guard."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server, systemd

from gpuctl import outside
from gpuctl.deploy.apt_source import signed_apt_source
from gpuctl.deploy.facts import CdiStaleness, DockerRuntimes
from gpuctl.deploy.packages import apt_installed
from gpuctl.host_layout import NVIDIA_DEV_CHAR_RULE, TOOLKIT_KEYRING, TOOLKIT_SOURCES
from gpuctl.spec import ContainerToolkitSpec, HostSpec

# After `systemctl daemon-reload`, containers can lose their GPUs ("Failed to initialize NVML:
# Unknown Error", nvidia-container-toolkit #48) unless /dev/char symlinks exist for the devices.
DEV_CHAR_RULE_TEXT = (
    'ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", '
    'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"\n'
)


@deploy("NVIDIA container toolkit")
def container_toolkit(spec: HostSpec) -> None:
    """Let Docker hand GPUs to containers; restart Docker only when its configuration changed."""
    toolkit = spec.container_toolkit
    apt_installed("Tools for NVIDIA's apt repository", ["curl", "gnupg", "ca-certificates"])
    signed_apt_source(
        "NVIDIA",
        f"curl -fsSL {shlex.quote(toolkit.gpgkey_url)} | gpg --batch --yes --dearmor -o {TOOLKIT_KEYRING}",
        str(TOOLKIT_KEYRING),
        str(TOOLKIT_SOURCES),
        f"deb [signed-by={TOOLKIT_KEYRING}] {toolkit.repository} /",
    )
    packages = apt.packages(
        name=f"NVIDIA container toolkit {toolkit.version} (pinned)", packages=toolkit.pinned(), no_recommends=True
    )
    if '"nvidia"' not in (host.get_fact(DockerRuntimes) or ""):
        server.shell(
            name="Docker: nvidia runtime configured, Docker restarted",
            commands=[
                "nvidia-ctk runtime configure --runtime=docker",
                "systemctl restart docker.service",
            ],
        )
    else:
        host.noop("Docker already has the nvidia runtime")
    cdi_spec(toolkit, packages)
    rule = files.put(
        name=f"udev rule against NVML loss after daemon-reload ({NVIDIA_DEV_CHAR_RULE})",
        src=StringIO(DEV_CHAR_RULE_TEXT),
        dest=str(NVIDIA_DEV_CHAR_RULE),
        mode="0644",
        user="root",
        group="root",
    )
    server.shell(
        name="Create /dev/char symlinks for the NVIDIA devices",
        commands=["nvidia-ctk system create-dev-char-symlinks --create-all"],
        _if=rule.did_change,
    )


def cdi_spec(toolkit: ContainerToolkitSpec, packages: OperationMeta) -> None:
    """Keep the CDI spec listing exactly the GPUs the driver sees.

    Toolkit 1.18 and later ship nvidia-cdi-refresh: its .path unit regenerates /var/run/cdi/nvidia.yaml
    when the driver or nvidia-ctk changes, its .service at every boot. gpuctl enables it, removes the
    static /etc/cdi copy older gpuctl versions wrote (it would outlive a driver change), and runs the
    refresh when the spec is stale or the toolkit changed. Older toolkits get the static file, regenerated
    on the same conditions.
    """
    stale = host.get_fact(CdiStaleness)
    if outside.version_tuple(toolkit.version) >= outside.TOOLKIT_CDI_REFRESH_SINCE:
        files.file(
            name=f"No static CDI spec ({outside.CDI_STATIC_SPEC}; nvidia-cdi-refresh keeps "
            f"{outside.CDI_REFRESHED_SPEC} current)",
            path=outside.CDI_STATIC_SPEC,
            present=False,
        )
        systemd.service(
            name="nvidia-cdi-refresh.path enabled (regenerates the CDI spec on driver changes)",
            service="nvidia-cdi-refresh.path",
            running=True,
            enabled=True,
        )
        target, command = outside.CDI_REFRESHED_SPEC, "systemctl start nvidia-cdi-refresh.service"
    else:
        target, command = outside.CDI_STATIC_SPEC, f"nvidia-ctk cdi generate --output={outside.CDI_STATIC_SPEC}"
    if stale:
        server.shell(name=f"Regenerate the CDI spec ({target}): {stale}", commands=[command])
    else:
        server.shell(
            name=f"Regenerate the CDI spec ({target}): the toolkit changed", commands=[command], _if=packages.did_change
        )
