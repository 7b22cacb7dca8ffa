"""Preflight for a vLLM engine, run on the host before its running engine is replaced.

templates/vllm/preflight.sh asks the pinned image itself which flags it accepts (so a renamed flag fails
in seconds, not after a cold start), compares the CUDA version the image requires with what the driver
supports, and checks that the engine's GPUs have the memory its gpu_memory_utilization needs once the
engine's own container is stopped (another process holding VRAM is named); for a CPU engine, that the host's
available RAM holds its weights and KV space (gpuctl.capacity.cpu_ram_needed_bytes). Any failure stops the host
before a file is replaced, so the previous engine keeps running.

What the engine needs on each GPU is computed here, with the planner's own formula
(gpuctl.capacity.vllm_budget), from the total memory nvidia-smi reports. The operation reads the GPUs
when it runs, after the driver steps (a reboot included), not when the deploy is planned.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence

from pyinfra import host
from pyinfra.api import operation

from gpuctl import outside
from gpuctl.capacity import cpu_ram_needed_bytes, model_of, vllm_budget
from gpuctl.deploy.facts import NvidiaDriverVersion, NvidiaGpuMemory
from gpuctl.deploy.scripts import script_command
from gpuctl.gpu_facts import GpuMemory
from gpuctl.spec import HostSpec, VllmSpec


def flags_of(engine: VllmSpec) -> list[str]:
    return sorted({arg.split("=", 1)[0] for arg in engine.command_args() if arg.startswith("--")})


def checks_gpus(host_spec: HostSpec, engine: VllmSpec) -> bool:
    """Whether the preflight checks CUDA and GPU memory: the host has GPUs and the engine uses them."""
    return host_spec.gpus is not None and engine.gpu_access != "none"


def needed_mib(engine: VllmSpec, total_mib: int) -> int:
    """The memory ENGINE takes of a GPU of TOTAL_MIB, in whole MiB (vLLM's budget there)."""
    return int(vllm_budget(engine.gpu_memory_utilization, total_mib))


def gpu_words(engine: VllmSpec, gpus: Sequence[GpuMemory]) -> str:
    """The script's GPUS argument: INDEX:UUID:TOTAL_MIB:NEEDED_MIB for each of the engine's GPUs, or
    INDEX alone for one nvidia-smi does not list."""
    listed = {gpu.index: gpu for gpu in gpus}
    words = []
    for index in engine.gpu_indices():
        gpu = listed.get(index)
        words.append(f"{index}:{gpu.uuid}:{gpu.total_mib}:{needed_mib(engine, gpu.total_mib)}" if gpu else str(index))
    return " ".join(words)


def preflight_script(
    host_spec: HostSpec, engine: VllmSpec, gpus: Sequence[GpuMemory] = (), driver_cuda: str | None = None
) -> str:
    """The command that runs templates/vllm/preflight.sh for ENGINE.

    GPUS: the host's GPUs as nvidia-smi lists them (gpuctl.deploy.facts.NvidiaGpuMemory); DRIVER_CUDA: the
    highest CUDA of the loaded driver's branch, used when nvidia-smi's banner names none."""
    words = gpu_words(engine, gpus) if checks_gpus(host_spec, engine) else ""
    utilization = f"{engine.gpu_memory_utilization:g}"
    ram = str(ram_mib(engine)) if engine.device == "cpu" else ""
    return script_command(
        "vllm/preflight.sh",
        engine.image,
        engine.project,
        utilization,
        driver_cuda or "",
        words,
        ram,
        *flags_of(engine),
    )


def ram_mib(engine: VllmSpec) -> int:
    """The whole MiB of host RAM a CPU engine needs (gpuctl.capacity.cpu_ram_needed_bytes, as in the plan)."""
    return math.ceil(cpu_ram_needed_bytes(engine, model_of(engine)) / 2**20)


@operation(is_idempotent=False)
def vllm_preflight(host_spec: HostSpec, engine: VllmSpec) -> Generator[str, None, None]:
    """Run the preflight of ENGINE; its GPUs and driver are read when the operation runs."""
    gpus: list[GpuMemory] = []
    driver_cuda = None
    if checks_gpus(host_spec, engine):
        gpus = host.get_fact(NvidiaGpuMemory) or []
        driver = host.get_fact(NvidiaDriverVersion)
        driver_cuda = outside.max_cuda_of_driver(driver) if driver else None
    yield preflight_script(host_spec, engine, gpus, driver_cuda)
