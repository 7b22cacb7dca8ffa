"""Monitoring on real fleet hosts: Prometheus (Debian's package) on one host scrapes the other hosts' vLLM
engine through its gateway, their node exporters, a GPU host's DCGM exporter and Ollama's loaded models,
and its alert rules fire.

Three hosts: "mon" runs Prometheus (`monitoring=Monitoring(...)`, no engine), "eng" runs a vLLM engine and
Ollama on loopback behind the gateway (private CA) and the firewall, "gpu" is a GPU host of the inventory
that is never deployed (no GPU here: its driver step cannot run), only scraped. Hosts reach each other
through this machine: IPv4 forwarding is turned on for their veths only, for this module, and restored after.

Stand-ins, named: the vLLM image is the container STAND-IN (harness/images.py) with `gpu_access="none"`
(its /metrics has vLLM's metric names); Ollama is the STAND-IN of harness/ollama_standin.py from the test
mirror; on "gpu", NVIDIA's DCGM exporter is the STAND-IN of harness/dcgm_standin.py (its metric names,
labels and port; values staged by the test). The DCGM exporter's unit and pinned image are planned on a
GPU host in tests/deploy/test_deploy_gpu_plan.py. Real: Prometheus, promtool, the node and blackbox
exporters, nginx, nftables, Docker, systemd, SSH, pyinfra, TLS.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from gpuctl.dashboard import queried_metrics
from harness import dcgm_standin, images, mirror, routing
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

IMAGE = "gpuctl-test/vllm-standin:v0.32.0"
OLLAMA = "0.13.0"
DCGM_STATE = "/etc/gpuctl-test/dcgm.json"
ENV = {**os.environ, "GPUCTL_TEST_ENGINE_KEY": "sk-engine-5d41402abc4b2a76b9719d911017c592"}


def write_inventory(path: Path, mon: Host, eng: Host, gpu: Host) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Gateway, Gpu, Host, Monitoring, Ollama, Secret, Vllm
        fleet = [
            Host({mon.name!r}, {mon.reach},
                 monitoring=Monitoring(scrape_interval="2s", engine_down_for="0s", gpu_memory_other_for="0s")),
            Host({eng.name!r}, {eng.reach},
                 docker=dict(packages=["docker.io", "docker-compose-plugin"]),
                 vllm=Vllm(name="main", image={IMAGE!r}, model="org/tiny-model", served_model_name="tiny",
                           gpu_access="none", start_timeout_s=120, api_key=Secret.env("GPUCTL_TEST_ENGINE_KEY")),
                 ollama=Ollama(version={OLLAMA!r}, cpu_fallback=True, release_url={mirror.MIRROR_URL!r},
                               keep_alive="1m", max_loaded_models=1, models=["qwen2.5:0.5b", "tinyllama"]),
                 gateway=Gateway(engine="main")),
        ]
        gpus = [  # never deployed here: only scraped
            Host({gpu.name!r}, {gpu.reach}, gpus=Gpu(model="H100 80GB", count=1, memory_gib=80),
                 vllm=Vllm(name="big", image="vllm/vllm-openai:v0.32.0", model="m", gpu_memory_utilization=0.9)),
        ]
    """)
    )
    return path


def gpuctl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gpuctl", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def prometheus_api(mon: Host, path: str, query: str | None = None) -> dict:
    """Prometheus' HTTP API, asked on the monitoring host itself (it listens on its loopback)."""
    encoded = f" -G --data-urlencode {shlex.quote('query=' + query)}" if query else ""
    return json.loads(mon.run(f"curl -fsS{encoded} http://127.0.0.1:9090/api/v1/{path}").stdout)


def wait_for(what: str, probe: Callable[[], object], timeout: float = 90) -> object:
    """PROBE until it returns something truthy; bounded in time and count."""
    deadline = time.monotonic() + timeout
    last: object = None
    for _ in range(int(timeout / 1.0) + 1):
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


def targets(mon: Host) -> dict[tuple[str, str], str]:
    """(job, host label) → health of every active target."""
    active = prometheus_api(mon, "targets")["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"]["host"]): t["health"] for t in active}


