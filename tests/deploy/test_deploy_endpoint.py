"""A fleet endpoint on three real hosts: one https://FRONT:8443/v1 balancing across the three hosts' gateways,
with its own key; a host that goes down is left out with no failed request, a stream it was serving fails
cleanly and is never sent again, and the host rejoins when it is back.

Hosts a, b and c each run Ollama on loopback behind their gateway (private CA) and firewall; a also runs
the endpoint (nginx, port 8443). They reach each other through this machine (IPv4 forwarding on their veths
only, harness.routing). Stand-ins, named: the Ollama binary is the STAND-IN from the local release mirror,
with a token delay so a stream lasts long enough to break. Real: nginx, nftables, systemd, SSH, pyinfra, TLS.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gpuctl.access import PinnedTrustSession
from harness import mirror, routing
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

OLLAMA_VERSION = "0.13.0"
MODEL = "llama-3.1-8b"
TOKEN_DELAY_S = 0.05  # the stand-in's pace: 200 tokens take 10 s
GATEWAY_LOG = "/var/log/nginx/gpuctl-gateway.access.log"
ENDPOINT_LOG = "/var/log/nginx/gpuctl-endpoint-llm.access.log"


def write_inventory(path: Path, hosts: list[Host]) -> Path:
    nodes = ", ".join(f"node({h.name!r}, {h.address!r}, {str(h.ssh_key)!r}, {str(h.known_hosts)!r})" for h in hosts)
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Endpoint, Gateway, Host, Model, Ollama
        LLAMA = Model({MODEL!r}, ollama="qwen2.5:0.5b")

        def node(name, address, key, known_hosts):
            return Host(name, address=address, ssh_key=key, ssh_known_hosts_file=known_hosts,
                        ssh_strict_host_key_checking="yes", gateway=Gateway(),
                        ollama=Ollama(version={OLLAMA_VERSION!r}, cpu_fallback=True,
                                      release_url={mirror.MIRROR_URL!r}, models=[LLAMA]))

        gpu = [{nodes}]
        llm = Endpoint("llm", hosts=gpu, model=LLAMA, on={hosts[0].name!r}, port=8443, fail_timeout_s=5)
    """)
    )
    return path


def gpuctl(*args: str, timeout: float = 600) -> tuple[int, dict, str]:
    result = subprocess.run(["gpuctl", *args, "--json"], capture_output=True, text=True, timeout=timeout)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


@pytest.fixture(scope="module")
def trio(fleet: Fleet) -> Iterator[list[Host]]:
    hosts = [fleet.new_host(name) for name in ("a", "b", "c")]
    try:
        with routing.host_to_host(hosts):
            for host in hosts:
                mirror.serve(host)
                mirror.publish(host, OLLAMA_VERSION)
                # Not gpuctl's drop-in: the stand-in's pace, so that a stream lasts long enough to break.
                host.write_file(
                    "/etc/systemd/system/ollama.service.d/standin.conf",
                    f"[Service]\nEnvironment=OLLAMA_STANDIN_TOKEN_DELAY={TOKEN_DELAY_S}\n",
                )
            yield hosts
    finally:
        for host in hosts:
            host.destroy()


@pytest.fixture(scope="module")
def inventory(trio: list[Host], tmp_path_factory) -> Path:
    path = write_inventory(tmp_path_factory.mktemp("inv") / "fleet.py", trio)
    code, report, stderr = gpuctl("deploy", str(path), "--yes", timeout=900)
    assert code == 0, stderr + json.dumps(report)[:2000]
    return path


@pytest.fixture(scope="module")
def client(inventory: Path) -> requests.Session:
    """A client of the endpoint: its key and the CA gpuctl handed out, nothing else."""
    keys = inventory.parent / ".gpuctl" / "fleet"
    http = PinnedTrustSession()  # trusts only gpuctl's CA, whatever REQUESTS_CA_BUNDLE says
    http.verify = str(keys / "ca.pem")
    http.headers["Authorization"] = f"Bearer {(keys / 'endpoint.llm.api-key').read_text().strip()}"
    return http


def url(trio: list[Host], path: str) -> str:
    return f"https://{trio[0].address}:8443{path}"


def chat(client: requests.Session, trio: list[Host], max_tokens: int = 8) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    try:
        return client.post(url(trio, "/v1/chat/completions"), json=body, timeout=30).status_code
    except requests.RequestException:
        return 0


def served(host: Host) -> int:
    """Chat completions HOST's gateway answered (its access log)."""
    return int(host.run(f"grep -c 'POST /v1/chat/completions' {GATEWAY_LOG} || true").stdout.strip() or 0)


