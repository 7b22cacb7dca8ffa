"""Small pyinfra facts gpuctl needs beyond pyinfra's own."""

from __future__ import annotations

import json

from pyinfra.api import FactBase


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
    """NVIDIA display/3D controllers seen by lspci (vendor 10de), one line each."""

    def command(self) -> str:
        return "lspci -d 10de: -nn 2>/dev/null | grep -Ei 'vga|3d|display' || true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class NvidiaLoadedDriver(FactBase[str | None]):
    """Version of the loaded NVIDIA kernel module (/sys/module/nvidia/version), or None."""

    def command(self) -> str:
        return "cat /sys/module/nvidia/version 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None
