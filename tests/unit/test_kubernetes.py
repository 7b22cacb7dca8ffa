"""`gpuctl render INVENTORY --target kubernetes`: every vLLM engine of the example inventories as manifests,
validated offline against the Kubernetes API's OpenAPI schemas (kubernetes-validate, strict: unknown fields
are errors) for KUBERNETES_VERSION; the container's arguments are the compose file's (one function)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from gpuctl import inventory
from gpuctl.kubernetes import KUBERNETES_VERSION, manifests
from gpuctl.render import render_host
from gpuctl.spec import HostSpec, VllmSpec
from harness.cli import REPO, run_cli

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ENGINES = [
    (host, engine)
    for name in ("prod", "cpu-server", "vagrant")
    for host in inventory.load(name, cwd=REPO).hosts.values()
    for engine in host.vllm
]


@pytest.mark.parametrize(("host", "engine"), ENGINES, ids=[f"{h.name}-{e.name}" for h, e in ENGINES])
def test_manifests_validate_against_the_kubernetes_schemas(host, engine):
    documents = manifests(host, engine)
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "PersistentVolumeClaim"]
    for document in documents:
        assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == "1.33"


def test_the_validator_does_fail_on_a_broken_manifest():
    host, engine = ENGINES[0]
    deployment = manifests(host, engine)[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["periodSecond"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("host", "engine"), ENGINES, ids=[f"{h.name}-{e.name}" for h, e in ENGINES])
def test_the_container_runs_the_compose_files_command_line(host, engine):
    compose = yaml.safe_load(render_host(host).vllm[engine.name].compose.content)["services"]["vllm"]
    container = manifests(host, engine)[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == compose["command"] == engine.command_args()
    assert container["image"] == compose["image"]


def test_gpus_probes_and_secrets_come_from_the_spec(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-never-in-a-manifest-0123456789abcdef")
    prod = inventory.load("prod", cwd=REPO).hosts["gpu-h100-01"]
    deployment, service, claim = manifests(prod, prod.vllm[0])
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}  # tensor_parallel_size=2
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB"}
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= prod.vllm[0].start_timeout_s
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {
        "VLLM_API_KEY": {"name": "vllm-gpu-h100-01-main-secrets", "key": "VLLM_API_KEY"},
        "HF_TOKEN": {"name": "vllm-gpu-h100-01-main-secrets", "key": "HF_TOKEN"},
    }
    assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]  # compose's ipc: host
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert os.environ["VLLM_API_KEY"] not in yaml.safe_dump_all([deployment, service, claim])


def test_a_cpu_engine_asks_for_no_gpu():
    host = HostSpec(
        name="cpu",
        address="10.0.0.9",
        vllm=[VllmSpec(image="vllm/vllm-openai:v0.32.0", model="m", device="cpu", shm_size="4g")],
    )
    pod = manifests(host, host.vllm[0])[0]["spec"]["template"]["spec"]
    assert "limits" not in pod["containers"][0]["resources"] and "nodeSelector" not in pod
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}} in pod["volumes"]


def test_render_writes_one_file_per_engine_with_how_to_make_its_secret(tmp_path):
    result = run_cli("render", "prod", "--target", "kubernetes", "--out", str(tmp_path), cwd=REPO)
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [
        "production-stack-values.yaml",  # tests/unit/test_production_stack.py
        "vllm-gpu-01-main.yaml",
        "vllm-gpu-02-main.yaml",
        "vllm-gpu-h100-01-main.yaml",
    ]
    text = (tmp_path / "vllm-gpu-01-main.yaml").read_text()
    command = text.splitlines()[1].removeprefix("# Its Secret (values never in these files): ")
    assert command == (
        """printf '%s\\n' "VLLM_API_KEY=$VLLM_API_KEY" "HF_TOKEN=$HF_TOKEN" | """
        "kubectl create secret generic vllm-gpu-01-main-secrets --from-env-file=/dev/stdin"
    )
    # The values go through a pipe from bash's printf (a builtin): no process's arguments hold them.
    made = subprocess.run(
        ["bash", "-c", command.split(" | ")[0]],
        capture_output=True,
        text=True,
        timeout=10,
        env={"PATH": os.environ["PATH"], "VLLM_API_KEY": "sk-x", "HF_TOKEN": "hf-y"},
    )
    assert made.stdout == "VLLM_API_KEY=sk-x\nHF_TOKEN=hf-y\n"
    assert "&id" not in text and len(list(yaml.safe_load_all(text))) == 3


def test_long_names_stay_within_kubernetes_limits():
    host = HostSpec(
        name="a" * 40,
        address="10.0.0.9",
        vllm=[VllmSpec(name="b" * 30, image="vllm/vllm-openai:v0.32.0", model="m", gpu_access="none")],
    )
    deployment, service, claim = manifests(host, host.vllm[0])
    for document in (deployment, service, claim):
        assert len(document["metadata"]["name"]) <= 63
        assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == "1.33"
    assert (
        deployment["metadata"]["name"]
        != manifests(host.model_copy(update={"name": "a" * 39 + "c"}), host.vllm[0])[0]["metadata"]["name"]
    )
