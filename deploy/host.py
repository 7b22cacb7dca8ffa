"""One host's whole deploy, in order: NVIDIA driver, Docker (+ container toolkit), vLLM engines, Ollama,
gateway, firewall."""

from __future__ import annotations

from pyinfra import host

from gpuctl.deploy.container_toolkit import container_toolkit
from gpuctl.deploy.distribution import require_supported
from gpuctl.deploy.docker import docker
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.firewall import firewall
from gpuctl.deploy.gateway import gateway
from gpuctl.deploy.nvidia import nvidia_driver
from gpuctl.deploy.ollama import ollama_engine
from gpuctl.deploy.vllm import vllm_engine
from gpuctl.render import WAIT_HEALTHY, RenderedFile
from gpuctl.spec import HostSpec


def deploy_host(spec: HostSpec, rendered: list[RenderedFile]) -> None:
    """Add every operation for SPEC to the current pyinfra host, using the files rendered for it."""
    dist = require_supported(spec)
    nvidia_driver(spec)
    if spec.needs_docker():
        docker(spec, dist)
        if spec.needs_nvidia():
            container_toolkit(spec)
        put_rendered(next(f for f in rendered if f.path == WAIT_HEALTHY))
    for engine in spec.vllm:
        vllm_engine(spec, engine, [f for f in rendered if f.component == f"vllm:{engine.name}"])
    if spec.ollama is not None:
        ollama_engine(spec.ollama, [f for f in rendered if f.component == "ollama"])
    if spec.gateway is not None:
        gateway(spec, [f for f in rendered if f.component == "gateway"])
    if spec.firewall_enabled():
        firewall(spec, [f for f in rendered if f.component == "firewall"])
    if not spec.engines():
        host.noop("no engine in the spec")
