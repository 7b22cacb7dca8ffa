"""Docker and the Compose v2 plugin, installed by apt from the local repository, run on a host."""

from __future__ import annotations

import time
import urllib.request

import pytest

from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

PORT = 8080
COMPOSE_FILE = f"""\
services:
  web:
    image: gpuctl-test/httpd:latest
    ports:
      - "{PORT}:80"
    healthcheck:
      test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/"]
      interval: 1s
      timeout: 2s
      retries: 20
"""


def http_get(url: str, timeout: float = 30) -> str:
    """GET ``url`` from this machine, retrying (bounded) until it answers."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    for _ in range(int(timeout / 0.5) + 1):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()
        except OSError as exc:
            last = exc
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s: {last}")


@pytest.fixture(scope="module")
def docker_host(fleet: Fleet) -> Host:
    host = fleet.host("docker")
    host.run("apt-get update -q", timeout=120)
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose-plugin", timeout=600)
    host.run("timeout 60 sh -c 'until docker info >/dev/null 2>&1; do sleep 0.5; done'")
    return host


def test_compose_plugin_is_installed_like_dockers_package(docker_host: Host) -> None:
    path = "/usr/libexec/docker/cli-plugins/docker-compose"
    assert docker_host.run(f"dpkg -S {path}").stdout.startswith("docker-compose-plugin:")
    assert "v2." in docker_host.run("docker compose version").stdout


def test_docker_import_runs_a_container(docker_host: Host, fleet: Fleet) -> None:
    docker_host.put_file(fleet.image_tarball(kind="sleep", fmt="rootfs"), "/var/tmp/rootfs.tar")
    docker_host.run("docker import --change 'CMD [\"/bin/sh\"]' /var/tmp/rootfs.tar gpuctl-test/imported:latest")
    out = docker_host.run("docker run --rm gpuctl-test/imported:latest /bin/busybox echo hi", timeout=120).stdout
    assert out.strip() == "hi"


def test_compose_up_wait_serves_http_outside_the_host(docker_host: Host, fleet: Fleet) -> None:
    tarball = fleet.image_tarball(kind="httpd", fmt="docker-archive", tag="gpuctl-test/httpd:latest")
    docker_host.put_file(tarball, "/var/tmp/httpd-image.tar")
    docker_host.run("docker load -i /var/tmp/httpd-image.tar")
    docker_host.write_file("/srv/web/compose.yaml", COMPOSE_FILE)
    docker_host.run("cd /srv/web && docker compose up -d --wait", timeout=180)
    try:
        status = docker_host.run("docker inspect -f '{{.State.Health.Status}}' web-web-1").stdout
        assert status.strip() == "healthy"
        body = http_get(f"http://{docker_host.address}:{PORT}/")
        assert body == "gpuctl test image\n"
    finally:
        docker_host.run("cd /srv/web && docker compose down", check=False, timeout=120)