def test_the_endpoint_serves_its_model_with_its_own_key_and_verify_passes(trio, inventory, client):
    models = client.get(url(trio, "/v1/models"), timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    host_key = (inventory.parent / ".gpuctl" / "fleet" / f"{trio[1].name}.api-key").read_text().strip()
    wrong = requests.get(url(trio, "/v1/models"), headers={"Authorization": f"Bearer {host_key}"}, verify=client.verify)
    assert wrong.status_code == 401  # a host's key is not the endpoint's
    direct = requests.get(
        f"https://{trio[1].address}/v1/models", headers=dict(client.headers), verify=client.verify, timeout=10
    )
    assert direct.status_code == 401  # and the endpoint's key is not a host's
    upstream = (inventory.parent / ".gpuctl" / "fleet" / "endpoint.llm.upstream.api-key").read_text().strip()
    front_key = {"Authorization": f"Bearer {upstream}"}
    for path, status in (("/v1/models", 200), ("/api/tags", 401), ("/engines/ollama/v1/models", 401)):
        got = requests.get(f"https://{trio[1].address}{path}", headers=front_key, verify=client.verify, timeout=10)
        assert got.status_code == status, path  # the front's own key opens a host's /v1/ only
    code, report, stderr = gpuctl("verify", "llm", "-i", str(inventory), timeout=300)
    assert code == 0, stderr + json.dumps(report)[:3000]
    first, *hosts = report["engines"]
    assert first["engine"] == "endpoint llm" and {c["name"] for c in first["checks"]} == {
        "models",
        "chat",
        "stream",
        "auth",
    }
    assert sorted(r["host"] for r in hosts) == sorted(h.name for h in trio)


def test_the_application_configured_by_gpuctl_env_alone_runs_through_the_endpoint(trio, inventory):
    """tests/data/hybrid_app.py (the official openai client) in a fresh bash that only evals `gpuctl env llm`."""
    app = Path(__file__).resolve().parents[1] / "data" / "hybrid_app.py"
    script = 'eval "$(gpuctl env llm -i "$1")" && exec "$2" "$3"'
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SSL_CERT"))}
    result = subprocess.run(
        ["bash", "-c", script, "-", str(inventory), sys.executable, str(app)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"ok {MODEL} via https://{trio[0].address}:8443/v1"), result.stdout


def test_bench_through_the_endpoint_adds_up_the_hosts(trio, inventory):
    before = [served(h) for h in trio]
    args = ["-c", "1,3", "-n", "6", "--prompt-tokens", "30", "--output-tokens", "20"]
    code, report, stderr = gpuctl("bench", "llm", "-i", str(inventory), *args, timeout=600)
    assert code == 0, stderr[-2000:] + json.dumps(report)[:2000]
    [run] = report["runs"]
    assert run["ok"] and run["via"] == "endpoint" and run["url"] == f"https://{trio[0].address}:8443"
    assert all(level["errors"] == 0 for level in run["levels"])
    assert all(served(h) > b for h, b in zip(trio, before, strict=True))  # every host took part
    one, three = (level["aggregate_tok_s"] for level in run["levels"])
    print(f"\nbench through the endpoint: {one} tok/s with 1 stream, {three} tok/s with 3 (aggregate of 3 hosts)")


def test_requests_are_spread_over_every_host(trio, client):
    before = [served(h) for h in trio]
    assert [chat(client, trio) for _ in range(30)] == [200] * 30
    gained = [served(h) - b for h, b in zip(trio, before, strict=True)]
    assert sum(gained) == 30 and min(gained) >= 5, gained


def test_a_host_down_costs_no_request_and_rejoins_when_back(trio, inventory, client):
    down = trio[2]
    down.stop()
    try:
        assert [chat(client, trio) for _ in range(20)] == [200] * 20
        code, report, _ = gpuctl("verify", "llm", "-i", str(inventory), timeout=300)
        assert code == 1
        by_host = {r["host"]: r for r in report["engines"][1:]}
        assert report["engines"][0]["ok"] and not by_host[down.name]["ok"]
        assert by_host[down.name]["checks"][0]["name"] == "ssh"
    finally:
        down.start()
    before = served(down)
    deadline = time.monotonic() + 60
    for _ in range(120):
        assert chat(client, trio) == 200
        if served(down) > before or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert served(down) > before, "the host did not rejoin within 60 s"


def stream(client: requests.Session, trio: list[Host], outcome: dict[int, str], index: int) -> None:
    """A 200-token stream through the endpoint; OUTCOME[INDEX]: 'done' when it ended with [DONE], else how."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"stream {index}"}], "max_tokens": 200}
    try:
        with client.post(
            url(trio, "/v1/chat/completions"), json={**body, "stream": True}, stream=True, timeout=60
        ) as r:
            lines = [line for line in r.iter_lines() if line]
        outcome[index] = "done" if lines and lines[-1] == b"data: [DONE]" else f"cut after {len(lines)} chunks"
    except requests.RequestException as exc:
        outcome[index] = f"error: {type(exc).__name__}"


def test_a_stream_on_a_host_that_goes_down_fails_cleanly_and_is_never_sent_twice(trio, client):
    outcome: dict[int, str] = {}
    threads = [threading.Thread(target=stream, args=(client, trio, outcome, i)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # least_conn gave each host one of the three streams
    down = trio[1]
    down.stop()
    try:
        for thread in threads:
            thread.join(60)
        assert sorted(outcome) == [0, 1, 2] and list(outcome.values()).count("done") == 2, outcome
        lines = trio[0].run(f"grep 'POST /v1/chat/completions' {ENDPOINT_LOG} | tail -n 3").stdout.splitlines()
        upstreams = [line.split("upstream=")[1].split(" upstream_status=")[0] for line in lines]
        assert len(upstreams) == 3 and all("," not in u for u in upstreams), upstreams  # none sent twice
        assert sum(u.startswith(f"{down.address}:") for u in upstreams) == 1, upstreams
    finally:
        down.start()


def ttft_s(session: requests.Session, base: str) -> float:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    start = time.perf_counter()
    first = None
    with session.post(f"{base}/v1/chat/completions", json=body, stream=True, timeout=30) as response:
        for line in response.iter_lines():
            if first is None and line.startswith(b"data: {"):
                first = time.perf_counter() - start
    # Read to the end: a stream left early keeps the host generating, and the next request would queue.
    assert first is not None, "no token"
    return first


def test_added_latency_of_the_endpoint(trio, inventory, client):
    """Time to first token through the endpoint and directly to the hosts' gateways (each in turn), 50 of
    each, interleaved so that both meet the same moments; medians printed (a figure for the closing note, not
    a timed assertion)."""
    keys = inventory.parent / ".gpuctl" / "fleet"
    direct = []
    for host in trio:
        session = PinnedTrustSession()
        session.verify = client.verify
        session.headers["Authorization"] = f"Bearer {(keys / f'{host.name}.api-key').read_text().strip()}"
        direct.append((session, f"https://{host.address}"))
    through, straight = [], []
    for i in range(50):
        through.append(ttft_s(client, url(trio, "")))
        straight.append(ttft_s(*direct[i % 3]))
    per_host = [statistics.median(straight[i::3]) * 1000 for i in range(3)]
    print(
        f"\nTTFT median of 50: endpoint {statistics.median(through) * 1000:.1f} ms, host gateways "
        f"{statistics.median(straight) * 1000:.1f} ms (per host: {', '.join(f'{m:.1f}' for m in per_host)} ms)"
    )
    assert len(through) == len(straight) == 50


def test_a_rolling_deploy_drains_each_host_so_no_request_fails(trio, inventory, client):
    """Every host's Ollama restarts (its keep-alive changes), one host at a time, while a client keeps
    asking the endpoint: each host is drained before it changes and back after, so no request fails. (Without
    the drain, a request that met a restarting host would get its gateway's 502: a POST is never retried.)"""
    text = inventory.read_text()
    inventory.write_text(text.replace("cpu_fallback=True,", 'cpu_fallback=True, keep_alive="10m",'))
    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set() and len(statuses) < 5000:
            statuses.append(chat(client, trio))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        code, report, stderr = gpuctl("deploy", str(inventory), "--rolling", "1", "--yes", timeout=900)
    finally:
        stop.set()
        asker.join(60)
    assert code == 0, stderr[-2000:] + json.dumps(report)[:2000]
    assert [b["hosts"] for b in report["batches"]] == [[h.name] for h in trio]
    assert all(h.run("systemctl show -p Environment ollama").stdout.count("OLLAMA_KEEP_ALIVE=10m") for h in trio)
    failed = [s for s in statuses if s != 200]
    assert len(statuses) > 20 and failed == [], (len(statuses), failed[:10])
    servers = trio[0].run("cat /etc/gpuctl/endpoints/llm/servers.conf").stdout
    assert servers.count("server ") == 3 and " down;" not in servers
    code, report, stderr = gpuctl("deploy", str(inventory), "--yes", timeout=600)
    assert code == 0 and all(h["status"] == "unchanged" for h in report["hosts"]), json.dumps(report)[:2000]


def test_an_endpoint_removed_from_the_inventory_stops_answering(trio, inventory, client):
    text = inventory.read_text()
    kept = "\n".join(line for line in text.splitlines() if not line.strip().startswith("llm = Endpoint("))
    inventory.write_text(kept)
    code, report, stderr = gpuctl("deploy", str(inventory), "--yes", timeout=600)
    assert code == 0, stderr[-2000:] + json.dumps(report)[:2000]
    front = trio[0]
    assert front.run("ls /etc/nginx/conf.d/ /etc/gpuctl/endpoints/ 2>&1 || true").stdout.count("llm") == 0
    with pytest.raises(requests.ConnectionError):
        client.get(url(trio, "/v1/models"), timeout=5)
    assert requests.get(f"https://{front.address}/v1/models", verify=client.verify, timeout=10).status_code == 401
