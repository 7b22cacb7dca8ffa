"""Parsers for what NVIDIA's tools print on a host, shared by deploy's facts and verify's checks.

Shapes (see gpuctl/outside.py for sources): `nvidia-smi -L` prints one line per GPU,
"GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-979d25eb-…)"; `nvidia-ctk cdi list` prints
"INFO[0000] Found 3 CDI devices" (a log line) then one device name per line:
"nvidia.com/gpu=0", "nvidia.com/gpu=GPU-<uuid>", "nvidia.com/gpu=all". The memory query and
/proc/driver/nvidia/version are described where they are parsed, below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UUID_RE = re.compile(r"\(UUID: (GPU-[0-9a-fA-F-]+)\)")
CDI_UUID_RE = re.compile(r"^nvidia\.com/gpu=(GPU-[0-9a-fA-F-]+)\s*$")


def gpu_uuids(smi_list: str) -> list[str]:
    """The GPU UUIDs in `nvidia-smi -L` output, in index order."""
    return UUID_RE.findall(smi_list)


def cdi_gpu_uuids(cdi_list: str) -> list[str]:
    """The GPU UUIDs that `nvidia-ctk cdi list` names as devices."""
    return [m.group(1) for line in cdi_list.splitlines() if (m := CDI_UUID_RE.match(line.strip()))]


def cdi_staleness(cdi_list: str, smi_list: str) -> str | None:
    """Why the CDI spec does not match the GPUs the driver sees (one line), or None when it does."""
    seen, listed = gpu_uuids(smi_list), cdi_gpu_uuids(cdi_list)
    if not seen:
        return "the driver sees no GPU (nvidia-smi -L lists none)"
    if "nvidia.com/gpu=all" not in cdi_list:
        return "no CDI spec lists nvidia.com/gpu=all"
    missing = [u for u in seen if u not in listed]
    unknown = [u for u in listed if u not in seen]
    if not missing and not unknown:
        return None
    parts = []
    if missing:
        parts.append(f"the CDI spec lacks {', '.join(missing)}")
    if unknown:
        parts.append(f"it lists {', '.join(unknown)}, which the driver does not see")
    return "; ".join(parts) + " (stale after a driver or GPU change)"


GPU_MEMORY_QUERY = "--query-gpu=index,uuid,memory.total,memory.used"
"""nvidia-smi's query for each GPU's memory; with --format=csv,noheader,nounits a GPU prints as
"0, GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f, 81559, 0" (MiB)."""
PROC_VERSION_RE = re.compile(r"^NVRM version:.*  ([0-9]+\.[0-9.]*)  ", re.MULTILINE)
SMI_EXIT_MARK = "gpuctl:exit "


@dataclass(frozen=True)
class GpuMemory:
    """One GPU as nvidia-smi lists it: its index, UUID and total memory in MiB."""

    index: int
    uuid: str
    total_mib: int


def gpu_memory(csv: str) -> list[GpuMemory]:
    """The GPUs in the output of `nvidia-smi GPU_MEMORY_QUERY --format=csv,noheader,nounits`; a line
    that is not such a row (an error message, a total of [N/A]) is left out."""
    gpus = []
    for line in csv.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) >= 3 and fields[0].isdigit() and fields[2].isdigit():
            gpus.append(GpuMemory(int(fields[0]), fields[1], int(fields[2])))
    return gpus


def proc_driver_version(text: str) -> str | None:
    """The driver version in /proc/driver/nvidia/version ('580.95.05' from "NVRM version: NVIDIA UNIX
    Open Kernel Module for x86_64  580.95.05  Release Build  (…)"), or None."""
    match = PROC_VERSION_RE.search(text)
    return match.group(1) if match else None


def smi_status(lines: list[str]) -> str:
    """'ok' when nvidia-smi exited 0, else "exit N: " and its first two lines, from the output of
    `nvidia-smi 2>&1; echo "gpuctl:exit $?"`."""
    said, found, code = "\n".join(lines).rpartition(SMI_EXIT_MARK)
    if not found:
        said, code = code, "?"
    code = code.strip() or "?"
    if code == "0":
        return "ok"
    first = said.rstrip("\n").split("\n")[:2]
    return f"exit {code}: {' '.join(first)}".strip()
