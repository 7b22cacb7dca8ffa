"""`gpuctl discover HOST`: what a bare host is (read-only, over SSH or locally), and a ready inventory entry.

The host runs templates/discover/host-facts.sh (it changes nothing): distribution, kernel, CPU, RAM, free
disk where models go, Docker, the NVIDIA container toolkit, and the NVIDIA GPUs (nvidia-smi when a
driver is loaded, else the PCI bus). From that, gpuctl proposes an engine and a model the way the seed's
decision matrix does (vLLM for concurrent users on an NVIDIA GPU; Ollama for one user or without an NVIDIA
GPU), sized by the capacity planner, and prints the inventory entry in gpuctl's own Python.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from gpuctl import catalog, outside
from gpuctl.capacity import EnginePlan, plan_host
from gpuctl.deploy.scripts import script_command
from gpuctl.host_layout import HF_CACHE_DIR, PCI_DEVICES_DIR
from gpuctl.spec import DriverSpec, GpuSpec, HostSpec, OllamaSpec, SecretRef, VllmSpec

MIB = 1024**2


@dataclass
class FoundGpu:
    name: str
    memory_mib: int | None = None
    pci: str | None = None


@dataclass
class Found:
    """What the host said about itself."""

    os_id: str = "unknown"
    os_version: str = "unknown"
    os_name: str = "unknown"
    kernel: str = "?"
    arch: str = "?"
    cpus: int = 0
    cpu_model: str = "?"
    ram_gib: float = 0.0
    disk_free_gib: float | None = None
    docker: str | None = None
    toolkit: str | None = None
    driver: str | None = None
    cuda: str | None = None
    gpus: list[FoundGpu] = field(default_factory=list)
    nvswitches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def facts_command() -> str:
    """host-facts.sh, then the GPUs on the PCI bus as the driver step reads them (nvidia/pci-gpus.sh)."""
    facts = script_command("discover/host-facts.sh", str(HF_CACHE_DIR))
    pci = script_command("nvidia/pci-gpus.sh", str(PCI_DEVICES_DIR))
    return f"{facts}; {pci} | sed 's/^/pci_gpu=/'"


def parse(text: str) -> Found:
    """host-facts.sh's KEY=VALUE lines → Found."""
    found, pci, smi, memory = Found(), [], [], {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        value = value.strip()
        if key in ("os_id", "os_version", "os_name", "kernel", "arch", "cpu_model"):
            setattr(found, key, value or getattr(found, key))
        elif key in ("cpus", "nvswitches") and value.isdigit():
            setattr(found, key, int(value))
        elif key == "mem_kib" and value.isdigit():
            found.ram_gib = round(int(value) / MIB, 1)
        elif key == "disk_avail_bytes" and value.isdigit():
            found.disk_free_gib = round(int(value) / 1024**3, 1)
        elif key in ("docker", "toolkit", "driver", "cuda"):
            setattr(found, key, None if value in ("", "none") else value)
        elif key == "smi_gpu":
            smi.append(re.sub(r"^GPU \d+: (.*?)( \(UUID: .*\))?$", r"\1", value))
        elif key == "smi_memory":
            parts = [p.strip() for p in value.split(",")]
            if len(parts) >= 3 and parts[0].isdigit() and parts[2].isdigit():
                memory[int(parts[0])] = int(parts[2])
        elif key == "pci_gpu":
            pci.append(value)
    if smi:
        found.gpus = [FoundGpu(name, memory.get(i), pci[i] if i < len(pci) else None) for i, name in enumerate(smi)]
    else:
        found.gpus = [FoundGpu(pci_name(line), None, line) for line in pci]
    return found


def pci_name(line: str) -> str:
    """'00:06.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)' →
    'H100 SXM5 80GB' (the marketing name in brackets), else the line's device part."""
    names = re.findall(r"\[([^\]]*[A-Za-z][^\]]*)\]", line.split(": ", 1)[-1])
    names = [n for n in names if not re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{4}", n)]
    return names[-1] if names else line.split(": ", 1)[-1]


@dataclass
class Proposal:
    """The engine and model proposed, the host as an inventory would hold it, and the planner's verdict."""

    engine: str
    why: str
    host: HostSpec
    plan: EnginePlan | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "why": self.why,
            "plan": self.plan.as_dict() if self.plan else None,
            "entry": entry(self.host),
        }


VLLM_CANDIDATES = [
    # (Hugging Face id, served name, quantization): largest first; the first the planner fits is proposed.
    ("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", "llama-3.3-70b", None),
    ("Qwen/Qwen2.5-32B-Instruct-AWQ", "qwen2.5-32b", "awq"),
    ("Qwen/Qwen2.5-14B-Instruct", "qwen2.5-14b", None),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b", None),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b", None),
]


