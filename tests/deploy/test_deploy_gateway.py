"""Secure exposure on a real fleet host: loopback engines behind the nginx gateway, the firewall, keys.

One host runs a vLLM engine and Ollama, both on loopback, behind `gateway=Gateway(...)` with the
private CA gpuctl creates, and the nftables firewall. The tests reach the host from outside (this
machine, through the host's veth) exactly as a client on the internet would.

Stand-ins, named: the vLLM image is the container STAND-IN (harness/images.py) with
`gpu_access="none"`; the Ollama binary is the STAND-IN from the local release mirror
(harness/mirror.py). Real: nginx and nftables from Debian, Docker, systemd, SSH, pyinfra, TLS.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import fault_times, images, mirror
from harness.fault_times import Stopwatch
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

IMAGE = "gpuctl-test/vllm-standin:v0.32.0"
ENGINE_KEY = "sk-engine-9f86d081884c7d659a2feaa0c55ad015"
ENV = {**os.environ, "GPUCTL_TEST_ENGINE_KEY": ENGINE_KEY}
PUBLISHED_PORT = 9000
OLLAMA_VERSION = "0.13.0"


def write_inventory(path: Path, host: Host, gateway: str = "") -> Path:
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Gateway, Host, Ollama, Secret, Vllm
        edge = [Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r},
                     ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                     docker=dict(packages=["docker.io", "docker-compose-plugin"]),
                     vllm=Vllm(name="main", image={IMAGE!r}, model="org/tiny-model", served_model_name="tiny",
                               gpu_access="none", start_timeout_s=120, api_key=Secret.env("GPUCTL_TEST_ENGINE_KEY")),
                     ollama=Ollama(version={OLLAMA_VERSION!r}, cpu_fallback=True,
                                   release_url={mirror.MIRROR_URL!r}, models=["qwen2.5:0.5b"]),
                     gateway=Gateway(engine="main", metrics_allow=[{host.address!r}]{gateway}))]
    """)
    )
    return path


def gpuctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gpuctl", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def can_connect(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


class ShellSession:
    """One SSH connection kept open across the deploy: a shell reading commands from stdin."""

    def __init__(self, host: Host) -> None:
        self.process = subprocess.Popen(
            host.ssh_argv("sh"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def ask(self, word: str, timeout: float = 10) -> str:
        """Echo WORD through the session; '' when no answer came within TIMEOUT."""
        assert self.process.stdin is not None and self.process.stdout is not None
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()), daemon=True)
        self.process.stdin.write(f"echo {word}\n")
        self.process.stdin.flush()
        reader.start()
        reader.join(timeout)
        return answer[0].strip() if answer else ""

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def gw_host(fleet: Fleet) -> Host:
    host = fleet.new_host("gw")
    images.install_docker(host)
    images.load_vllm_standin(fleet, host, IMAGE)
    mirror.serve(host)
    mirror.publish(host, OLLAMA_VERSION)
    # A container that publishes a port on every address, the way Docker bypasses ufw.
    host.run(
        f"docker run -d --name published -p {PUBLISHED_PORT}:{PUBLISHED_PORT} --entrypoint python3 {IMAGE} "
        f"-m http.server {PUBLISHED_PORT}"
    )
    host.run(f"timeout 20 sh -c 'until curl -fsS -o /dev/null http://127.0.0.1:{PUBLISHED_PORT}/; do sleep 0.2; done'")
    return host


@pytest.fixture(scope="module")
def deployed(gw_host: Host, tmp_path_factory) -> dict:
    """The first deploy, with an SSH session held open across it and the published port probed before."""
    inventory = write_inventory(tmp_path_factory.mktemp("inv") / "edge.py", gw_host)
    reachable_before = can_connect(gw_host.address, PUBLISHED_PORT)
    session = ShellSession(gw_host)
    alive_before = session.ask("before")
    result = gpuctl("deploy", str(inventory), "--yes")
    alive_after = session.ask("after")
    session.close()
    assert result.returncode == 0, result.stdout + result.stderr
    store = inventory.parent / ".gpuctl" / "edge"
    return {
        "inventory": inventory,
        "result": result,
        "store": store,
        "ca": store / "ca.pem",
        "key": (store / f"{gw_host.name}.api-key").read_text().strip(),
        "published_reachable_before": reachable_before,
        "session": (alive_before, alive_after),
        "base": f"https://{gw_host.address}",
    }


