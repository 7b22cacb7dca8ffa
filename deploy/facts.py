"""Small pyinfra facts gpuctl needs beyond pyinfra's own."""

from __future__ import annotations

import json

from pyinfra.api import FactBase

from gpuctl.gpu_facts import cdi_staleness
from gpuctl.host_layout import DOCKER_DAEMON_JSON


class DockerImageId(FactBase[str | None]):
    """The local image ID of IMAGE, or None when the image is not on the host."""

    def command(self, image: str) -> str:
        return f"docker image inspect --format '{{{{.Id}}}}' '{image}' 2>/dev/null || true"

    def requires_command(self, image: str) -> str:
        return "docker"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class FileText(FactBase[str | None]):
    """The first line of a small text file (a version marker), or None."""

    def command(self, path: str) -> str:
        return f"cat '{path}' 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class OllamaModels(FactBase[list[str]]):
    """Model names an Ollama server at ADDRESS lists in /api/tags (empty when it does not answer)."""

    def command(self, address: str) -> str:
        return f"curl -fsS --max-time 5 http://{address}/api/tags 2>/dev/null || true"

    def requires_command(self, address: str) -> str:
        return "curl"

    def process(self, output: list[str]) -> list[str]:
        try:
            data = json.loads("\n".join(output) or "{}")
        except json.JSONDecodeError:
            return []
        return sorted(m.get("name", "") for m in data.get("models", []))


class NvidiaPciDevices(FactBase[list[str]]):
    """NVIDIA GPUs on the PCI bus, one line each: lspci when installed, else sysfs (vendor 0x10de,
    display class 0x03xxxx), so a bare server without pciutils is still seen."""

    def command(self) -> str:
        return (
            "if command -v lspci >/dev/null 2>&1; then lspci -d 10de: -nn | grep -Ei 'vga|3d|display' || true; "
            "else for d in /sys/bus/pci/devices/*; do "
            '[ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue; '
            'case "$(cat "$d/class")" in 0x03*) echo "${d##*/} NVIDIA [10de:$(cut -c3- "$d/device")]";; esac; '
            "done; fi"
        )

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class NvidiaLoadedDriver(FactBase[str | None]):
    """Version of the loaded NVIDIA kernel module (/sys/module/nvidia/version), or None."""

    def command(self) -> str:
        return (
            "cat /sys/module/nvidia/version 2>/dev/null || "
            "nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true"
        )

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class NvidiaSmiStatus(FactBase[str]):
    """'ok' when nvidia-smi runs, else its exit code and first lines ('missing' when not installed)."""

    def command(self) -> str:
        return (
            "if ! command -v nvidia-smi >/dev/null 2>&1; then echo missing; "
            "elif out=$(nvidia-smi 2>&1); then echo ok; "
            'else echo "exit $?: $(printf "%s" "$out" | head -n 2 | tr "\\n" " ")"; fi'
        )

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else "missing"


class DockerRuntimes(FactBase[str]):
    """/etc/docker/daemon.json as text ('' when absent), to see whether the nvidia runtime is configured."""

    def command(self) -> str:
        return f"cat {DOCKER_DAEMON_JSON} 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return "\n".join(output)


class SshServerPort(FactBase[int | None]):
    """The local port the current SSH session arrived on (from SSH_CONNECTION), or None when unknown."""

    def command(self) -> str:
        return 'echo "${SSH_CONNECTION:-}"'

    def process(self, output: list[str]) -> int | None:
        fields = output[0].split() if output else []
        return int(fields[3]) if len(fields) == 4 and fields[3].isdigit() else None


class OsRelease(FactBase[dict[str, str]]):
    """/etc/os-release as a dict (ID, VERSION_ID, VERSION_CODENAME, PRETTY_NAME…), quotes removed."""

    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, str]:
        fields = {}
        for line in output:
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                fields[key] = value.strip().strip("'\"")
        return fields


class CdiStaleness(FactBase[str | None]):
    """Why the host's CDI spec does not list exactly the GPUs nvidia-smi sees; None when it does."""

    def command(self) -> str:
        return (
            "if command -v nvidia-ctk >/dev/null 2>&1; then nvidia-ctk cdi list 2>/dev/null; "
            "else echo gpuctl:no-nvidia-ctk; fi; echo gpuctl:smi; nvidia-smi -L 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> str | None:
        text = "\n".join(output)
        if "gpuctl:no-nvidia-ctk" in text:
            return "nvidia-ctk is not installed yet"
        cdi, _, smi = text.partition("gpuctl:smi")
        return cdi_staleness(cdi, smi)


class CommandSucceeds(FactBase[bool]):
    """Whether a test command exits 0: `test -d /run/systemd/system` (systemd is PID 1, as sd_booted(3)
    tests), `nft list table inet gpuctl` (gpuctl's table is in the live ruleset)…"""

    def command(self, test: str) -> str:
        return f"{test} >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "yes"


class UnitActiveState(FactBase[str]):
    """`systemctl is-active UNIT`: active, inactive, failed, activating… ('' when systemctl says nothing)."""

    def command(self, unit: str) -> str:
        return f"systemctl is-active '{unit}' 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""
