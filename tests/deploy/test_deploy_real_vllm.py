"""The REAL vLLM on a fleet host: gpuctl deploys vLLM's CPU build in a container and serves through its gateway.

No stand-in here: the image is vLLM 0.32's CPU build on the fleet's Debian base (harness/vllm_image.py,
ENTRYPOINT ["vllm", "serve"] as in the official image), the model a tiny Llama made by the tests
(harness/tiny_model.py) placed in the Hugging Face cache folder the compose file mounts, loaded offline
(offline=True: HF_HUB_OFFLINE=1). Real: systemd, Docker, Compose, the rendered unit with its healthcheck wait,
nginx with TLS and the key, nftables, SSH, pyinfra, and the official `openai` client; and a fleet endpoint on
the same host (port 8443) with the real engine behind it, which `gpuctl verify INVENTORY` checks too.

The engine is `device="cpu"` (vLLM's CPU backend: no GPU reservation, VLLM_CPU_KVCACHE_SPACE from
cpu_kv_cache_gib). What only a stand-in can do (GPU-shaped answers, fast failure injection) stays in
test_deploy_vllm.py and test_deploy_gateway.py.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import fault_times, images, vllm_image
from harness.fault_times import Stopwatch
from harness.fleet import Fleet, Host

pytestmark = [pytest.mark.fleet, pytest.mark.engine]

ENGINE_KEY = "sk-real-engine-5f2b8c1e9a0d4e7fb3c6a1d8e2f4b7c9"
ENV = {**os.environ, "GPUCTL_TEST_ENGINE_KEY": ENGINE_KEY}
MODEL_IN_CONTAINER = "/root/.cache/huggingface/tiny-chat"  # the compose file mounts HF_CACHE_DIR there
MODEL_ON_HOST = "/var/lib/gpuctl/huggingface/tiny-chat"
CONTAINER = "gpuctl-vllm-main"
FIGURES: dict[str, float] = {}


def write_inventory(path: Path, host: Host, config_json: Path, **changes: object) -> Path:
    settings = {"cpu_kv_cache_gib": 1, "extra_args": ["--enforce-eager"], **changes}
    extra = "".join(f", {key}={value!r}" for key, value in settings.items())
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Endpoint, Gateway, Host, Secret, Vllm
        cpu = [Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r},
                    ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                    docker=dict(packages=["docker.io", "docker-compose-plugin"]),
                    vllm=Vllm(name="main", image={vllm_image.TAG!r}, model={MODEL_IN_CONTAINER!r},
                              served_model_name="tiny-chat", device="cpu", dtype="float32", max_model_len=1024,
                              offline=True, start_timeout_s=300, config_json={str(config_json)!r},
                              api_key=Secret.env("GPUCTL_TEST_ENGINE_KEY"){extra}),
                    gateway=Gateway(engine="main"))]
        tiny = Endpoint("tiny", hosts=cpu, model="tiny-chat", on={host.name!r}, port=8443)
    """)
    )
    return path


def gpuctl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gpuctl", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def started_at(host: Host) -> str:
    return host.run(f"docker inspect -f '{{{{.State.StartedAt}}}}' {CONTAINER}").stdout.strip()


def failing(report: dict) -> dict:
    return {(e["engine"], c["name"]): c["reason"] for e in report["engines"] for c in e["checks"] if not c["ok"]}


def checks_of(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["engines"][0]["checks"]}


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path) -> Path:
    """The tiny model (harness.engine_fixtures: skipped, or failed under CI, where it can't be built)."""
    return tiny_model_dir


@pytest.fixture(scope="module")
def real_host(fleet: Fleet, model_dir: Path) -> Iterator[Host]:
    """Destroyed at the module's end: each booted host holds inotify instances (a limit of 128 per user)."""
    host = fleet.new_host("realvllm")
    try:
        images.install_docker(host)
        FIGURES["image_load_s"] = vllm_image.load(host)
        FIGURES["image_size_gib"] = round(vllm_image.ensure_image_tarball().size_bytes / 2**30, 2)
        for item in model_dir.iterdir():
            host.put_file(item, f"{MODEL_ON_HOST}/{item.name}")
        yield host
    finally:
        host.destroy()


