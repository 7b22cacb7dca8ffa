"""Small pyinfra facts gpuctl needs beyond pyinfra's own, and how facts and operations run gpuctl's scripts."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

from gpuctl.deploy.scripts import script_command
from gpuctl.gpu_facts import (
    GPU_MEMORY_QUERY,
    GpuMemory,
    cdi_staleness,
    gpu_memory,
    proc_driver_version,
    smi_status,
)
from gpuctl.host_layout import DOCKER_DAEMON_JSON, DRIVER_VERSION_FILE, NVIDIA_MODULE_VERSION, PCI_DEVICES_DIR


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


class LiveRelease(FactBase[str | None]):
    """What `release.sh live` says of an engine (templates/releases/release.sh): the id of the release its
    running files are, "none" when no recorded release matches them, "absent" when it has no files yet."""

    def command(self, command: str) -> str:
        return command

    def process(self, output: list[str]) -> str | None:
        return output[-1].strip() if output and output[-1].strip() else None


class OllamaModels(FactBase[dict[str, str]]):
    """Models an Ollama server at ADDRESS lists in /api/tags, by name, with their manifest digests (two
    names of one model share one); empty when it does not answer."""

    def command(self, address: str) -> str:
        return f"curl -fsS --max-time 5 http://{address}/api/tags 2>/dev/null || true"

    def requires_command(self, address: str) -> str:
        return "curl"

    def process(self, output: list[str]) -> dict[str, str]:
        try:
            data = json.loads("\n".join(output) or "{}")
        except json.JSONDecodeError:
            return {}
        return {m.get("name", ""): m.get("digest", "") for m in data.get("models", [])}


class NvidiaPciDevices(FactBase[list[str]]):
    """NVIDIA GPUs on the PCI bus, one line each (templates/nvidia/pci-gpus.sh: lspci when installed, else
    sysfs, so a bare server without pciutils is still seen)."""

    def command(self) -> str:
        return script_command("nvidia/pci-gpus.sh", str(PCI_DEVICES_DIR))

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class NvidiaLoadedDriver(FactBase[str | None]):
    """Version of the loaded NVIDIA kernel module (/sys/module/nvidia/version), or None."""

    def command(self) -> str:
        return (
            f"cat {NVIDIA_MODULE_VERSION} 2>/dev/null || "
            "nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true"
        )

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class NvidiaSmiStatus(FactBase[str]):
    """'ok' when nvidia-smi runs, else its exit code and first lines ('missing' when not installed)."""

    def command(self) -> str:
        return 'nvidia-smi 2>&1; echo "gpuctl:exit $?"'

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> str:
        return "missing"

    def process(self, output: list[str]) -> str:
        return smi_status(output)


class NvidiaGpuMemory(FactBase[list[GpuMemory]]):
    """Each GPU's index, UUID and total memory as nvidia-smi lists them; [] when it does not answer."""

    def command(self) -> str:
        return f"nvidia-smi {GPU_MEMORY_QUERY} --format=csv,noheader,nounits 2>/dev/null || true"

    @staticmethod
    def default() -> list[GpuMemory]:
        return []

    def process(self, output: list[str]) -> list[GpuMemory]:
        return gpu_memory("\n".join(output))


class NvidiaDriverVersion(FactBase[str | None]):
    """The loaded driver's version as /proc/driver/nvidia/version says it ('580.95.05'), or None."""

    def command(self) -> str:
        return f"cat {DRIVER_VERSION_FILE} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return proc_driver_version("\n".join(output))


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
        return "nvidia-ctk cdi list 2>/dev/null; echo gpuctl:smi; nvidia-smi -L 2>/dev/null || true"

    def requires_command(self) -> str:
        return "nvidia-ctk"

    @staticmethod
    def default() -> str:
        return "nvidia-ctk is not installed yet"

    def process(self, output: list[str]) -> str | None:
        cdi, _, smi = "\n".join(output).partition("gpuctl:smi")
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


class UnitStates(FactBase[tuple[str, str]]):
    """(`systemctl is-active UNIT`, `systemctl is-enabled UNIT`) in one command: ("active", "enabled").
    SYSTEMCTL: the command that reaches the unit's service manager (a user's, for a user-level unit)."""

    def command(self, unit: str, systemctl: str = "systemctl") -> str:
        return f"{systemctl} is-active '{unit}' 2>/dev/null; {systemctl} is-enabled '{unit}' 2>/dev/null; true"

    def process(self, output: list[str]) -> tuple[str, str]:
        lines = [line.strip() for line in output] + ["", ""]
        return lines[0], lines[1]