def call(deployed: dict, method: str, path: str, key: str | None = "spec", **kwargs) -> requests.Response:
    key = deployed["key"] if key == "spec" else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(
        method, deployed["base"] + path, headers=headers, verify=str(deployed["ca"]), timeout=30, **kwargs
    )


def test_raw_engine_ports_do_not_answer_from_outside_but_do_on_the_host(gw_host, deployed):
    for port in (8000, 11434):
        assert not can_connect(gw_host.address, port), f"engine port {port} answers from outside"
    assert json.loads(gw_host.run("curl -fsS http://127.0.0.1:11434/api/version").stdout) == {"version": "0.13.0"}
    assert gw_host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health").stdout == "200"


ROUTES = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/metrics"),
    ("GET", "/health"),
    ("GET", "/engines/ollama/api/tags"),
    ("POST", "/engines/ollama/api/pull"),
    ("GET", "/engines/ollama/v1/models"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_answers_401_without_the_right_key(deployed, method, path):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]} if method == "POST" else None
    wrong_case = deployed["key"].swapcase()
    for key in (None, "sk-wrong-key-0123456789abcdef", wrong_case, ENGINE_KEY):
        response = call(deployed, method, path, key, json=body)
        assert response.status_code == 401, (path, response.status_code)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="gpuctl"'
        assert response.json()["error"]["type"] == "unauthorized"


def test_the_auth_scheme_is_case_insensitive_and_the_key_is_not(deployed):
    """RFC 7235 §2.1: "bearer KEY" and "BEARER KEY" are the same credentials as "Bearer KEY"."""
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = requests.get(
            deployed["base"] + "/v1/models",
            headers={"Authorization": f"{scheme} {deployed['key']}"},
            verify=str(deployed["ca"]),
            timeout=30,
        )
        assert response.status_code == 200, (scheme, response.status_code)