@pytest.fixture(scope="module")
def deployed(real_host: Host, model_dir: Path, tmp_path_factory) -> dict:
    inventory = write_inventory(tmp_path_factory.mktemp("inv") / "cpu.py", real_host, model_dir / "config.json")
    started = time.monotonic()
    result = gpuctl("deploy", str(inventory), "--yes")
    FIGURES["first_deploy_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    store = inventory.parent / ".gpuctl" / "cpu"
    return {
        "inventory": inventory,
        "config_json": model_dir / "config.json",
        "ca": store / "ca.pem",
        "key": (store / f"{real_host.name}.api-key").read_text().strip(),
        "base": f"https://{real_host.address}",
    }


def gateway_get(deployed: dict, path: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {deployed['key']}"}
    return requests.get(deployed["base"] + path, headers=headers, verify=str(deployed["ca"]), timeout=30)


def generated_tokens(deployed: dict) -> float:
    text = gateway_get(deployed, "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:generation_tokens"))


def test_deploy_runs_the_real_engine_through_the_rendered_unit_and_compose_file(real_host, deployed):
    assert real_host.run("systemctl is-active gpuctl-vllm-main").stdout.strip() == "active"
    health = real_host.run(f"docker inspect -f '{{{{.State.Health.Status}}}}' {CONTAINER}").stdout.strip()
    assert health == "healthy"
    # The container runs the image's own entrypoint with the spec's command line, and the CPU engine's settings.
    config = json.loads(real_host.run(f"docker inspect -f '{{{{json .Config}}}}' {CONTAINER}").stdout)
    assert config["Entrypoint"] == ["vllm", "serve"]
    assert config["Cmd"][0] == MODEL_IN_CONTAINER and "--gpu-memory-utilization" not in config["Cmd"]
    assert {"VLLM_CPU_KVCACHE_SPACE=1", "HF_HUB_OFFLINE=1"} <= set(config["Env"])
    assert not any(e.startswith("VLLM_API_KEY=") for e in config["Env"]) or ENGINE_KEY not in config["Cmd"]
    processes = real_host.run(f"docker top {CONTAINER} -eo pid,args").stdout
    assert "VLLM::EngineCore" in processes and "VLLM::Worker" in processes


def test_the_plan_foresees_the_kv_cache_the_real_engine_allocates(real_host, deployed):
    plan = json.loads(gpuctl("plan", str(deployed["inventory"]), "--json").stdout)["engines"][0]
    assert plan["numbers"]["device"] == "cpu" and plan["verdict"] == "fits"
    logs = real_host.run(f"docker logs {CONTAINER} 2>&1").stdout
    reported = re.search(r"KV cache size: ([\d,]+) tokens", logs)
    assert reported, logs[-2000:]
    assert int(reported.group(1).replace(",", "")) == plan["numbers"]["cache_tokens"] == 2**30 // 512
    # The engine took about what the plan says it needs in RAM (weights + KV space + runtime).
    rows = real_host.run(f"docker top {CONTAINER} -eo pid,rss").stdout.splitlines()[1:]
    rss_kib = sum(int(row.split()[1]) for row in rows)
    FIGURES["engine_rss_gib"] = round(rss_kib / 2**20, 2)
    assert 0.5 * plan["numbers"]["ram_needed_gib"] < FIGURES["engine_rss_gib"] < 1.5 * plan["numbers"]["ram_needed_gib"]


def test_verify_passes_through_the_gateway_with_real_chat_stream_ttft_and_metrics(deployed):
    started = time.monotonic()
    result = gpuctl("verify", str(deployed["inventory"]), "--json", timeout=600)
    FIGURES["verify_s"] = round(time.monotonic() - started, 1)
    report = json.loads(result.stdout)
    assert result.returncode == 0, failing(report)
    assert report["engines"][0]["url"] == deployed["base"]
    checks = checks_of(report)
    assert {"health", "version", "models", "chat", "stream", "auth", "metrics"} <= set(checks)
    assert checks["version"]["reason"] == "vLLM 0.32.0"
    # The inventory's fleet endpoint, with the real engine behind it: checked as its clients use it.
    endpoint = report["engines"][-1]
    assert (endpoint["engine"], endpoint["url"], endpoint["ok"]) == ("endpoint tiny", f"{deployed['base']}:8443", True)
    assert {c["name"] for c in endpoint["checks"]} == {"models", "chat", "stream", "auth"}
    assert checks["stream"]["reason"].startswith(f"TTFT {checks['stream']['numbers']['ttft_ms']} ms")
    FIGURES["verify_ttft_ms"] = checks["stream"]["numbers"]["ttft_ms"]
    metrics = gateway_get(deployed, "/metrics").text  # the real engine's own names, through the gateway
    for name in ("vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket", "vllm:num_requests_waiting"):
        assert name in metrics, name


def test_status_shows_the_real_kv_cache_and_request_gauges(deployed):
    before = generated_tokens(deployed)
    result = gpuctl("status", str(deployed["inventory"]), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    row = json.loads(result.stdout)["engines"][0]
    assert (row["unit"], row["health"], row["version"], row["model"]) == ("active", "200", "0.32.0", "tiny-chat")
    assert row["running"] == 0 and row["waiting"] == 0 and row["generating"] is True
    assert row["kv_cache_usage"] is not None and 0 <= row["kv_cache_usage"] <= 1
    assert generated_tokens(deployed) == before + 1, "the probe asks for exactly one token"


def test_bench_through_the_gateway_counts_what_the_server_generated(real_host, deployed):
    before = generated_tokens(deployed)
    args = ["-c", "1,2", "-n", "4", "--prompt-tokens", "60", "--output-tokens", "16", "--json"]
    result = gpuctl("bench", real_host.name, "-i", str(deployed["inventory"]), *args, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run = json.loads(result.stdout)["runs"][0]
    assert run["ok"] and run["via"] == "gateway" and run["url"].startswith(deployed["base"])
    delivered = sum(level["output_tokens"]["total"] for level in run["levels"])
    assert all(level["errors"] == 0 and level["output_tokens"]["min"] == 16 for level in run["levels"])
    probes = len(run["prompt"]["probes"])  # calibration asks for one token per probe
    assert generated_tokens(deployed) - before == delivered + probes
    FIGURES["bench_tok_s_c1"] = run["levels"][0]["aggregate_tok_s"]
    FIGURES["bench_tok_s_c2"] = run["levels"][1]["aggregate_tok_s"]
    FIGURES["bench_ttft_p50_ms_c1"] = run["levels"][0]["ttft_ms"]["p50"]


def test_the_official_openai_client_chats_and_streams_through_the_gateway_trusting_the_ca(deployed):
    import httpx
    import openai

    trust = ssl.create_default_context(cafile=str(deployed["ca"]))  # the CA gpuctl handed out, nothing else
    with httpx.Client(verify=trust, timeout=60) as http:
        client = openai.OpenAI(base_url=f"{deployed['base']}/v1", api_key=deployed["key"], http_client=http)
        assert [m.id for m in client.models.list().data] == ["tiny-chat"]
        reply = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        assert reply.choices[0].message.content and reply.usage.completion_tokens == 8
        stream = client.chat.completions.create(
            model="tiny-chat",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage.completion_tokens == 8
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{deployed['base']}/v1", api_key="sk-wrong", http_client=http).models.list()


def test_a_second_deploy_changes_nothing_and_restarts_nothing(real_host, deployed):
    before = started_at(real_host)
    result = gpuctl("deploy", str(deployed["inventory"]), "--yes", "--json")
    assert result.returncode == 0, result.stdout[-2000:]
    assert json.loads(result.stdout)["hosts"][0]["changes"] == []
    assert started_at(real_host) == before


def test_a_flag_the_pinned_vllm_does_not_know_is_refused_on_the_host_and_the_engine_keeps_serving(
    real_host, deployed, tmp_path
):
    before = started_at(real_host)
    inventory = write_inventory(
        tmp_path / "cpu.py", real_host, deployed["config_json"], extra_args=["--enforce-eager", "--swap-space-gib", "4"]
    )
    result = gpuctl("deploy", str(inventory), "--yes")
    assert result.returncode != 0
    assert f"{vllm_image.TAG} does not accept --swap-space-gib" in result.stdout + result.stderr
    assert started_at(real_host) == before
    assert gateway_get(deployed, "/v1/models").json()["data"][0]["id"] == "tiny-chat"


def test_a_kv_space_the_hosts_ram_cannot_hold_is_refused_by_the_preflight(real_host, deployed, tmp_path):
    before = started_at(real_host)
    inventory = write_inventory(tmp_path / "cpu.py", real_host, deployed["config_json"], cpu_kv_cache_gib=16000)
    result = gpuctl("deploy", str(inventory), "--yes")
    assert result.returncode != 0
    assert re.search(r"the CPU engine needs about \d+ MiB of RAM .* but \d+ MiB are available", result.stdout), (
        result.stdout[-2000:]
    )
    assert started_at(real_host) == before


def test_a_hung_engine_is_named_by_verify_and_status_and_verify_waits_out_its_restart(real_host, deployed):
    """Fault: the worker and engine-core processes stopped (SIGSTOP) while the API process answers /health.
    (That deploy restarts such an engine is tested with the stand-in, test_deploy_gateway.py, and was seen
    here too; a restart by hand keeps this module's CI time down.)"""
    pids = [
        line.split()[0]
        for line in real_host.run(f"docker top {CONTAINER} -eo pid,args").stdout.splitlines()[1:]
        if "VLLM::Worker" in line or "VLLM::EngineCore" in line
    ]
    assert len(pids) == 2
    real_host.run(f"kill -STOP {' '.join(pids)}")
    try:
        with Stopwatch() as detect:
            result = gpuctl("verify", str(deployed["inventory"]), "--json", "--gen-timeout", "10", timeout=300)
        assert result.returncode == 1
        reasons = failing(json.loads(result.stdout)).values()
        assert any(r.startswith("engine not generating: no token within 10 s") for r in reasons), reasons
        assert real_host.run("curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:8000/health").stdout == "200"
        status = gpuctl("status", str(deployed["inventory"]), "--json")
        row = json.loads(status.stdout)["engines"][0]
        assert (status.returncode, row["health"], row["generating"]) == (1, "200", False), row
        # A cold start from outside gpuctl: verify --wait follows it with progress, then passes.
        with Stopwatch() as repair:
            real_host.run("systemctl restart --no-block gpuctl-vllm-main")
            waited = gpuctl("verify", str(deployed["inventory"]), "--wait", "300", "--json", timeout=600)
        FIGURES["cold_start_to_verified_s"] = round(repair.seconds, 1)
    finally:
        real_host.run(f"kill -CONT {' '.join(pids)} 2>/dev/null || true")
    assert waited.returncode == 0, failing(json.loads(waited.stdout))
    assert "vllm:main: waiting for /health" in waited.stderr or "vllm:main: ready after" in waited.stderr
    fault_times.record("real vLLM: engine core and worker stopped", detect.seconds, repair.seconds, "restart")


def test_a_changed_setting_restarts_the_engine_with_it(real_host, deployed, tmp_path):
    before = started_at(real_host)
    inventory = write_inventory(tmp_path / "cpu.py", real_host, deployed["config_json"], cpu_kv_cache_gib=2)
    started = time.monotonic()
    result = gpuctl("deploy", str(inventory), "--yes", "--json")
    FIGURES["restart_deploy_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-2000:]
    assert started_at(real_host) != before
    logs = real_host.run(f"docker logs {CONTAINER} 2>&1").stdout
    assert "KV cache size: 4,194,304 tokens" in logs  # 2 GiB ÷ 512 bytes per token
    # This inventory lives in another folder, so it has its own gateway key and CA (now the host's).
    verified = gpuctl("verify", str(inventory), "--json")
    assert verified.returncode == 0, failing(json.loads(verified.stdout))
    print(f"\nreal vLLM on the fleet: {json.dumps(FIGURES)}")