class ContainerHealth(FactBase[str]):
    """A container's health as Docker's healthcheck reports it: healthy, unhealthy, starting, or ''."""

    def command(self, container: str) -> str:
        template = "{{if .State.Health}}{{.State.Health.Status}}{{end}}"
        return f"docker inspect --format '{template}' '{container}' 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""


class EngineGenerates(FactBase[bool]):
    """Whether the vLLM engine at ADDRESS answers a one-token completion within TIMEOUT_S (True/False).

    Its key is read from the engine's 0600 env file on the host and handed to curl on stdin (`-H @-`,
    curl 7.55+), so it never stands on a command line. None when curl is missing."""

    def requires_command(self, *args: object, **kwargs: object) -> str:
        return "curl"

    def command(self, address: str, env_file: str, model: str, timeout_s: int) -> str:
        body = json.dumps({"model": model, "prompt": "ping", "max_tokens": 1})
        return (
            f"set -a; . {shlex.quote(env_file)} 2>/dev/null; set +a; "
            "printf 'Authorization: Bearer %s\\n' \"${VLLM_API_KEY:-}\" | "
            f"curl -s -o /dev/null -w '%{{http_code}}' --max-time {timeout_s} -H @- "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)} http://{address}/v1/completions || true"
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "200"


class UserAccount(FactBase[dict[str, Any] | None]):
    """USER's account: home, shell, primary group and every group (getent, id), or None when there is no such
    user. One account's lines, where pyinfra's Users fact reads every account and group on the host."""

    def command(self, user: str) -> str:
        return f"getent passwd '{user}' && id -gn '{user}' && id -Gn '{user}' || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        if len(output) < 3 or output[0].count(":") != 6:
            return None
        fields = output[0].strip().split(":")
        return {"home": fields[5], "shell": fields[6], "group": output[1].strip(), "groups": output[2].split()}


class PathStates(FactBase[dict[str, tuple[str, int, str, str, str] | None]]):
    """For each of PATHS, in one command: (kind, mode, owner, group, sha1 of a file's content) as stat and
    sha1sum read them (kind: "regular file", "directory", ...), or None when the path does not exist. The
    files gpuctl renders are checked with this instead of three or four commands per file; one stat and one
    sha1sum for them all (each process a host starts costs it milliseconds of CPU)."""

    def command(self, paths: tuple[str, ...]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (
            f"stat -c '%n|%F|%a|%U|%G' -- {quoted} 2>/dev/null; echo '--- sha1'; sha1sum -- {quoted} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict[str, tuple[str, int, str, str, str] | None]:
        marker = output.index("--- sha1") if "--- sha1" in output else len(output)
        digests = {}
        for line in output[marker + 1 :]:
            digest, _, path = line.partition("  ")
            digests[path] = digest
        found: dict[str, tuple[str, int, str, str, str] | None] = {}
        for line in output[:marker]:
            fields = line.split("|")
            if len(fields) == 5:
                path, kind, mode, owner, group = fields
                digest = digests.get(path, "-") if kind == "regular file" else "-"
                found[path] = (kind, int(mode, 8), owner, group, digest)
        return found


class LoginIdentity(FactBase[tuple[str, str, str]]):
    """(user, primary group, home) of the user commands run as: what a user-level install owns and where."""

    def command(self) -> str:
        return 'id -un; id -gn; printf "%s\\n" "$HOME"'

    def process(self, output: list[str]) -> tuple[str, str, str]:
        lines = [line.strip() for line in output] + ["", "", ""]
        return lines[0], lines[1], lines[2]


class MissingCommands(FactBase[list[str]]):
    """Which of the named commands the host lacks (none: an empty list)."""

    def command(self, names: tuple[str, ...]) -> str:
        return f'for c in {" ".join(names)}; do command -v "$c" >/dev/null 2>&1 || echo "$c"; done; true'

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class ExistingPaths(FactBase[list[str]]):
    """The paths matching shell GLOBS that exist (none: an empty list)."""

    def command(self, globs: tuple[str, ...]) -> str:
        return f'for p in {" ".join(globs)}; do [ -e "$p" ] && echo "$p"; done; true'

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]