@pytest.fixture(scope="module")
def trio(fleet: Fleet) -> Iterator[tuple[Host, Host, Host]]:
    """Destroyed at the module's end (inotify instances are limited per user)."""
    hosts = mon, eng, gpu = fleet.new_host("mon"), fleet.new_host("eng"), fleet.new_host("gpu")
    try:
        with routing.host_to_host(list(hosts)):
            images.install_docker(eng)
            images.load_vllm_standin(fleet, eng, IMAGE)
            mirror.serve(eng)
            mirror.publish(eng, OLLAMA)
            gpu.put_file(Path(dcgm_standin.__file__), "/opt/dcgm_standin.py")
            gpu.run(f"systemd-run --unit=dcgm-standin python3 /opt/dcgm_standin.py 9400 {DCGM_STATE}")
            yield mon, eng, gpu
    finally:
        for host in hosts:
            host.destroy()


@pytest.fixture(scope="module")
def pair(trio: tuple[Host, Host, Host]) -> tuple[Host, Host]:
    return trio[0], trio[1]


@pytest.fixture(scope="module")
def deployed(trio: tuple[Host, Host, Host], tmp_path_factory) -> Path:
    mon, eng, gpu = trio
    inventory = write_inventory(tmp_path_factory.mktemp("inv") / "watched.py", mon, eng, gpu)
    result = gpuctl("deploy", str(inventory), "--limit", "fleet", "--yes", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = {h["host"]: h for h in json.loads(result.stdout)["hosts"]}
    changes = report[mon.name]["changes"]
    assert "Monitoring | promtool check config (scrape targets and alert rules)" in changes
    assert "Monitoring | node exporter" in report[eng.name]["changes"]
    return inventory


def test_prometheus_scrapes_the_engine_through_its_gateway_and_every_node_exporter(pair, deployed):
    mon, eng = pair
    expected = {
        ("prometheus", mon.name): "up",
        ("gpuctl-node", mon.name): "up",
        ("gpuctl-node", eng.name): "up",
        ("gpuctl-engines-https", eng.name): "up",
        ("gpuctl-gateways", eng.name): "up",  # the blackbox exporter's probe
        ("gpuctl-ollama-models", eng.name): "up",  # so is this: the probe answered, loaded or not
        ("gpuctl-node", "gpu"): "down",  # never deployed: no node exporter
        ("gpuctl-dcgm", "gpu"): "up",
    }
    wait_for("every target up", lambda: (found := targets(mon)) == expected or print(found))
    series = prometheus_api(mon, "query", 'vllm:num_requests_running{engine="vllm:main"}')["data"]["result"]
    assert [s["metric"]["host"] for s in series] == [eng.name]
    assert mon.run("ss -ltnH 'sport = :9090'").stdout.split()[3] == "127.0.0.1:9090"  # its UI stays on loopback
    assert mon.run("ss -ltnH 'sport = :9115'").stdout.split()[3] == "127.0.0.1:9115"  # so does the prober


def test_the_gateway_probe_reads_the_certificates_expiry(pair, deployed):
    """probe_ssl_earliest_cert_expiry, as the blackbox exporter reads it over TLS, is the notAfter of the
    certificate gpuctl's private CA issued for the gateway (what GatewayCertificateExpiring watches)."""
    mon, eng = pair
    chain = (deployed.parent / ".gpuctl" / "watched" / f"{eng.name}.pem").read_bytes()  # leaf first
    not_after = x509.load_pem_x509_certificate(chain).not_valid_after_utc.timestamp()

    def expiry() -> float | None:
        result = prometheus_api(mon, "query", "probe_ssl_earliest_cert_expiry")["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    assert wait_for("the probe's certificate expiry", expiry) == not_after


def test_only_the_monitoring_host_reads_metrics_without_the_key(pair, deployed):
    mon, eng = pair
    ca = deployed.parent / ".gpuctl" / "watched" / "ca.pem"
    outside = requests.get(f"https://{eng.address}/metrics", verify=str(ca), timeout=10)
    assert outside.status_code == 401  # this machine is not the scraper
    inside = mon.run(
        f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert /etc/prometheus/gpuctl-gateways-ca.pem "
        f"https://{eng.address}/metrics"
    ).stdout
    assert inside == "200"
    ollama = f"https://{eng.address}/engines/ollama/api/ps"
    assert requests.get(ollama, verify=str(ca), timeout=10).status_code == 401
    models = mon.run(f"curl -fsS --cacert /etc/prometheus/gpuctl-gateways-ca.pem {ollama}").stdout
    assert "models" in json.loads(models)


def test_the_node_exporter_port_is_closed_to_everyone_but_the_monitoring_host(pair, deployed):
    mon, eng = pair
    with pytest.raises(OSError):
        socket.create_connection((eng.address, 9100), timeout=3).close()
    answer = mon.run(f"curl -fsS --max-time 5 http://{eng.address}:9100/metrics").stdout
    exported = {line.split("{")[0].split(" ")[0] for line in answer.splitlines() if line.startswith("node_")}
    dashboard = {n for n in queried_metrics() if n.startswith("node_")}  # the Grafana dashboard's host panels
    assert dashboard and dashboard <= exported, sorted(dashboard - exported)


def test_a_stopped_engine_turns_its_target_down_and_fires_engine_down(pair, deployed):
    mon, eng = pair
    eng.run("systemctl stop gpuctl-vllm-main.service")
    try:
        wait_for("engine target down", lambda: targets(mon).get(("gpuctl-engines-https", eng.name)) == "down")

        def firing() -> list[dict]:
            alerts = prometheus_api(mon, "alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "EngineDown" and a["state"] == "firing"]

        [alert] = wait_for("EngineDown firing", firing)
        assert (alert["labels"]["host"], alert["labels"]["engine"]) == (eng.name, "vllm:main")
        assert (
            alert["annotations"]["summary"]
            == f"{eng.name} vllm:main: /metrics does not answer (engine or gateway down)"
        )
    finally:
        eng.run("systemctl start gpuctl-vllm-main.service", timeout=300)
    wait_for("engine target up again", lambda: targets(mon).get(("gpuctl-engines-https", eng.name)) == "up")


def firing(mon: Host, name: str) -> list[dict]:
    alerts = prometheus_api(mon, "alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def scalar(mon: Host, query: str) -> float | None:
    result = prometheus_api(mon, "query", query)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_gpu_memory_held_by_another_process_fires_gpu_memory_used_by_others(trio, deployed):
    """The GPU host's engine may use 90 % of its GPU (gpu_memory_utilization=0.9), plus the 5 % margin.
    DCGM (stand-in) reporting 89.5 % in use fires nothing; 96.9 % fires GpuMemoryUsedByOthers."""
    mon, _, gpu = trio
    ratio = 'DCGM_FI_DEV_FB_USED{host="gpu"} / (DCGM_FI_DEV_FB_USED{host="gpu"} + DCGM_FI_DEV_FB_FREE{host="gpu"})'
    assert scalar(mon, 'gpuctl:gpu_memory_budget:ratio{host="gpu",gpu="0"}') == 0.9
    gpu.write_file(DCGM_STATE, json.dumps({"DCGM_FI_DEV_FB_USED": 73000, "DCGM_FI_DEV_FB_FREE": 8559}))
    wait_for("89.5 % scraped", lambda: (scalar(mon, ratio) or 0) > 0.89)
    time.sleep(5)  # two more evaluations at 2 s
    assert firing(mon, "GpuMemoryUsedByOthers") == []
    gpu.write_file(DCGM_STATE, json.dumps({"DCGM_FI_DEV_FB_USED": 79000, "DCGM_FI_DEV_FB_FREE": 2559}))
    [alert] = wait_for("GpuMemoryUsedByOthers firing", lambda: firing(mon, "GpuMemoryUsedByOthers"))
    assert (alert["labels"]["host"], alert["labels"]["gpu"]) == ("gpu", "0")
    assert alert["annotations"]["summary"] == (
        "gpu GPU 0: 96.86% of its memory in use, more than the engines' budget: another process holds GPU memory"
    )


def test_ollama_losing_its_model_within_the_keep_alive_fires_ollama_model_unloaded(pair, deployed):
    """keep_alive="1m", max_loaded_models=1: qwen2.5 is loaded (a request with an empty prompt, as Ollama's
    API documents) and the probe sees it in /api/ps; loading tinyllama evicts it while Ollama answers all
    along: unloaded well within its keep-alive. The rule's window (the keep-alive less two scrapes, 56 s)
    must hold no failed probe first: those of the deploy, before Ollama was up, age out."""
    mon, eng = pair
    loaded = 'probe_success{job="gpuctl-ollama-models",model="qwen2.5:0.5b"}'
    answered = 'min_over_time(probe_http_status_code{job="gpuctl-ollama-models",model="qwen2.5:0.5b"}[56s])'
    wait_for("a window of answered probes", lambda: scalar(mon, answered) == 200, timeout=120)
    assert wait_for("not loaded yet", lambda: scalar(mon, loaded) == 0)
    eng.run("""curl -fsS http://127.0.0.1:11434/api/generate -d '{"model": "qwen2.5:0.5b"}'""")
    wait_for("the probe sees it loaded", lambda: scalar(mon, loaded) == 1)
    assert firing(mon, "OllamaModelUnloaded") == []
    eng.run("""curl -fsS http://127.0.0.1:11434/api/generate -d '{"model": "tinyllama"}'""")
    [alert] = wait_for("OllamaModelUnloaded firing", lambda: firing(mon, "OllamaModelUnloaded"))
    assert (alert["labels"]["host"], alert["labels"]["model"]) == (eng.name, "qwen2.5:0.5b")
    assert alert["annotations"]["summary"] == (
        f"{eng.name}: Ollama unloaded qwen2.5:0.5b sooner than OLLAMA_KEEP_ALIVE=1m says: the next request "
        "waits for a load"
    )


def test_a_second_deploy_changes_nothing_on_either_host(pair, deployed):
    result = gpuctl("deploy", str(deployed), "--limit", "fleet", "--yes", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [(h["host"], h["status"], h["changes"]) for h in json.loads(result.stdout)["hosts"]] == [
        ("mon", "unchanged", []),
        ("eng", "unchanged", []),
    ]


def top_rows(screen: str) -> dict[str, list[str]]:
    """The rows of `gpuctl top`'s table on a captured screen, by engine (cells split on the table's bars)."""
    rows = {}
    for line in screen.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 11 and cells[1].startswith(("vllm:", "ollama")):
            rows[cells[1]] = cells
    return rows


def test_gpuctl_top_shows_the_engine_generating_live_in_a_terminal(pair, deployed):
    """`gpuctl top` in a real pseudo-terminal (tmux), read back from the screen, while a client loop sends
    chat requests through the gateway: the engine's row shows health 200 and tokens/s above 0."""
    from gpuctl.keystore import Keystore

    mon, eng = pair
    key = Keystore.for_inventory(deployed, write=False).api_key(eng.name)
    ca = deployed.parent / ".gpuctl" / "watched" / "ca.pem"
    stop = threading.Event()

    def load() -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30}
        for _ in range(600):  # bounded: at most ~60 s
            if stop.is_set():
                return
            requests.post(
                f"https://{eng.address}/v1/chat/completions",
                json=body,
                verify=str(ca),
                timeout=10,
                headers={"Authorization": f"Bearer {key}"},
            )
            time.sleep(0.1)

    session = f"gpuctl-top-{os.getpid()}"
    command = f"gpuctl top {shlex.quote(str(deployed))} --interval 1"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "30", command], check=True, env=ENV)
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:

        def generating() -> str | None:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            row = top_rows(screen).get("vllm:main")
            moving = row is not None and row[7] not in ("-", "") and float(row[7]) > 0
            return screen if row and row[0] == eng.name and row[2] == "200" and moving else None

        screen = wait_for("gpuctl top shows tokens/s", generating, timeout=60)
        print(f"\ngpuctl top, captured from tmux:\n{screen}")
        row = top_rows(screen)["vllm:main"]
        assert row[3] == "tiny" and row[8].endswith(" ms") and row[9].endswith(" ms")  # TTFT p50, p95
    finally:
        stop.set()
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
        loader.join(timeout=15)
