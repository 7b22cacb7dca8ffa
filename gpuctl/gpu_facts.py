"""Parsers for what NVIDIA's tools print on a host, shared by deploy's facts and verify's checks.

Shapes (see gpuctl/outside.py for sources): `nvidia-smi -L` prints one line per GPU,
"GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-979d25eb-…)"; `nvidia-ctk cdi list` prints
"INFO[0000] Found 3 CDI devices" (a log line) then one device name per line:
"nvidia.com/gpu=0", "nvidia.com/gpu=GPU-<uuid>", "nvidia.com/gpu=all".
"""

from __future__ import annotations

import re

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