def test_streamed_completion_with_the_key_and_tls_verified_against_the_handed_out_ca(deployed):
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with call(deployed, "POST", "/v1/chat/completions", json=body, stream=True) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 12
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 12
    # The chain is gpuctl's CA: the system's trust store does not accept it, the handed-out ca.pem does.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(deployed["base"] + "/v1/models", timeout=10)
    context = ssl.create_default_context(cafile=str(deployed["ca"]))
    with socket.create_connection((deployed["base"][8:], 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=deployed["base"][8:]) as tls:
            assert tls.version() in ("TLSv1.3", "TLSv1.2")
    assert stat.S_IMODE(deployed["ca"].stat().st_mode) == 0o644


def test_the_gateway_sends_the_engine_its_own_key(deployed):
    models = call(deployed, "GET", "/v1/models")
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["tiny"]


def test_metrics_need_the_key_except_from_the_allowed_scraper(gw_host, deployed):
    assert call(deployed, "GET", "/metrics", None).status_code == 401
    with_key = call(deployed, "GET", "/metrics")
    assert with_key.status_code == 200 and "vllm:generation_tokens_total" in with_key.text
    # The host's own address is the allowed scraper; it reads /metrics without a key, and only /metrics.
    ca = gw_host.run("mktemp").stdout.strip()
    gw_host.write_file(ca, deployed["ca"].read_bytes())
    curl = f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {ca} https://{gw_host.address}"
    assert gw_host.run(f"{curl}/metrics").stdout == "200"
    assert gw_host.run(f"{curl}/v1/models").stdout == "401"


def test_ollama_admin_routes_are_refused_even_with_the_key(deployed):
    tags = call(deployed, "GET", "/engines/ollama/api/tags")
    assert tags.status_code == 200 and [m["name"] for m in tags.json()["models"]] == ["qwen2.5:0.5b"]
    for path in ("/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy", "/api/blobs/sha256:00"):
        response = call(deployed, "POST", "/engines/ollama" + path, json={"model": "qwen2.5:0.5b"})
        assert response.status_code == 403, path
    assert call(deployed, "GET", "/engines/ollama/api/tags").json()["models"], "nothing was deleted"


def test_firewall_keeps_the_ssh_session_and_blocks_the_docker_published_port(gw_host, deployed):
    assert deployed["session"] == ("before", "after"), "the SSH session held across the deploy was cut"
    assert gw_host.run("echo new-session").stdout.strip() == "new-session"
    assert deployed["published_reachable_before"], "the container's port answered from outside before the firewall"
    assert not can_connect(gw_host.address, PUBLISHED_PORT)
    assert gw_host.run(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{PUBLISHED_PORT}/").stdout == "200"
    # Without gpuctl's table the port answers again: the firewall is what blocks it.
    gw_host.run("systemctl stop gpuctl-firewall")
    try:
        assert can_connect(gw_host.address, PUBLISHED_PORT)
    finally:
        gw_host.run("systemctl start gpuctl-firewall")
    assert not can_connect(gw_host.address, PUBLISHED_PORT)
    assert gw_host.run("systemctl is-enabled gpuctl-firewall").stdout.strip() == "enabled"


def test_verify_goes_through_the_gateway_with_the_generated_key(deployed):
    result = gpuctl("verify", str(deployed["inventory"]), "--json", timeout=300)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    urls = {e["engine"]: e["url"] for e in report["engines"]}
    assert urls == {"vllm:main": deployed["base"], "ollama": deployed["base"] + "/engines/ollama"}
    checks = {(e["engine"], c["name"]): c for e in report["engines"] for c in e["checks"]}
    assert checks[("vllm:main", "gateway auth")]["ok"] and checks[("ollama", "gateway admin")]["ok"]
    assert checks[("vllm:main", "stream")]["ok"] and checks[("ollama", "chat")]["ok"]


def nginx_master(host: Host) -> str:
    return host.run("systemctl show -p MainPID --value nginx.service").stdout.strip()


def engine_started(host: Host) -> str:
    return host.run("docker inspect -f '{{.State.StartedAt}}' gpuctl-vllm-main").stdout.strip()


def test_second_deploy_changes_nothing(gw_host, deployed):
    before = (nginx_master(gw_host), engine_started(gw_host))
    result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
    assert result.returncode == 0, result.stderr
    [outcome] = json.loads(result.stdout)["hosts"]
    assert (outcome["status"], outcome["changes"]) == ("unchanged", [])
    assert (nginx_master(gw_host), engine_started(gw_host)) == before


def test_rotation_swaps_the_key_with_a_reload_while_a_stream_keeps_going(gw_host, deployed):
    old_key = deployed["key"]
    before = (nginx_master(gw_host), engine_started(gw_host))
    body = {"model": "tiny", "messages": [{"role": "user", "content": "long"}], "max_tokens": 1500, "stream": True}
    streamed: list[str] = []

    def stream() -> None:
        with call(deployed, "POST", "/v1/chat/completions", old_key, json=body, stream=True) as response:
            streamed.extend(line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: "))

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(0.5)
    result = gpuctl("keys", "rotate", str(deployed["inventory"]), "--yes", "--json")
    worker.join(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["rotated"] == [gw_host.name]
    key_file = deployed["store"] / f"{gw_host.name}.api-key"
    new_key = key_file.read_text().strip()
    assert new_key != old_key and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    deployed["key"] = new_key
    assert streamed and streamed[-1] == "data: [DONE]", "the stream open during the reload did not finish"
    assert len(streamed) >= 1500 // 2
    assert call(deployed, "GET", "/v1/models", old_key).status_code == 401
    assert call(deployed, "GET", "/v1/models", new_key).status_code == 200
    assert (nginx_master(gw_host), engine_started(gw_host)) == before, "rotation restarted nginx or the engine"
    for text in (result.stdout, result.stderr):
        assert old_key not in text and new_key not in text


def test_switching_v1_to_ollama_reloads_only_the_gateway(gw_host, deployed):
    before = engine_started(gw_host)
    write_inventory(deployed["inventory"], gw_host).write_text(
        deployed["inventory"].read_text().replace('engine="main"', 'engine="ollama"')
    )
    try:
        result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
        assert result.returncode == 0, result.stderr
        [outcome] = json.loads(result.stdout)["hosts"]
        assert all("gateway" in c.lower() or "nginx" in c.lower() for c in outcome["changes"]), outcome["changes"]
        models = call(deployed, "GET", "/v1/models")  # the deploy returns once the new site serves
        assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["qwen2.5:0.5b"]
        assert call(deployed, "POST", "/api/pull", json={"model": "x"}).status_code == 403
        for method, path in (("GET", "/api/tags"), ("POST", "/api/pull"), ("GET", "/v1/models")):
            assert call(deployed, method, path, None, json={"model": "x"}).status_code == 401, path
        assert call(deployed, "GET", "/engines/main/v1/models").json()["data"][0]["id"] == "tiny"
        assert engine_started(gw_host) == before
    finally:
        write_inventory(deployed["inventory"], gw_host)
        assert gpuctl("deploy", str(deployed["inventory"]), "--yes").returncode == 0


def verify_checks(deployed: dict) -> tuple[int, dict[tuple[str, str], dict]]:
    result = gpuctl("verify", str(deployed["inventory"]), "--json", timeout=300)
    report = json.loads(result.stdout)
    return result.returncode, {(e["engine"], c["name"]): c for e in report["engines"] for c in e["checks"]}


def test_a_deleted_firewall_table_is_named_by_verify_and_loaded_again_by_deploy(gw_host, deployed):
    """Fault: `nft delete table inet gpuctl` (by hand, or a `flush ruleset`): every port is open again."""
    gw_host.run("nft delete table inet gpuctl")
    try:
        with Stopwatch() as detect:
            code, checks = verify_checks(deployed)
        assert code == 1
        assert checks[("vllm:main", "firewall")]["reason"] == (
            "the live nftables table inet gpuctl is not loaded (deleted by hand or by `nft flush ruleset`): every "
            "port is open; gpuctl deploy loads it again"
        )
        with Stopwatch() as repair:
            result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
        assert result.returncode == 0, result.stdout[-2000:]
        assert json.loads(result.stdout)["hosts"][0]["changes"] == [
            "Firewall (nftables) | Apply the firewall ruleset (the live table inet gpuctl was missing)"
        ]
        fault_times.record("firewall table deleted", detect.seconds, repair.seconds, "gpuctl deploy")
        assert gw_host.run("nft list table inet gpuctl", check=False).ok
        code, checks = verify_checks(deployed)
        assert code == 0 and checks[("vllm:main", "firewall")]["reason"].startswith(
            "table inet gpuctl is loaded: input drops all but 22"
        )
    finally:
        gw_host.run("nft list table inet gpuctl >/dev/null 2>&1 || systemctl reload gpuctl-firewall", check=False)


def test_an_engine_running_without_its_key_is_named_by_verify_and_repaired_by_deploy(gw_host, deployed):
    """Fault: the engine restarted without its key. Behind the gateway clients never see the engine's key,
    so only a check on the host itself can tell; deploy rewrites the 0600 env file and restarts the engine."""
    gw_host.run(
        "sed -i '/^VLLM_API_KEY=/d' /etc/gpuctl/vllm-main/vllm.env && systemctl restart gpuctl-vllm-main", timeout=300
    )
    with Stopwatch() as detect:
        code, checks = verify_checks(deployed)
    assert code == 1
    assert checks[("vllm:main", "engine key")]["reason"] == (
        "on the host, 127.0.0.1:8000/v1/models answers 200 without a key: the engine runs without its API key; "
        "gpuctl deploy restores it"
    )
    with Stopwatch() as repair:
        result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
    fault_times.record("engine running without its key (gateway)", detect.seconds, repair.seconds, "gpuctl deploy")
    assert result.returncode == 0, result.stdout[-2000:]
    assert (
        "vLLM engine | Restart gpuctl-vllm-main.service (its files changed)"
        in json.loads(result.stdout)["hosts"][0]["changes"]
    )
    code, checks = verify_checks(deployed)
    assert code == 0, {k: c["reason"] for k, c in checks.items() if not c["ok"]}
    assert checks[("vllm:main", "engine key")]["reason"] == (
        "on the host, 127.0.0.1:8000/v1/models refuses a request without the engine's key (401)"
    )


def test_no_secret_in_output_logs_or_world_readable_files(gw_host, deployed):
    dry = gpuctl("deploy", str(deployed["inventory"]), "--dry", "--diff", "--verbose")
    outputs = [deployed["result"].stdout, deployed["result"].stderr, dry.stdout, dry.stderr]
    key_pem = (deployed["store"] / f"{gw_host.name}-key.pem").read_text()
    key_body = "".join(key_pem.strip().splitlines()[1:-1])[:40]
    secrets = [deployed["key"], ENGINE_KEY, key_body]
    for text in outputs:
        for value in secrets:
            assert value not in text
    for name in (f"{gw_host.name}.api-key", f"{gw_host.name}-key.pem", "ca-key.pem"):
        assert stat.S_IMODE((deployed["store"] / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(deployed["store"].stat().st_mode) == 0o700
    # On the host: every file holding a secret is root-only, and no log or journal holds one.
    for value in secrets:
        search = (
            "grep -rlF --devices=skip -e "
            + _quote(value)
            + " /etc /var /usr/local /srv /opt /root /home /tmp /run 2>/dev/null || true"
        )
        holders = [p for p in gw_host.run(search, timeout=300).stdout.split() if p]
        assert holders, "the secret is on the host somewhere (or this scan could not find anything)"
        for path in holders:
            # Readable only by root: an unprivileged user cannot open it (file mode and folders on the way).
            nobody = gw_host.run(f"runuser -u nobody -- cat {path} >/dev/null 2>&1 && echo readable || echo denied")
            assert nobody.stdout.strip() == "denied", path
            assert gw_host.run(f"stat -c %U {path}").stdout.strip() == "root", path
            assert not path.startswith("/var/log/"), path
        journal = gw_host.run("journalctl --no-pager -o cat | grep -cF -e " + _quote(value) + " || true").stdout.strip()
        assert journal == "0", "a secret reached the journal"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def wait_for(condition, what: str, timeout_s: float = 180, every_s: float = 3):
    """Poll CONDITION (bounded in time and count) until it returns something true; return that."""
    for _ in range(int(timeout_s / every_s) + 1):
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def container_health(host: Host) -> tuple[str, str]:
    """(health, start time) of the engine's container."""
    out = host.run("docker inspect -f '{{.State.Health.Status}} {{.State.StartedAt}}' gpuctl-vllm-main").stdout
    health, _, started = out.strip().partition(" ")
    return health, started


def make_engine_dead(host: Host) -> str:
    """STAND-IN fault: /health answers 503 from now on; Docker's healthcheck turns it unhealthy after three
    failed probes. Returns the container's start time, which a restart changes."""
    host.run('curl -fsS -X POST 127.0.0.1:8000/standin/fault -d \'{"mode": "dead"}\' >/dev/null')
    wait_for(lambda: container_health(host)[0] == "unhealthy", "Docker marks the container unhealthy")
    return container_health(host)[1]


def test_an_unhealthy_engine_is_restarted_by_the_host_itself(gw_host, deployed):
    """Fault: the engine stops answering /health. gpuctl-heal.timer restarts it with no deploy at all."""
    started = make_engine_dead(gw_host)
    with Stopwatch() as detect:
        code, checks = verify_checks(deployed)
    assert code == 1
    assert checks[("vllm:main", "container")]["reason"] == "gpuctl-vllm-main running, unhealthy"
    with Stopwatch() as repair:
        wait_for(
            lambda: (
                container_health(gw_host)[0] == "healthy"
                and container_health(gw_host)[1] != started
                and gw_host.run("systemctl is-active gpuctl-vllm-main", check=False).stdout.strip() == "active"
            ),
            "the heal timer restarts the engine, it is healthy again and its unit active",
            timeout_s=300,
        )
    journal = gw_host.run("journalctl -u gpuctl-heal.service --no-pager -o cat").stdout
    assert "gpuctl-vllm-main is unhealthy: restarting gpuctl-vllm-main.service (restart 1 while unhealthy)" in journal
    code, checks = verify_checks(deployed)
    assert code == 0, {k: c["reason"] for k, c in checks.items() if not c["ok"]}
    fault_times.record("engine unhealthy (/health 503)", detect.seconds, repair.seconds, "gpuctl-heal.timer")


def test_an_unhealthy_engine_is_a_difference_deploy_repairs(gw_host, deployed):
    """Fault: the engine is unhealthy and the host's heal timer was stopped by hand: deploy restarts the
    engine (before, it said "unchanged" over it) and starts the timer again."""
    gw_host.run("systemctl stop gpuctl-heal.timer")
    try:
        make_engine_dead(gw_host)
        with Stopwatch() as detect:
            code, checks = verify_checks(deployed)
        assert code == 1 and checks[("vllm:main", "container")]["reason"] == "gpuctl-vllm-main running, unhealthy"
        with Stopwatch() as repair:
            result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
        assert result.returncode == 0, result.stdout[-2000:]
        changes = json.loads(result.stdout)["hosts"][0]["changes"]
        assert changes == [
            "vLLM engine | Restart gpuctl-vllm-main.service (its container is unhealthy)",
            "Engine healing | gpuctl-heal.timer enabled and running",
        ]
        assert gw_host.run("systemctl is-active gpuctl-heal.timer").stdout.strip() == "active"
        code, checks = verify_checks(deployed)
        assert code == 0, {k: c["reason"] for k, c in checks.items() if not c["ok"]}
        fault_times.record("engine unhealthy, heal timer stopped", detect.seconds, repair.seconds, "gpuctl deploy")
    finally:
        gw_host.run("systemctl start gpuctl-heal.timer", check=False)


def test_a_stopped_gateway_is_named_by_verify_and_started_by_deploy(gw_host, deployed):
    gw_host.run("systemctl stop nginx")
    with Stopwatch() as detect:
        code, checks = verify_checks(deployed)
    assert code == 1
    reason = checks[("vllm:main", "gateway tls")]["reason"]
    assert (
        reason == f"nothing answers on {gw_host.address}:443 (connection refused): is the gateway deployed and running?"
    )
    with Stopwatch() as repair:
        result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
    assert result.returncode == 0, result.stdout[-2000:]
    assert json.loads(result.stdout)["hosts"][0]["changes"] == ["Gateway (nginx) | nginx.service enabled and running"]
    code, checks = verify_checks(deployed)
    assert code == 0, {k: c["reason"] for k, c in checks.items() if not c["ok"]}
    fault_times.record("nginx stopped", detect.seconds, repair.seconds, "gpuctl deploy")


def test_a_gateway_config_edited_by_hand_is_named_by_verify_and_restored_by_deploy(gw_host, deployed):
    """Fault: someone 'fixes' a 401 on the host by editing the gateway's site and reloading nginx."""
    gw_host.run("sed -i 's/return 401;/return 200;/' /etc/nginx/conf.d/gpuctl-gateway.conf && systemctl reload nginx")
    with Stopwatch() as detect:
        code, checks = verify_checks(deployed)
    assert code == 1
    assert checks[("vllm:main", "gateway auth")]["reason"].startswith("without the key these did not answer 401: ")
    with Stopwatch() as repair:
        result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
    assert result.returncode == 0, result.stdout[-2000:]
    assert json.loads(result.stdout)["hosts"][0]["changes"] == [
        "Gateway (nginx) | File /etc/nginx/conf.d/gpuctl-gateway.conf",
        "Gateway (nginx) | nginx -t (configuration and certificate check)",
        "Gateway (nginx) | Reload nginx (graceful: open streams finish)",
    ]
    code, checks = verify_checks(deployed)
    assert code == 0, {k: c["reason"] for k, c in checks.items() if not c["ok"]}
    fault_times.record("gateway site edited by hand", detect.seconds, repair.seconds, "gpuctl deploy")


def test_a_request_hidden_in_an_unread_body_never_runs_behind_the_gateway(gw_host, deployed):
    """nginx keeps connections to the engine alive; a body the engine's route does not read must be
    discarded (as Go's net/http and uvicorn do), never read as the next request on that connection: a
    request smuggled that way would run without the gateway's key check. Here the hidden request would
    switch the engine STAND-IN to its 'hang' fault; every later request would then stall."""
    hidden = 'POST /standin/fault HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{"mode": "hang"}'
    for _ in range(3):
        assert call(deployed, "GET", "/version", data=hidden).status_code == 200  # a route that reads no body
    answers = [call(deployed, "GET", "/v1/models").status_code for _ in range(20)]
    assert answers == [200] * 20
    assert json.loads(gw_host.run("curl -fsS 127.0.0.1:8000/standin/fault").stdout) == {"mode": "none"}


def test_an_engine_that_stops_generating_is_named_by_verify_and_restarted_by_deploy(gw_host, deployed):
    """Fault: the engine answers /health (so Docker calls it healthy) but gives no token (STAND-IN 'hang':
    every request gets its headers, then nothing). deploy's one-token probe finds it and restarts it."""
    gw_host.run('curl -fsS -X POST 127.0.0.1:8000/standin/fault -d \'{"mode": "hang"}\' >/dev/null')
    with Stopwatch() as detect:
        result = gpuctl("verify", str(deployed["inventory"]), "--json", "--gen-timeout", "5", timeout=300)
    assert result.returncode == 1
    reasons = [c["reason"] for e in json.loads(result.stdout)["engines"] for c in e["checks"] if not c["ok"]]
    assert any(r.startswith("engine not generating: no token within 5 s") for r in reasons), reasons
    with Stopwatch() as repair:
        deployed_again = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
    assert deployed_again.returncode == 0, deployed_again.stdout[-2000:]
    assert json.loads(deployed_again.stdout)["hosts"][0]["changes"] == [
        "vLLM engine | Restart gpuctl-vllm-main.service (it answers /health but gave no token in 30 s)"
    ]
    code, checks = verify_checks(deployed)
    assert code == 0, {k: c["reason"] for k, c in checks.items() if not c["ok"]}
    fault_times.record("engine not generating, /health 200", detect.seconds, repair.seconds, "gpuctl deploy")
