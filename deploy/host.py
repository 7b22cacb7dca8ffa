"""One host's whole deploy, in order: NVIDIA driver, Docker (+ container toolkit), vLLM engines (and
their healing), Ollama, gateway, firewall, monitoring (node exporter, DCGM exporter on GPU hosts;
Prometheus on the monitoring host)."""

from __future__ import annotations

from dataclasses import replace

from pyinfra import host

from gpuctl.deploy import memo
from gpuctl.deploy.container_toolkit import container_toolkit
from gpuctl.deploy.distribution import require_supported
from gpuctl.deploy.docker import docker
from gpuctl.deploy.endpoint import endpoint, stale_endpoints
from gpuctl.deploy.facts import LoginIdentity
from gpuctl.deploy.files import expect, put_rendered
from gpuctl.deploy.firewall import firewall
from gpuctl.deploy.gateway import gateway
from gpuctl.deploy.healing import healing, repair_unhealthy
from gpuctl.deploy.monitoring import dcgm_exporter, node_exporter, prometheus
from gpuctl.deploy.nvidia import nvidia_driver
from gpuctl.deploy.ollama import ollama_engine
from gpuctl.deploy.release_steps import files_differ
from gpuctl.deploy.vllm import vllm_engine
from gpuctl.errors import GpuctlError
from gpuctl.host_layout import at_home
from gpuctl.render import HostFiles, OllamaFiles
from gpuctl.spec import HostSpec


def in_home(rendered: HostFiles) -> HostFiles:
    """A user-level install's files at the deploying user's home (their ~), owned by that user."""
    user, group, home = host.get_fact(LoginIdentity)
    if not home.startswith("/"):
        raise GpuctlError(f"a user-level install needs the user's home: $HOME is {home!r}")
    ollama = rendered.ollama
    if ollama is None:
        return rendered
    moved = [replace(f, path=at_home(f.path, home), owner=user, group=group) for f in (ollama.unit, ollama.dropin)]
    return replace(rendered, ollama=OllamaFiles(unit=moved[0], dropin=moved[1]))


def deploy_host(spec: HostSpec, rendered: HostFiles) -> None:
    """Add every operation for SPEC to the current pyinfra host, using the files rendered for it."""
    memo.start()
    dist = require_supported(spec)
    if spec.install == "user":
        rendered = in_home(rendered)
    expect(list(rendered))  # every rendered file's state in one read
    if spec.install == "system":
        nvidia_driver(spec)  # a user-level install uses the driver an admin installed (deploy.ollama checks it)
    if spec.needs_docker():
        docker(spec, dist)
        if spec.needs_nvidia():
            container_toolkit(spec)
        if rendered.wait_healthy is not None:
            put_rendered(rendered.wait_healthy)
    for engine in spec.vllm:
        files = rendered.vllm[engine.name]
        restarting = files_differ(files.all())  # decided before its files are put
        vllm_engine(spec, engine, files)
        repair_unhealthy(engine, restarting)
    if rendered.healing is not None:
        healing(rendered.healing)
    if spec.ollama is not None and rendered.ollama is not None:
        ollama_engine(spec.ollama, rendered.ollama, gpu_host=spec.gpus is not None)
    if rendered.gateway is not None:
        gateway(spec, rendered.gateway)
    for fronted in spec.endpoints:
        endpoint(fronted, rendered.endpoints[fronted.name])
    if spec.gateway is not None or spec.endpoints:  # nginx may hold an endpoint this host no longer fronts
        stale_endpoints(spec)
    if rendered.firewall is not None:
        firewall(spec, rendered.firewall)
    if rendered.node_exporter is not None:
        node_exporter(rendered.node_exporter)
    if rendered.dcgm_exporter is not None:
        dcgm_exporter(rendered.dcgm_exporter)
    if rendered.monitoring is not None:
        prometheus(rendered.monitoring)
    if not spec.engines():
        host.noop("no engine in the spec")
