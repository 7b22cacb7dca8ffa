"""The NVIDIA driver and container-toolkit steps, planned (`deploy --dry`) on a real fleet host.

The stand-ins are the GPU: fake `lspci`/`nvidia-smi` (harness/gpu_standin.py, output copied from a
real H100) make the host report an NVIDIA GPU; and the OS identity: the Debian fleet host's
/etc/os-release says Ubuntu 24.04 (GPU hosts on Debian are refused, tested below with the real one).
Everything else the plan depends on is read from the real host over SSH. The test asserts the exact
packages, files and commands planned, that nothing was changed, and that a host with no GPU declared
skips every NVIDIA step.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from gpuctl import outside
from gpuctl.spec import HostSpec, VllmSpec
from gpuctl.verify.host_checks import cdi_check
from gpuctl.verify.remote import Remote
from harness import gpu_standin
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

DRIVER = "NVIDIA driver | "
TOOLKIT = "NVIDIA container toolkit | "


def plan(
    host: Host,
    tmp_path,
    gpus: str = 'gpus=Gpu(model="H100 80GB", count=1, memory_gib=80), ',
    driver: str = "driver=Driver(branch=580), ",
    monitoring: str = "",
) -> dict:
    inventory = tmp_path / "gpu.py"
    inventory.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Driver, Gpu, Host, Monitoring, Vllm
        g = [Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r},
                  ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                  {gpus}{driver}{monitoring}docker=dict(packages=["docker.io", "docker-compose-plugin"]),
                  vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model="m",
                            gpu_access={'"reservation"' if gpus else '"none"'}))]
    """)
    )
    result = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--dry", "--json"], capture_output=True, text=True, timeout=300
    )
    [outcome] = json.loads(result.stdout)["hosts"]
    outcome["exit_code"] = result.returncode
    return outcome


@pytest.fixture(scope="module")
def gpu_host(fleet: Fleet) -> Host:
    host = fleet.new_host("gpuplan")
    gpu_standin.claim_ubuntu(host)
    return host


def test_bare_gpu_host_plans_driver_toolkit_and_refuses_to_reboot(gpu_host, tmp_path):
    gpu_standin.install(gpu_host, gpus=1, driver_loaded=False)
    outcome = plan(gpu_host, tmp_path)
    assert (outcome["exit_code"], outcome["status"]) == (0, "would change"), outcome
    commands = outcome["commands"]
    driver_ops = [name for name in outcome["changes"] if name.startswith(DRIVER)]
    assert driver_ops == [
        f"{DRIVER}Blacklist nouveau (/etc/modprobe.d/gpuctl-blacklist-nouveau.conf)",
        f"{DRIVER}Rebuild the initramfs (nouveau blacklisted)",
        f"{DRIVER}NVIDIA driver 580 packages",
        f"{DRIVER}Check the installed driver is branch 580",
        f"{DRIVER}Reboot needed (driver 580 installed, none loaded)",
    ], driver_ops
    install = " ".join(commands[f"{DRIVER}NVIDIA driver 580 packages"])
    assert "install --no-install-recommends nvidia-headless-580-server-open nvidia-utils-580-server" in install
    assert "fabricmanager" not in install
    assert commands[f"{DRIVER}Rebuild the initramfs (nouveau blacklisted)"] == ["update-initramfs -u"]
    assert (
        "reboot gpuplan (or set driver.allow_reboot=True)"
        in commands[f"{DRIVER}Reboot needed (driver 580 installed, none loaded)"][0]
    )
    assert "modinfo -F version nvidia" in commands[f"{DRIVER}Check the installed driver is branch 580"][0]

    key = commands[f"{TOOLKIT}NVIDIA apt key (/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg)"]
    assert key == [
        "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor "
        "-o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
    ]
    assert f"{TOOLKIT}NVIDIA apt source (/etc/apt/sources.list.d/nvidia-container-toolkit.list)" in commands
    pin = outside.TOOLKIT_VERSION
    toolkit = " ".join(commands[f"{TOOLKIT}NVIDIA container toolkit {pin} (pinned)"])
    for package in (
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    ):
        assert f"{package}={pin}" in toolkit
    assert commands[f"{TOOLKIT}Docker: nvidia runtime configured, Docker restarted"] == [
        "nvidia-ctk runtime configure --runtime=docker",
        "systemctl restart docker.service",
    ]
    # Toolkit >= 1.18: nvidia-cdi-refresh keeps /var/run/cdi/nvidia.yaml current; no static copy in /etc/cdi.
    assert commands[
        f"{TOOLKIT}Regenerate the CDI spec (/var/run/cdi/nvidia.yaml): nvidia-ctk is not installed yet"
    ] == ["systemctl start nvidia-cdi-refresh.service"]
    assert f"{TOOLKIT}nvidia-cdi-refresh.path enabled (regenerates the CDI spec on driver changes)" in commands
    assert (
        f"{TOOLKIT}udev rule against NVML loss after daemon-reload (/etc/udev/rules.d/71-nvidia-dev-char.rules)"
        in commands
    )
    # A dry run changes nothing on the host.
    assert not gpu_host.run("test -e /etc/modprobe.d/gpuctl-blacklist-nouveau.conf", check=False).ok
    assert not gpu_host.run("test -e /etc/apt/sources.list.d/nvidia-container-toolkit.list", check=False).ok


