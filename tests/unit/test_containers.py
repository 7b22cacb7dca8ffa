"""The container reader (docker-py's `Container` model over `docker inspect` JSON) and the container check.

`RecordedHost` is a STAND-IN for SSH to a GPU host (no Docker or SSH here): it answers `docker inspect NAME`
with recorded output of that shape: a JSON list of one container, or `[]` on stdout and Docker's
"No such object" on stderr with exit status 1. The JSON documents are `docker inspect` output of compose
containers trimmed of long paths and network settings, fields and nesting kept as Docker prints them.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

from gpuctl.verify.containers import (
    ContainerState,
    container_state,
    container_status,
    inspect_container,
    parse_inspect,
)
from gpuctl.verify.host_checks import container_check
from gpuctl.verify.remote import Output

HEALTHY_VLLM = {
    "Id": "8f3c2a9d41e6b07c5d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c",
    "Created": "2025-03-04T09:12:03.118512345Z",
    "Path": "python3",
    "Args": ["-m", "vllm.entrypoints.openai.api_server", "--model", "/models/qwen", "--port", "8000"],
    "State": {
        "Status": "running",
        "Running": True,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 41877,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "2025-03-04T09:12:04.001911785Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
        "Health": {
            "Status": "healthy",
            "FailingStreak": 0,
            "Log": [
                {
                    "Start": "2025-03-04T09:14:34.512207372Z",
                    "End": "2025-03-04T09:14:34.598311405Z",
                    "ExitCode": 0,
                    "Output": "",
                }
            ],
        },
    },
    "Image": "sha256:4b1f0e6d2c3a5b7e9f8d6c4b2a0e1f3d5c7b9a8e6f4d2c0b1a3e5f7d9c8b6a4e",
    "Name": "/gpuctl-vllm-a",
    "RestartCount": 0,
    "Driver": "overlay2",
    "Platform": "linux",
    "MountLabel": "",
    "ProcessLabel": "",
    "AppArmorProfile": "docker-default",
    "ExecIDs": None,
    "HostConfig": {
        "NetworkMode": "gpuctl-vllm-a_default",
        "PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}]},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "ShmSize": 17179869184,
    },
    "Config": {
        "Hostname": "8f3c2a9d41e6",
        "User": "",
        "ExposedPorts": {"8000/tcp": {}},
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HF_HUB_OFFLINE=1"],
        "Cmd": ["--model", "/models/qwen", "--port", "8000"],
        "Healthcheck": {
            "Test": ["CMD-SHELL", "curl -fsS http://127.0.0.1:8000/health || exit 1"],
            "Interval": 10000000000,
            "Timeout": 5000000000,
            "StartPeriod": 600000000000,
            "Retries": 3,
        },
        "Image": "vllm/vllm-openai:v0.8.5",
        "Entrypoint": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "Labels": {
            "com.docker.compose.config-hash": "3a4e0d8f6c2b1a9e7d5c3b1a0f8e6d4c2b0a9f7e5d3c1b0a8f6e4d2c0b9a7f5e",
            "com.docker.compose.container-number": "1",
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.project": "gpuctl-vllm-a",
            "com.docker.compose.service": "vllm",
            "com.docker.compose.version": "2.32.4",
        },
    },
    "NetworkSettings": {"Ports": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}]}},
}


def without_healthcheck() -> dict:
    """The same container started from an image and a compose file that define no healthcheck."""
    doc = copy.deepcopy(HEALTHY_VLLM)
    doc["Name"] = "/gpuctl-vllm-c"
    del doc["State"]["Health"]
    del doc["Config"]["Healthcheck"]
    doc["Config"]["Labels"]["com.docker.compose.project"] = "gpuctl-vllm-c"
    return doc


def exited_with_1() -> dict:
    """A vLLM container that crashed at start-up (exit status 1) after two restarts; its last probe failed."""
    doc = copy.deepcopy(HEALTHY_VLLM)
    doc["Name"] = "/gpuctl-vllm-b"
    doc["RestartCount"] = 2
    doc["State"].update(
        {
            "Status": "exited",
            "Running": False,
            "Pid": 0,
            "ExitCode": 1,
            "FinishedAt": "2025-03-04T09:13:41.734208112Z",
        }
    )
    doc["State"]["Health"].update({"Status": "unhealthy", "FailingStreak": 4})
    doc["Config"]["Labels"]["com.docker.compose.project"] = "gpuctl-vllm-b"
    return doc


def listed(doc: dict) -> str:
    """As `docker inspect` prints it: a JSON list, indented by four spaces."""
    return json.dumps([doc], indent=4) + "\n"


NO_SUCH = Output(1, "[]\n", "Error: No such object: gpuctl-vllm-z\n")


class RecordedHost:
    """STAND-IN for SSH to a GPU host: answers each command with recorded output and remembers the commands."""

    def __init__(self, answers: dict[str, Output]) -> None:
        self.answers = answers
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 30) -> Output:
        self.commands.append(command)
        return self.answers.get(command, Output(0, "", ""))


def host_with(name: str, out: Output) -> RecordedHost:
    return RecordedHost({f"docker inspect {name}": out})


def test_a_running_healthy_container_reads_as_docker_py_models_it():
    host = host_with("gpuctl-vllm-a", Output(0, listed(HEALTHY_VLLM), ""))
    assert container_state(host, "gpuctl-vllm-a") == ContainerState(
        name="gpuctl-vllm-a", status="running", health="healthy", restart_count=0, exit_code=0
    )
    assert host.commands == ["docker inspect gpuctl-vllm-a"], "plain JSON, no Go template to split"


def test_a_container_without_a_healthcheck_has_health_none():
    state = parse_inspect(Output(0, listed(without_healthcheck()), "")).state
    assert state is not None
    assert (state.name, state.status, state.health) == ("gpuctl-vllm-c", "running", "none")


def test_an_exited_container_keeps_its_exit_code_and_restarts():
    state = parse_inspect(Output(0, listed(exited_with_1()), "")).state
    assert state == ContainerState(
        name="gpuctl-vllm-b", status="exited", health="unhealthy", restart_count=2, exit_code=1
    )


def test_no_such_object_is_none_with_dockers_words():
    found = inspect_container(host_with("gpuctl-vllm-z", NO_SUCH), "gpuctl-vllm-z")
    assert found.state is None
    assert found.error == "Error: No such object: gpuctl-vllm-z"


@pytest.mark.parametrize(
    ("out", "status"),
    [
        (Output(0, listed(HEALTHY_VLLM), ""), "running"),
        (Output(0, listed(exited_with_1()), ""), "exited"),
        (NO_SUCH, "absent"),
    ],
)
def test_container_status_for_the_cold_start_wait(out, status):
    assert container_status(host_with("gpuctl-vllm-x", out), "gpuctl-vllm-x") == status


def test_something_else_of_that_name_is_not_a_container():
    image = {"Id": "sha256:4b1f", "RepoTags": ["gpuctl-vllm-a:latest"], "Config": {"Labels": None}}
    found = parse_inspect(Output(0, listed(image), ""))
    assert found.state is None and "not a container" in found.error


def engine(name: str) -> SimpleNamespace:
    """The two fields of a VllmSpec the container check reads."""
    return SimpleNamespace(project=name, unit_name=f"{name}.service", systemctl="systemctl", journalctl="journalctl")


def test_the_container_check_says_running_healthy():
    host = host_with("gpuctl-vllm-a", Output(0, listed(HEALTHY_VLLM), ""))
    check = container_check(host, engine("gpuctl-vllm-a"))
    assert (check.ok, check.reason, check.numbers) == (True, "gpuctl-vllm-a running, healthy", {"restart_count": 0})
    assert check.details == []


def test_the_container_check_of_an_exited_container_gives_its_exit_code_and_logs():
    host = host_with("gpuctl-vllm-b", Output(0, listed(exited_with_1()), ""))
    host.answers["docker logs --tail 20 gpuctl-vllm-b 2>&1"] = Output(0, "RuntimeError: CUDA out of memory\n", "")
    check = container_check(host, engine("gpuctl-vllm-b"))
    assert (check.ok, check.reason) == (False, "gpuctl-vllm-b exited, unhealthy (exit code 1)")
    assert check.numbers == {"restart_count": 2}
    assert check.details == ["RuntimeError: CUDA out of memory"]


def test_the_container_check_without_a_healthcheck_is_not_healthy():
    host = host_with("gpuctl-vllm-c", Output(0, listed(without_healthcheck()), ""))
    check = container_check(host, engine("gpuctl-vllm-c"))
    assert (check.ok, check.reason) == (False, "gpuctl-vllm-c running, none")


def test_the_container_check_of_a_missing_container_shows_the_journal():
    host = host_with("gpuctl-vllm-z", NO_SUCH)
    host.answers["journalctl -u gpuctl-vllm-z.service -n 20 --no-pager -o cat"] = Output(
        0, "Started gpuctl-vllm-z.service\n", ""
    )
    check = container_check(host, engine("gpuctl-vllm-z"))
    assert (check.ok, check.reason) == (False, "no container gpuctl-vllm-z: Error: No such object: gpuctl-vllm-z")
    assert check.details == ["Started gpuctl-vllm-z.service"]
