"""The inventory's vLLM engines as a values file for vLLM's production-stack Helm chart (vllm-stack), for teams
that want its router (session-aware routing across replicas) instead of plain manifests.

The chart builds the engine's command line itself: `vllm serve MODEL_URL --host 0.0.0.0 --port 8000`, then
`--[no-]enable-prefix-caching` from vllmConfig.enablePrefixCaching, then vllmConfig.extraArgs in order
(helm/templates/deployment-vllm-multi.yaml, outside.PRODUCTION_STACK_CHART). Everything else of the engine's
own command line (`VllmSpec.command_args`, one source of truth) goes into extraArgs, so the chart runs the
same flags as the compose file. Secrets stay references: the env entries read the engine's Secret, which
`gpuctl render --target kubernetes` says how to create.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gpuctl import outside
from gpuctl.kubernetes import GPU_POD_REQUESTS, HF_CACHE_SIZE, PlainDumper, container_env, gfd_product, name_of
from gpuctl.spec import CONTAINER_PORT, HostSpec, VllmSpec

CHART_EMITTED = ("--host", "--port", "--enable-prefix-caching", "--no-enable-prefix-caching")
"""Flags the chart's template writes itself (besides the positional model)."""


def extra_args(engine: VllmSpec) -> list[str]:
    """The engine's command line without what the chart writes itself: the model, --host and --port with
    their values, and the prefix-caching switch (vllmConfig.enablePrefixCaching)."""
    args = engine.command_args()[1:]  # the positional model is modelURL
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--host", "--port"):
            skip = True
            continue
        if arg not in CHART_EMITTED:
            kept.append(arg)
    return kept


def model_spec(host: HostSpec, engine: VllmSpec) -> dict[str, Any] | None:
    """One servingEngineSpec.modelSpec entry; None for an image pinned by digest (the chart writes
    REPOSITORY:TAG, which cannot hold a digest)."""
    if "@" in engine.image:
        return None
    repository, tag = engine.image.rsplit(":", 1)
    name = name_of(host, engine)
    env = container_env(engine, f"{name}-secrets")
    spec: dict[str, Any] = {
        "name": name,
        "repository": repository,
        "tag": tag,
        "modelURL": engine.model,
        "replicaCount": 1,
        "requestCPU": int(GPU_POD_REQUESTS["cpu"]),
        "requestMemory": GPU_POD_REQUESTS["memory"],
        "requestGPU": len(engine.gpu_indices()) if engine.device == "gpu" else 0,
        "pvcStorage": HF_CACHE_SIZE,
        "env": env,
        "vllmConfig": {"enablePrefixCaching": engine.enable_prefix_caching, "extraArgs": extra_args(engine)},
    }
    if engine.shm_size:
        spec["shmSize"] = engine.shm_size.upper().replace("K", "Ki").replace("M", "Mi").replace("G", "Gi")
    if engine.device == "gpu" and host.gpus is not None:
        product = gfd_product(host.gpus.model)
        term = {"key": "nvidia.com/gpu.product", "operator": "In", "values": [product]}
        spec["nodeSelectorTerms"] = [{"matchExpressions": [term]}]
    return spec


def values(hosts: list[HostSpec]) -> tuple[dict[str, Any], list[str]]:
    """The values file for every vLLM engine of HOSTS, and the engines left out (with why)."""
    specs, left_out = [], []
    for host in hosts:
        for engine in host.vllm:
            spec = model_spec(host, engine)
            if spec is None:
                left_out.append(f"{host.name} {engine.label}: pinned by digest; the chart takes repository:tag")
            else:
                specs.append(spec)
    return {"servingEngineSpec": {"containerPort": CONTAINER_PORT, "modelSpec": specs}}, left_out


def write(hosts: list[HostSpec], out_dir: Path) -> tuple[Path, list[str]]:
    """OUT/production-stack-values.yaml for every vLLM engine of HOSTS; the engines left out, with why."""
    data, left_out = values(hosts)
    path = out_dir / "production-stack-values.yaml"
    header = (
        f"# gpuctl: values for vLLM's production-stack chart ({outside.PRODUCTION_STACK_CHART}):\n"
        "#   helm install vllm vllm/vllm-stack -f production-stack-values.yaml\n"
        "# Each engine's Secret is the one the manifests beside this file say how to create.\n"
    )
    header += "".join(f"# left out: {why}\n" for why in left_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.dump(data, Dumper=PlainDumper, sort_keys=False))
    return path, left_out
