"""What each distribution gets, decided from /etc/os-release before any change (deploy/distribution.py).

The os-release texts are the real files: Debian 12's as this machine has it (/etc/os-release here is
Debian 12), Ubuntu 24.04's as captured on the H100 host (tests/data) and completed from Ubuntu's file.
"""

from __future__ import annotations

import pytest

from gpuctl import outside
from gpuctl.deploy.distribution import Distribution, docker_packages, docker_source, refusal
from gpuctl.deploy.facts import OsRelease
from gpuctl.spec import DockerSpec, GpuSpec, HostSpec, OllamaSpec, VllmSpec
from harness.gpu_standin import UBUNTU_2404_OS_RELEASE

DEBIAN_12 = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""
FEDORA = 'NAME="Fedora Linux"\nVERSION_ID=41\nID=fedora\nPRETTY_NAME="Fedora Linux 41 (Server Edition)"\n'


def dist(text: str) -> Distribution:
    return Distribution.from_os_release(OsRelease().process(text.splitlines()))


DEBIAN, UBUNTU = dist(DEBIAN_12), dist(UBUNTU_2404_OS_RELEASE)
GPUS = GpuSpec(model="H100 80GB", count=1, memory_gib=80)


def gpu_host(**extra) -> HostSpec:
    return HostSpec(
        name="g", address="10.0.0.1", gpus=GPUS, vllm=[VllmSpec(image="vllm/vllm-openai:v0.32.0", model="m")], **extra
    )


def cpu_vllm_host(**extra) -> HostSpec:
    return HostSpec(
        name="c",
        address="10.0.0.2",
        vllm=[VllmSpec(image="vllm/vllm-openai:v0.32.0", model="m", gpu_access="none")],
        **extra,
    )


def test_os_release_is_read_as_the_files_say():
    assert (DEBIAN.id, DEBIAN.version, DEBIAN.codename) == ("debian", "12", "bookworm")
    assert (UBUNTU.id, UBUNTU.version, UBUNTU.codename, UBUNTU.pretty) == (
        "ubuntu",
        "24.04",
        "noble",
        "Ubuntu 24.04.3 LTS",
    )
    with open("/etc/os-release") as here:
        assert dist(here.read()).id in ("debian", "ubuntu")


def test_gpu_hosts_are_served_on_ubuntu_and_refused_on_debian_in_one_line():
    assert refusal(gpu_host(), UBUNTU) is None
    reason = refusal(gpu_host(), DEBIAN)
    assert reason.startswith(
        "GPU hosts on Debian GNU/Linux 12 (bookworm) are refused: gpuctl installs the NVIDIA driver "
        "from Ubuntu's packages (nvidia-headless-N-server-open), which Debian lacks"
    )
    assert "\n" not in reason


def test_cpu_engines_are_served_on_debian():
    assert (
        refusal(HostSpec(name="l", local=True, ollama=OllamaSpec(version="0.40.2", cpu_fallback=True)), DEBIAN) is None
    )
    assert refusal(cpu_vllm_host(), DEBIAN) is None


def test_other_distributions_are_refused_naming_what_is_supported():
    assert refusal(cpu_vllm_host(), dist(FEDORA)) == (
        "gpuctl deploys to Ubuntu 22.04 / 24.04, Debian 12 / 13 (apt and systemd); "
        "this host runs Fedora Linux 41 (Server Edition)"
    )
    assert "this host runs an unknown distribution" in refusal(cpu_vllm_host(), dist(""))


def test_docker_comes_from_ubuntu_itself_and_from_dockers_repository_on_debian():
    host = cpu_vllm_host()
    assert (docker_source(host, UBUNTU), docker_packages(host, UBUNTU)) == (
        "distribution",
        ["docker.io", "docker-compose-v2"],
    )
    assert (docker_source(host, DEBIAN), docker_packages(host, DEBIAN)) == ("docker", outside.DOCKER_CE_PACKAGES)
    assert docker_packages(cpu_vllm_host(docker=DockerSpec(source="docker")), UBUNTU) == outside.DOCKER_CE_PACKAGES
    local = cpu_vllm_host(docker=DockerSpec(packages=["docker.io", "docker-compose-plugin"]))
    assert (docker_source(local, DEBIAN), docker_packages(local, DEBIAN)) == (
        "distribution",
        ["docker.io", "docker-compose-plugin"],
    )


def test_debians_own_docker_is_refused_unless_packages_are_named():
    reason = refusal(cpu_vllm_host(docker=DockerSpec(source="distribution")), DEBIAN)
    assert reason == (
        "Debian GNU/Linux 12 (bookworm)'s own Docker is docker.io 20.10 (no CDI) and it has no Compose v2 "
        'package: set docker=Docker(source="docker") (Docker\'s repository, the default on Debian)'
    )
    assert refusal(cpu_vllm_host(docker=DockerSpec(source="distribution", packages=["docker.io"])), DEBIAN) is None


def test_docker_packages_are_pinned_where_the_inventory_says():
    pinned = cpu_vllm_host(
        docker=DockerSpec(
            versions={"docker-ce": "5:29.1.3-1~debian.12~bookworm", "docker-ce-cli": "5:29.1.3-1~debian.12~bookworm"}
        )
    )
    assert docker_packages(pinned, DEBIAN) == [
        "docker-ce=5:29.1.3-1~debian.12~bookworm",
        "docker-ce-cli=5:29.1.3-1~debian.12~bookworm",
        "containerd.io",
        "docker-compose-plugin",
    ]
    with pytest.raises(ValueError, match="is not an apt package and version"):
        DockerSpec(versions={"docker-ce": "29; rm -rf /"})
