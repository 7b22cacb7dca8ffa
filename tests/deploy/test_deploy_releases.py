"""Releases on a real fleet host: each deploy that changes a vLLM engine records it, verify marks it,
`gpuctl history` lists them and `gpuctl rollback` returns to one, verified.

Stand-in, named: the vLLM image is the container STAND-IN (harness/images.py) with `gpu_access="none"`,
imported under two tags (two "releases" of the same pinned version). Real: systemd, Docker, Compose, SSH,
pyinfra, the release script on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from harness import fault_times, images
from harness.fault_times import Stopwatch
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

V1 = "gpuctl-test/vllm-standin:v0.32.0"
V2 = "gpuctl-test/vllm-standin:v0.32.0-build2"
API_KEY = "sk-releases-8d969eef6ecad3c29a3a629280e686cf"
ENV = {**os.environ, "GPUCTL_TEST_VLLM_KEY": API_KEY}
ROOT = "/var/lib/gpuctl/releases/vllm-main"


def write_inventory(path: Path, host: Host, image: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Host, Secret, Vllm
        prod = [Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r},
                     ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                     docker=dict(packages=["docker.io", "docker-compose-plugin"]),
                     vllm=Vllm(image={image!r}, model="org/tiny-model", served_model_name="tiny", gpu_access="none",
                               start_timeout_s=120, api_key=Secret.env("GPUCTL_TEST_VLLM_KEY")))]
    """)
    )
    return path


def gpuctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gpuctl", *args], capture_output=True, text=True, timeout=600, env=ENV)


def history(inventory: Path) -> list[dict]:
    result = gpuctl("history", str(inventory), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["engines"][0]["releases"]


def running_image(host: Host) -> str:
    return host.run("docker inspect -f '{{.Config.Image}}' gpuctl-vllm-main").stdout.strip()


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> Host:
    host = fleet.new_host("releases")
    images.install_docker(host)
    images.load_vllm_standin(fleet, host, V1)
    host.run(f"docker tag {V1} {V2}")
    return host


@pytest.fixture(scope="module")
def inventories(host: Host, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inv")
    paths = {"v1": write_inventory(folder / "v1.py", host, V1), "v2": write_inventory(folder / "v2.py", host, V2)}
    for name in ("v1", "v2"):
        deployed = gpuctl("deploy", str(paths[name]), "--yes", "--json")
        assert deployed.returncode == 0, deployed.stdout[-2000:]
        assert gpuctl("verify", str(paths[name]), "--json").returncode == 0
    return paths


def test_each_changing_deploy_records_a_release_and_verify_marks_it(host, inventories):
    releases = history(inventories["v2"])
    assert [(r["image"], r["verify"], r["current"]) for r in releases] == [(V1, "passed", False), (V2, "passed", True)]
    assert all(r["engine"] == "vllm:main" and r["gpuctl_version"] and r["spec_sha256"] for r in releases)
    # On the host: 0700 root folders, the env file (the engine's key) 0600 and nowhere else.
    assert host.run(f"stat -c '%a %U' {ROOT} /var/lib/gpuctl/releases/vllm-main/*").stdout.split("\n")[0] == "700 root"
    modes = host.run(f"stat -c '%a %n' {ROOT}/*/vllm.env").stdout.split()
    assert modes[::2] == ["600", "600"]
    assert host.run(f"grep -rl {API_KEY} {ROOT} | grep -v '/vllm.env$' || true").stdout == ""


def test_an_unchanged_deploy_records_nothing_and_restarts_nothing(host, inventories):
    before = history(inventories["v2"])
    result = gpuctl("deploy", str(inventories["v2"]), "--yes", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["hosts"][0]["changes"] == []
    assert history(inventories["v2"]) == before


def test_rollback_returns_to_the_previous_verified_release_and_verifies_it(host, inventories):
    releases = history(inventories["v2"])
    with Stopwatch() as took:
        result = gpuctl("rollback", str(inventories["v2"]), "--yes", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    [outcome] = json.loads(result.stdout)["engines"]
    assert (outcome["from_release"], outcome["to_release"], outcome["ok"]) == (
        releases[1]["id"],
        releases[0]["id"],
        True,
    )
    assert running_image(host) == V1
    assert [r["current"] for r in history(inventories["v2"])] == [True, False]
    fault_times.record("rollback to the previous release (stand-in)", 0.0, took.seconds, "gpuctl rollback")
    # The inventory still says v2: the next deploy applies it again, as a new release.
    redeployed = gpuctl("deploy", str(inventories["v2"]), "--yes", "--json")
    assert redeployed.returncode == 0, redeployed.stdout[-2000:]
    assert running_image(host) == V2
    assert [r["image"] for r in history(inventories["v2"])] == [V1, V2, V2]


def test_rollback_to_a_named_release_and_to_one_that_does_not_exist(host, inventories):
    first = history(inventories["v2"])[0]["id"]
    named = gpuctl("rollback", str(inventories["v2"]), "--to", first, "--yes", "--json")
    assert named.returncode == 0, named.stdout[-2000:]
    assert running_image(host) == V1
    missing = gpuctl("rollback", str(inventories["v2"]), "--to", "20000101T000000Z", "--yes")
    assert missing.returncode == 1
    assert "no release 20000101T000000Z (recorded: " in missing.stdout
    assert running_image(host) == V1
    human = gpuctl("history", str(inventories["v2"]))
    assert human.returncode == 0 and first in human.stdout and "live" in human.stdout