def gpu_spec(found: Found) -> GpuSpec | None:
    """The host's GPUs as the inventory names them (the catalog's model and memory), or None."""
    if not found.gpus:
        return None
    known = catalog.find_gpu(found.gpus[0].name)
    if known is None:
        mib = found.gpus[0].memory_mib
        if mib is None:
            return None
        return GpuSpec(model=found.gpus[0].name, count=len(found.gpus), memory_gib=round(mib / 1024, 1))
    return GpuSpec(model=known.name, count=len(found.gpus), memory_gib=known.memory_gib, nvswitch=found.nvswitches > 0)


def driver_spec(found: Found) -> DriverSpec:
    """The installed branch when it is at least the pinned one (it already runs the pinned vLLM's CUDA),
    else the pinned branch."""
    installed = int(found.driver.split(".")[0]) if found.driver and found.driver.split(".")[0].isdigit() else 0
    return DriverSpec(branch=max(installed, outside.DRIVER_BRANCH), open_kernel_modules=True)


def propose(name: str, address: str | None, found: Found, users: int, local: bool = False) -> Proposal:
    """vLLM for USERS > 1 on an NVIDIA GPU (the largest candidate the planner fits), else Ollama."""
    base: dict[str, Any] = {"name": name, "address": address} if not local else {"name": name, "local": True}
    gpus = gpu_spec(found)
    if gpus is not None and users > 1:
        size = gpus.count if gpus.count in (1, 2, 4, 8) else 1
        fp8 = bool((known := catalog.find_gpu(gpus.model)) and known.native_fp8)
        for model, served, quantization in VLLM_CANDIDATES:
            engine = VllmSpec(
                image=outside.VLLM_IMAGE,
                model=model,
                served_model_name=served,
                quantization=quantization,
                max_model_len=16384,
                kv_cache_dtype="fp8" if fp8 else "auto",
                tensor_parallel_size=size,
                gpus=list(range(size)),
                api_key=SecretRef(env="VLLM_API_KEY"),
                hf_token=SecretRef(env="HF_TOKEN"),
            )
            host = HostSpec(**base, gpus=gpus, driver=driver_spec(found), vllm=[engine])
            [plan] = plan_host(host)
            if plan.verdict == "fits":  # the planner's concurrency counts full-length (16k) sequences
                return Proposal("vllm", f"{users} concurrent users on {gpus.count}× {gpus.model}", host, plan)
    model = "llama3.1:8b" if gpus is not None or found.ram_gib >= 16 else "qwen2.5:0.5b"
    ollama = OllamaSpec(version=outside.OLLAMA_VERSION, models=[model], cpu_fallback=gpus is None)
    host = HostSpec(**base, **({"gpus": gpus, "driver": driver_spec(found)} if gpus else {}), ollama=ollama)
    plans = plan_host(host)
    why = "no NVIDIA GPU: Ollama on the CPU" if gpus is None else "one user: Ollama (or no vLLM candidate fits)"
    return Proposal("ollama", why, host, plans[0] if plans else None)


def entry(host: HostSpec) -> str:
    """HOST as one inventory line set, in gpuctl's Python (only what differs from the defaults)."""
    data = host.model_dump(exclude_unset=True, exclude={"name"})
    args = ", ".join(f"{key}={python(key, value)}" for key, value in data.items())
    line = f"hosts = [Host({host.name!r}, {args})]\n"
    used = sorted({"Host", *(b for b in (*BUILDERS.values(), "Secret") if f"{b}(" in line or f"{b}." in line)})
    return f"from gpuctl.inventory import {', '.join(used)}\n\n{line}"


BUILDERS = {"gpus": "Gpu", "driver": "Driver", "ollama": "Ollama", "vllm": "Vllm"}


def python(key: str, value: Any) -> str:
    """A spec value as inventory Python: builders for models, Secret.env for secrets."""
    if isinstance(value, dict) and set(value) <= {"env", "file"} and value:
        kind, ref = next(iter(value.items()))
        return f"Secret.{kind}({ref!r})"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}={python(k, v)}" for k, v in value.items())
        return f"{BUILDERS.get(key, 'dict')}({inner})"
    if isinstance(value, list) and key == "vllm":
        return ", ".join(python("vllm", v) for v in value) if len(value) == 1 else repr(value)
    return repr(value)


def host_name(address: str) -> str:
    """An inventory name for ADDRESS: a DNS name's first label, or 'host-' and the IP with dashes."""
    first = address.split(".")[0].lower() if not re.fullmatch(r"[0-9.:]+", address) else ""
    name = first if re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", first) else ""
    return name or "host-" + re.sub(r"[^0-9a-z]+", "-", address.lower()).strip("-")


def run_facts(target: HostSpec) -> Found:
    """host-facts.sh on TARGET (locally for a local host), parsed."""
    from gpuctl.errors import GpuctlError
    from gpuctl.verify.remote import Remote

    out = Remote(target).run(facts_command(), timeout=60)
    if not out.ok:
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise GpuctlError(f"{target.name}: cannot read the host's facts: {said[-1] if said else 'no output'}")
    return parse(out.stdout)