def test_reboot_allowed_plans_reboot_then_a_loaded_driver_check(gpu_host, tmp_path):
    gpu_standin.install(gpu_host, gpus=1, driver_loaded=False)
    outcome = plan(gpu_host, tmp_path, driver="driver=Driver(branch=580, allow_reboot=True), ")
    names = outcome["changes"]
    assert f"{DRIVER}Reboot to load the new driver (driver 580 installed, none loaded)" in names
    check = outcome["commands"][f"{DRIVER}Check driver 580 is loaded and nvidia-smi works"][0]
    assert "/sys/module/nvidia/version" in check and "nvidia-smi" in check
    assert not any("Reboot needed" in name for name in names)


def test_loaded_driver_plans_no_reboot_and_persistence(gpu_host, tmp_path):
    gpu_standin.install(gpu_host, gpus=1, driver_loaded=True)
    outcome = plan(gpu_host, tmp_path)
    names = outcome["changes"]
    assert not any("Reboot" in name or "Check the installed driver" in name for name in names)
    assert f"{DRIVER}nvidia-persistenced enabled and running" in names


def test_a_monitored_gpu_host_plans_nvidias_dcgm_exporter_after_the_toolkit(gpu_host, tmp_path):
    """With a monitoring host in the inventory (here the GPU host itself), its DCGM exporter container is
    planned: the pinned image pulled, its unit written (host network, its port), enabled and started; after
    Docker and the container toolkit that give it the GPU."""
    gpu_standin.install(gpu_host, gpus=1, driver_loaded=True)
    outcome = plan(gpu_host, tmp_path, monitoring="monitoring=Monitoring(), ")
    names, commands = outcome["changes"], outcome["commands"]
    assert outcome["exit_code"] == 0, outcome
    pull = f"Monitoring | Pull {outside.DCGM_EXPORTER_IMAGE}"
    assert commands[pull] == [f"docker pull --quiet '{outside.DCGM_EXPORTER_IMAGE}'"]
    unit = "Monitoring | File /etc/systemd/system/gpuctl-dcgm-exporter.service"
    start = "Monitoring | Start gpuctl-dcgm-exporter.service (was inactive)"
    assert {unit, start} <= set(names), names
    toolkit = max(i for i, name in enumerate(names) if name.startswith(TOOLKIT))
    assert toolkit < names.index(pull) < names.index(unit) < names.index(start)
    assert not gpu_host.run("test -e /etc/systemd/system/gpuctl-dcgm-exporter.service", check=False).ok


def test_declared_gpus_missing_on_the_bus_fail_the_host_before_any_change(gpu_host, tmp_path):
    gpu_standin.install(gpu_host, gpus=0)
    outcome = plan(gpu_host, tmp_path)
    assert outcome["exit_code"] == 1
    assert outcome["status"] == "failed" and outcome["failed_operation"] == "prepare"
    assert "declares 1× H100 80GB but the PCI bus shows 0 NVIDIA GPU(s)" in outcome["error"]


def test_host_without_gpus_skips_every_nvidia_step(gpu_host, tmp_path):
    gpu_standin.install(gpu_host, gpus=1, driver_loaded=True)
    outcome = plan(gpu_host, tmp_path, gpus="", driver="")
    assert outcome["exit_code"] == 0
    assert outcome["changes"], "the host still has Docker and vLLM to set up"
    assert not [name for name in outcome["changes"] if name.startswith(("NVIDIA", DRIVER, TOOLKIT))]


def test_debian_gpu_host_is_refused_in_one_line_before_any_change(gpu_host, tmp_path):
    gpu_standin.install(gpu_host, gpus=1, driver_loaded=False)
    gpu_standin.restore_debian(gpu_host)
    try:
        for dry in (["--dry"], []):
            inventory = tmp_path / "gpu.py"
            plan(gpu_host, tmp_path)  # writes the inventory
            result = subprocess.run(
                ["gpuctl", "deploy", str(inventory), "--yes", "--json", *dry],
                capture_output=True,
                text=True,
                timeout=300,
            )
            [outcome] = json.loads(result.stdout)["hosts"]
            assert (result.returncode, outcome["status"], outcome["failed_operation"]) == (1, "failed", "prepare")
            assert outcome["error"].startswith(
                "GPU hosts on Debian GNU/Linux 12 (bookworm) are refused: gpuctl installs "
                "the NVIDIA driver from Ubuntu's packages"
            ), outcome["error"]
            assert "\n" not in outcome["error"]
        assert not gpu_host.run("test -e /etc/modprobe.d/gpuctl-blacklist-nouveau.conf", check=False).ok
        assert not gpu_host.run("test -e /usr/local/libexec/gpuctl/wait-healthy", check=False).ok
    finally:
        gpu_standin.claim_ubuntu(gpu_host)


