"""The inventory's vLLM engines as Kubernetes manifests (`gpuctl render INVENTORY --target kubernetes`), for
teams that outgrow SSH-managed hosts: the same engine settings, the same command line as the compose file
(`VllmSpec.command_args`, one source of truth), secrets by reference only.

Per engine: a Deployment (one replica, Recreate: a GPU cannot hold two copies during a rollout), a Service,
and a PersistentVolumeClaim for the Hugging Face cache. Validated offline against the OpenAPI schemas of
KUBERNETES_VERSION (tests/unit/test_kubernetes.py, kubernetes-validate).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import yaml

from gpuctl.render import STOP_GRACE_S
from gpuctl.spec import CONTAINER_PORT, HostSpec, VllmSpec

KUBERNETES_VERSION = "1.33.0"
"""The Kubernetes API version the manifests are validated against."""
HF_CACHE_SIZE = "200Gi"
"""The Hugging Face cache claim: room for a 70B FP8 model's weights (~70 GB) twice over; edit for others."""
GPU_POD_REQUESTS = {"cpu": "4", "memory": "32Gi"}
"""What the pod asks of the node besides its GPUs: vLLM's API server, tokenizer and weight loading."""
PROBE_PERIOD_S = 10


class PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases: each manifest reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


NAME_MAX = 54
"""Names of objects and label values: at most 63 characters, with room for '-hf-cache' and '-secrets'."""


def name_of(host: HostSpec, engine: VllmSpec) -> str:
    """vllm-HOST-ENGINE, shortened with a hash of the whole when longer than NAME_MAX (still unique)."""
    name = f"vllm-{host.name}-{engine.name}"
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: NAME_MAX - 9].rstrip('-.')}-{digest}"


def gfd_product(model: str) -> str:
    """The value NVIDIA's GPU feature discovery gives nodes as nvidia.com/gpu.product: the GPU's name with
    '-' for spaces (e.g. NVIDIA-H100-80GB-HBM3). From the inventory's model name, so check it against
    `kubectl get nodes -L nvidia.com/gpu.product`."""
    name = model if model.upper().startswith("NVIDIA") else f"NVIDIA {model}"
    return "-".join(name.split())


def container_env(engine: VllmSpec, secret: str) -> list[dict[str, Any]]:
    """The container's environment: telemetry off, the engine's own settings, its secrets read from SECRET."""
    env: list[dict[str, Any]] = [{"name": "VLLM_NO_USAGE_STATS", "value": "1"}, {"name": "DO_NOT_TRACK", "value": "1"}]
    env += [{"name": key, "value": value} for key, value in engine.environment().items()]
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in engine.secret_env()]
    return env


def container(engine: VllmSpec, secret: str) -> dict[str, Any]:
    env = container_env(engine, secret)
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    resources: dict[str, Any] = {"requests": dict(GPU_POD_REQUESTS)}
    if engine.device == "gpu":
        gpus = str(len(engine.gpu_indices()))
        resources = {"limits": {"nvidia.com/gpu": gpus}, "requests": {**GPU_POD_REQUESTS, "nvidia.com/gpu": gpus}}
    return {
        "name": "vllm",
        "image": engine.image,
        "args": engine.command_args(),
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT}],
        "env": env,
        "resources": resources,
        "volumeMounts": [
            {"name": "hf-cache", "mountPath": "/root/.cache/huggingface"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
        # The cold start (download, load, compile) may take start_timeout_s; only then do the others count.
        "startupProbe": {
            **probe,
            "periodSeconds": PROBE_PERIOD_S,
            "failureThreshold": math.ceil(engine.start_timeout_s / PROBE_PERIOD_S),
        },
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": PROBE_PERIOD_S, "failureThreshold": 3},
    }


def deployment(host: HostSpec, engine: VllmSpec) -> dict[str, Any]:
    name = name_of(host, engine)
    labels = {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "gpuctl",
    }
    shm: dict[str, Any] = {"medium": "Memory"}  # the compose file's ipc: host / shm_size
    if engine.shm_size:
        shm["sizeLimit"] = engine.shm_size.upper().replace("K", "Ki").replace("M", "Mi").replace("G", "Gi")
    pod: dict[str, Any] = {
        "containers": [container(engine, f"{name}-secrets")],
        "terminationGracePeriodSeconds": STOP_GRACE_S,
        "volumes": [
            {"name": "hf-cache", "persistentVolumeClaim": {"claimName": f"{name}-hf-cache"}},
            {"name": "shm", "emptyDir": shm},
        ],
    }
    if engine.device == "gpu" and host.gpus is not None:
        pod["nodeSelector"] = {"nvidia.com/gpu.product": gfd_product(host.gpus.model)}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def manifests(host: HostSpec, engine: VllmSpec) -> list[dict[str, Any]]:
    """ENGINE of HOST as a Deployment, its Service and its cache's PersistentVolumeClaim."""
    name = name_of(host, engine)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "gpuctl"}},
        "spec": {
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http"}],
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{name}-hf-cache", "labels": {"app.kubernetes.io/managed-by": "gpuctl"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": HF_CACHE_SIZE}}},
    }
    return [deployment(host, engine), service, claim]


def secret_command(host: HostSpec, engine: VllmSpec) -> str | None:
    """The kubectl command (bash) that creates the engine's Secret from the inventory's own references; the
    values go through a pipe, never kubectl's arguments (which `ps` shows)."""
    refs = engine.secret_env()
    if not refs:
        return None
    lines = " ".join(f'"{key}=${ref.env}"' if ref.env else f'"{key}=$(cat {ref.file})"' for key, ref in refs.items())
    secret = f"{name_of(host, engine)}-secrets"
    return f"printf '%s\\n' {lines} | kubectl create secret generic {secret} --from-env-file=/dev/stdin"


def write(hosts: list[HostSpec], out_dir: Path) -> list[dict[str, str]]:
    """One file per engine, OUT/NAME.yaml (its documents), with a header saying how to create its Secret."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for host in hosts:
        for engine in host.vllm:
            path = out_dir / f"{name_of(host, engine)}.yaml"
            header = f"# gpuctl: vLLM engine {engine.name} of {host.name}, Kubernetes {KUBERNETES_VERSION}\n"
            command = secret_command(host, engine)
            if command:
                header += f"# Its Secret (values never in these files): {command}\n"
            documents = yaml.dump_all(manifests(host, engine), Dumper=PlainDumper, sort_keys=False)
            path.write_text(header + documents)
            written.append({"host": host.name, "engine": engine.label, "path": str(path)})
    return written
