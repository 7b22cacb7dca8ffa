"""gpuctl.access: one connection type for pyinfra and ssh, and how a client reaches an engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.access import Connection, client_access, engine_endpoint
from gpuctl.errors import GpuctlError
from gpuctl.spec import GatewaySpec, HostSpec, OllamaSpec, SecretRef, VllmSpec

VLLM = VllmSpec(image="vllm/vllm-openai:v0.32.0", model="org/m", gpu_access="none")


@pytest.mark.parametrize(
    ("user", "sudo", "expected"),
    [("root", None, False), ("ops", None, True), ("ops", False, False), ("root", True, True)],
)
def test_sudo_is_decided_once_for_pyinfra_and_ssh(user, sudo, expected):
    connection = Connection.of(HostSpec(name="h", address="10.0.0.1", ssh_user=user, sudo=sudo, vllm=[VLLM]))
    assert connection.sudo is expected
    assert connection.pyinfra_host()[1].get("_sudo", False) is expected


def test_a_local_host_never_uses_sudo_and_is_pyinfras_local_connector():
    connection = Connection.of(HostSpec(name="laptop", local=True, ssh_user="ops", sudo=True, vllm=[VLLM]))
    assert connection.sudo is False
    assert connection.pyinfra_host() == ("@local", {"gpuctl_name": "laptop"})


def test_ssh_and_pyinfra_get_the_same_settings(tmp_path):
    spec = HostSpec(
        name="h",
        address="10.0.0.1",
        ssh_user="ops",
        ssh_port=2222,
        ssh_key="~/k",
        ssh_known_hosts_file="~/kh",
        ssh_strict_host_key_checking="yes",
        vllm=[VLLM],
    )
    connection = Connection.of(spec)
    _, data = connection.pyinfra_host()
    argv = connection.ssh_argv(5)
    assert data["ssh_key"] == str(Path("~/k").expanduser()) and ["-i", data["ssh_key"]] == argv[argv.index("-i") :][:2]
    assert f"UserKnownHostsFile={data['ssh_known_hosts_file']}" in argv
    assert argv[argv.index("-p") :][:2] == ["-p", "2222"] and data["ssh_port"] == 2222
    assert "StrictHostKeyChecking=yes" in argv and connection.destination == "ops@10.0.0.1"


def test_without_a_gateway_a_client_reaches_a_loopback_engine_through_a_tunnel_with_its_own_key(monkeypatch):
    monkeypatch.setenv("ENGINE_KEY", "sk-engine-key-0123456789")
    engine = VLLM.model_copy(update={"api_key": SecretRef(env="ENGINE_KEY")})
    host = HostSpec(name="h", address="10.0.0.1", vllm=[engine])
    client = client_access(host, host.vllm[0], keystore=None, base_dir=Path("."))
    assert (client.via, client.api_key, client.key_required, client.gateway) == (
        "ssh tunnel",
        "sk-engine-key-0123456789",
        True,
        None,
    )


def test_behind_a_gateway_a_client_uses_its_url_and_key_and_a_missing_key_is_said(tmp_path):
    host = HostSpec(
        name="h", address="10.0.0.1", ollama=OllamaSpec(version="0.13.0", cpu_fallback=True), gateway=GatewaySpec()
    )
    with pytest.raises(GpuctlError, match="keystore"):
        client_access(host, host.ollama, keystore=None, base_dir=tmp_path)
    direct = client_access(host, host.ollama, keystore=None, base_dir=tmp_path, direct=True)
    assert (direct.via, direct.api_key, direct.key_required) == ("ssh tunnel", None, False)


@pytest.mark.parametrize(
    ("bind", "url"),
    [("0.0.0.0", "http://127.0.0.1:8000"), ("::", "http://127.0.0.1:8000"), ("::1", "http://[::1]:8000")],
)
def test_a_local_engine_is_reached_on_loopback(bind, url):
    host = HostSpec(
        name="l",
        local=True,
        vllm=[
            VllmSpec(image=VLLM.image, model="org/m", gpu_access="none", bind=bind, port=8000, unsafe_public_bind=True)
        ],
    )
    with engine_endpoint(None, host, host.vllm[0]) as base:  # type: ignore[arg-type]
        assert base == url