def test_debian_host_gets_docker_from_dockers_repository_by_default(gpu_host, tmp_path):
    """A CPU engine on a real Debian 12 host, no docker= in the inventory: Docker's own signed repository
    for bookworm and docker-ce + docker-compose-plugin are planned (Debian's docker.io is 20.10)."""
    gpu_standin.restore_debian(gpu_host)
    try:
        inventory = tmp_path / "cpu.py"
        inventory.write_text(
            textwrap.dedent(f"""
            from gpuctl.inventory import Host, Vllm
            g = [Host({gpu_host.name!r}, address={gpu_host.address!r}, ssh_key={str(gpu_host.ssh_key)!r},
                      ssh_known_hosts_file={str(gpu_host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                      vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model="m", gpu_access="none"))]
        """)
        )
        result = subprocess.run(
            ["gpuctl", "deploy", str(inventory), "--dry", "--json"], capture_output=True, text=True, timeout=300
        )
        [outcome] = json.loads(result.stdout)["hosts"]
        assert result.returncode == 0, outcome
        commands = outcome["commands"]
        assert commands["Docker | Docker apt key (/etc/apt/keyrings/docker.asc)"] == [
            "curl -fsSL --retry 3 https://download.docker.com/linux/debian/gpg -o /etc/apt/keyrings/docker.asc "
            "&& chmod a+r /etc/apt/keyrings/docker.asc"
        ]
        assert "Docker | Docker apt source (/etc/apt/sources.list.d/docker.list)" in commands
        install = " ".join(commands["Docker | Docker engine and Compose v2 plugin"])
        assert "docker-ce docker-ce-cli containerd.io docker-compose-plugin" in install
        assert "docker.io" not in install
        assert not [name for name in outcome["changes"] if name.startswith(("NVIDIA", DRIVER, TOOLKIT))]
    finally:
        gpu_standin.claim_ubuntu(gpu_host)


def test_stale_cdi_spec_is_named_by_verify_and_the_planned_refresh_repairs_it(gpu_host, tmp_path):
    """A simulated GPU/driver change: the CDI spec still lists another GPU. verify's cdi check names both
    UUIDs; deploy plans nvidia-cdi-refresh; running what it planned makes the spec current, verify passes
    and the next plan has nothing stale. CONTAINER-TOOLKIT STAND-IN: nvidia-ctk and the refresh unit
    (harness/gpu_standin.py), with the GPU stand-in's nvidia-smi."""
    old = "GPU-3eb87630-93d5-b2b6-b8ff-9b359caf4ee2"
    gpu_standin.install(gpu_host, gpus=1, driver_loaded=True)
    gpu_standin.install_toolkit(gpu_host, spec_uuid=old)
    spec = HostSpec(
        name=gpu_host.name,
        address=gpu_host.address,
        ssh_key=str(gpu_host.ssh_key),
        ssh_known_hosts_file=str(gpu_host.known_hosts),
        ssh_strict_host_key_checking="yes",
        gpus={"model": "H100 80GB", "count": 1, "memory_gib": 80},
        vllm=[VllmSpec(image="vllm/vllm-openai:v0.32.0", model="m", gpu_access="cdi")],
    )
    try:
        before = cdi_check(Remote(spec))
        assert not before.ok
        assert before.reason == (
            f"the CDI spec lacks {gpu_standin.UUID}; it lists {old}, which the driver does not see "
            "(stale after a driver or GPU change): gpuctl deploy regenerates it (nvidia-cdi-refresh)"
        )
        outcome = plan(gpu_host, tmp_path)
        [(name, command)] = [(n, c) for n, c in outcome["commands"].items() if "Regenerate the CDI spec" in n]
        assert (
            name
            == f"{TOOLKIT}Regenerate the CDI spec (/var/run/cdi/nvidia.yaml): "
            + before.reason.rsplit(": gpuctl deploy", 1)[0]
        )
        assert command == ["systemctl start nvidia-cdi-refresh.service"]
        gpu_host.run(command[0])
        after = cdi_check(Remote(spec))
        assert (after.ok, after.reason) == (True, "the CDI spec lists the 1 GPU(s) the driver sees")
        again = plan(gpu_host, tmp_path)
        assert not [n for n in again["changes"] if "stale" in n], again["changes"]
        gpu_standin.remove_toolkit(gpu_host)
        missing = cdi_check(Remote(spec))
        assert (missing.ok, missing.reason) == (
            False,
            "nvidia-ctk cdi list failed (exit 127): is the container toolkit installed?",
        )
    finally:
        gpu_standin.remove_toolkit(gpu_host)
