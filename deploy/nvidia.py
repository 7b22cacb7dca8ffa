"""The NVIDIA driver: pinned branch and flavour, nouveau off, persistence on, reboot only if allowed.

Decisions come from facts read before anything changes: which GPUs the PCI bus shows, which driver
is loaded, whether nvidia-smi works. A driver that is installed but not loaded needs a reboot; gpuctl
reboots only when the inventory allows it and otherwise stops the host with what to do.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from gpuctl import outside
from gpuctl.deploy.facts import NvidiaLoadedDriver, NvidiaPciDevices, NvidiaSmiStatus
from gpuctl.deploy.packages import apt_installed
from gpuctl.deploy.scripts import script_command
from gpuctl.errors import GpuctlError
from gpuctl.host_layout import NOUVEAU_BLACKLIST, NVIDIA_MODULE_VERSION
from gpuctl.spec import DriverSpec, HostSpec

DEFAULT_BRANCH = outside.DRIVER_BRANCH


def driver_of(spec: HostSpec) -> DriverSpec:
    return spec.driver or DriverSpec(branch=DEFAULT_BRANCH)


def loaded_branch(version: str | None) -> int | None:
    """580 for '580.159.04'; None when no driver is loaded."""
    try:
        return int(version.split(".")[0]) if version else None
    except ValueError:
        return None


def installed_branch_check(driver: DriverSpec) -> str:
    """Fail when the module on disk is not the requested branch (Ubuntu's transitional packages):
    templates/nvidia/installed-branch.sh."""
    return script_command("nvidia/installed-branch.sh", str(driver.branch), driver.package())


def loaded_branch_check(driver: DriverSpec) -> str:
    """After the reboot: fail unless the loaded module is the requested branch and nvidia-smi works
    (templates/nvidia/loaded-branch.sh)."""
    return script_command("nvidia/loaded-branch.sh", str(driver.branch), str(NVIDIA_MODULE_VERSION))


@deploy("NVIDIA driver")
def nvidia_driver(spec: HostSpec) -> None:
    """Install and load the pinned driver on a host that declares GPUs; skip a CPU-only host."""
    if spec.gpus is None:
        host.noop("no GPUs declared: NVIDIA driver skipped")
        return
    driver = driver_of(spec)
    devices = host.get_fact(NvidiaPciDevices) or []
    if len(devices) < spec.gpus.count:
        raise GpuctlError(
            f"the spec declares {spec.gpus.count}× {spec.gpus.model} but the PCI bus shows "
            f"{len(devices)} NVIDIA GPU(s): fix gpus= in the inventory or check the hardware"
        )
    install_driver(spec, driver)
    if not load_driver(spec, driver):
        return
    systemd.service(
        name="nvidia-persistenced enabled and running",
        service="nvidia-persistenced.service",
        running=True,
        enabled=True,
    )
    if spec.gpus.nvswitch:
        systemd.service(
            name="nvidia-fabricmanager enabled and running",
            service="nvidia-fabricmanager.service",
            running=True,
            enabled=True,
        )


def install_driver(spec: HostSpec, driver: DriverSpec) -> None:
    """nouveau blacklisted (initramfs rebuilt when that changed), the driver's packages installed."""
    assert spec.gpus is not None
    blacklist = files.put(
        name=f"Blacklist nouveau ({NOUVEAU_BLACKLIST})",
        src=StringIO("blacklist nouveau\noptions nouveau modeset=0\n"),
        dest=str(NOUVEAU_BLACKLIST),
        mode="0644",
        user="root",
        group="root",
    )
    server.shell(
        name="Rebuild the initramfs (nouveau blacklisted)", commands=["update-initramfs -u"], _if=blacklist.did_change
    )
    packages = [driver.package(), driver.utils_package()]
    if spec.gpus.nvswitch:
        packages.append(driver.fabricmanager_package())
    apt_installed(f"NVIDIA driver {driver.branch} packages", packages)


def load_driver(spec: HostSpec, driver: DriverSpec) -> bool:
    """Get the requested branch loaded: reboot when the inventory allows it, else stop the host with what
    to do. False when the host is stopped (a reboot is needed and not allowed)."""
    loaded = host.get_fact(NvidiaLoadedDriver)
    if loaded_branch(loaded) == driver.branch:
        status = host.get_fact(NvidiaSmiStatus)
        if status != "ok":
            raise GpuctlError(
                f"driver {loaded} is loaded but nvidia-smi fails ({status}): after a kernel upgrade the "
                "modules may not match; reinstall the driver for the running kernel"
            )
        return True
    server.shell(
        name=f"Check the installed driver is branch {driver.branch}", commands=[installed_branch_check(driver)]
    )
    why = f"driver {driver.branch} installed, {loaded or 'none'} loaded"
    if not driver.allow_reboot:
        server.shell(
            name=f"Reboot needed ({why})",
            commands=[
                f"echo '{why}: reboot {spec.name} (or set driver.allow_reboot=True) and deploy again' >&2; exit 1"
            ],
        )
        return False
    server.reboot(name=f"Reboot to load the new driver ({why})", delay=5, reboot_timeout=900)
    server.shell(
        name=f"Check driver {driver.branch} is loaded and nvidia-smi works", commands=[loaded_branch_check(driver)]
    )
    return True
