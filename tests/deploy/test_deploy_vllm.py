"""`gpuctl deploy` of two vLLM engines on a real fleet host: files, unit, compose, secrets, restarts.

Stand-ins, named: the image is the vLLM container STAND-IN (harness/images.py: python3 + the
stand-in server, imported because no registry is reachable), and `gpu_access="none"` switches off
the GPU reservation (these hosts have no GPU). Docker, Compose v2, systemd, SSH and pyinfra are real.
Docker is apt-installed before the deploy only so the image can be imported first.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gpuctl.deploy.facts import NvidiaGpuMemory
from gpuctl.deploy.preflight import preflight_script
from gpuctl.gpu_facts import gpu_memory
from gpuctl.spec import HostSpec, VllmSpec
from gpuctl.verify.host_checks import gpu_checks
from gpuctl.verify.remote import Remote
from harness import fault_times, gpu_standin, images
from harness.fault_times import Stopwatch
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

IMAGE = "gpuctl-test/vllm-standin:v0.32.0"
API_KEY = "sk-fleet-2b7e151628aed2a6abf7158809cf4f3c"
HF_TOKEN = "hf_fleetTokenQ1w2e3r4t5y6u7i8o9p0"
SECRET_ENV = {"GPUCTL_TEST_VLLM_KEY": API_KEY}


def write_inventory(path: Path, host: Host, a_extra: str = "") -> Path:
    token = path.parent / "hf.token"
    token.write_text(HF_TOKEN + "\n")
    token.chmod(0o600)
    common = (
        f'image={IMAGE!r}, model="org/tiny-model", gpu_access="none", bind="0.0.0.0", unsafe_public_bind=True, '
        "start_timeout_s=120"
    )
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Host, Secret, Vllm
        prod = [Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r},
                     ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                     docker=dict(packages=["docker.io", "docker-compose-plugin"]),
                     vllm=[Vllm(name="a", served_model_name="tiny-a", port=8001, max_model_len=1024, {common},
                                api_key=Secret.env("GPUCTL_TEST_VLLM_KEY"), hf_token=Secret.file("hf.token"){a_extra}),
                           Vllm(name="b", served_model_name="tiny-b", port=8002, {common})])]
    """)
    )
    return path


def gpuctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpuctl", *args], capture_output=True, text=True, timeout=600, env={**__import__("os").environ, **SECRET_ENV}
    )


def request(url: str, key: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def engine_state(host: Host, name: str) -> tuple[str, str]:
    """(unit MainPID, container start time) of engine NAME: both change on a restart."""
    pid = host.run(f"systemctl show -p MainPID --value gpuctl-vllm-{name}.service").stdout.strip()
    started = host.run(f"docker inspect -f '{{{{.State.StartedAt}}}}' gpuctl-vllm-{name}").stdout.strip()
    return pid, started


@pytest.fixture(scope="module")
def vllm_host(fleet: Fleet) -> Host:
    host = fleet.new_host("vllm")
    images.install_docker(host)
    images.load_vllm_standin(fleet, host, IMAGE)
    return host


@pytest.fixture(scope="module")
def first_deploy(vllm_host: Host, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    inventory = write_inventory(tmp_path_factory.mktemp("inv") / "prod.py", vllm_host)
    result = gpuctl("deploy", str(inventory), "--yes", "--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    return inventory, result


def test_first_deploy_runs_both_engines_enabled_and_answering_from_outside(vllm_host, first_deploy):
    for name, port, served in (("a", 8001, "tiny-a"), ("b", 8002, "tiny-b")):
        unit = f"gpuctl-vllm-{name}.service"
        assert vllm_host.run(f"systemctl is-active {unit}").stdout.strip() == "active"
        assert vllm_host.run(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
        health = vllm_host.run(f"docker inspect -f '{{{{.State.Health.Status}}}}' gpuctl-vllm-{name}").stdout.strip()
        assert health == "healthy"
        key = API_KEY if name == "a" else None
        status, models = request(f"http://{vllm_host.address}:{port}/v1/models", key)
        assert status == 200
        assert [m["id"] for m in models["data"]] == [served]
    status, chat = request(
        f"http://{vllm_host.address}:8001/v1/chat/completions",
        API_KEY,
        {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
    )
    assert status == 200 and chat["usage"]["completion_tokens"] == 5


def test_api_key_from_the_env_file_is_enforced(vllm_host, first_deploy):
    assert request(f"http://{vllm_host.address}:8001/v1/models")[0] == 401
    assert request(f"http://{vllm_host.address}:8001/v1/models", "wrong")[0] == 401


def test_secrets_only_in_the_0600_env_file_never_in_output(vllm_host, first_deploy):
    inventory, result = first_deploy
    dry = gpuctl("deploy", str(inventory), "--dry", "--diff", "--verbose")
    as_json = gpuctl("deploy", str(inventory), "--dry", "--json")
    for text in (result.stdout, result.stderr, dry.stdout, dry.stderr, as_json.stdout, as_json.stderr):
        assert API_KEY not in text and HF_TOKEN not in text
    assert "pyinfra" in result.stderr, "--verbose did show pyinfra's own log"
    assert "docker image inspect" in result.stderr, "--verbose shows the commands pyinfra runs (its -vvv)"
    mode = vllm_host.run("stat -c '%a %U %G' /etc/gpuctl/vllm-a/vllm.env").stdout.strip()
    assert mode == "600 root root"
    env_file = vllm_host.read_file("/etc/gpuctl/vllm-a/vllm.env").decode()
    assert f"VLLM_API_KEY='{API_KEY}'" in env_file and f"HF_TOKEN='{HF_TOKEN}'" in env_file
    for path in ("/etc/gpuctl/vllm-a/compose.yaml", "/etc/systemd/system/gpuctl-vllm-a.service"):
        assert API_KEY not in vllm_host.read_file(path).decode()
    cmd = vllm_host.run("docker inspect -f '{{json .Config.Cmd}}' gpuctl-vllm-a").stdout
    assert API_KEY not in cmd and "--served-model-name" in cmd


def test_second_deploy_changes_nothing_and_restarts_nothing(vllm_host, first_deploy):
    inventory, _ = first_deploy
    before = [engine_state(vllm_host, n) for n in "ab"]
    result = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert [(h["status"], h["changes"]) for h in json.loads(result.stdout)["hosts"]] == [("unchanged", [])]
    assert [engine_state(vllm_host, n) for n in "ab"] == before


def test_changing_one_engine_restarts_only_that_engine(vllm_host, first_deploy, tmp_path):
    before = {n: engine_state(vllm_host, n) for n in "ab"}
    changed = write_inventory(tmp_path / "prod.py", vllm_host, a_extra=", max_num_seqs=8")
    result = gpuctl("deploy", str(changed), "--yes", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    changes = json.loads(result.stdout)["hosts"][0]["changes"]
    assert "vLLM engine | File /etc/gpuctl/vllm-a/compose.yaml" in changes
    assert "vLLM engine | Restart gpuctl-vllm-a.service (its files changed)" in changes
    assert not any("vllm-b" in change for change in changes)
    assert engine_state(vllm_host, "a") != before["a"]
    assert engine_state(vllm_host, "b") == before["b"]
    cmd = json.loads(vllm_host.run("docker inspect -f '{{json .Config.Cmd}}' gpuctl-vllm-a").stdout)
    assert cmd[cmd.index("--max-num-seqs") + 1] == "8"


def verify(inventory: Path, *extra: str) -> tuple[int, dict, str]:
    result = gpuctl("verify", str(inventory), "--json", *extra)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def test_verify_of_both_engines_passes_with_host_checks(vllm_host, first_deploy, tmp_path):
    inventory = write_inventory(tmp_path / "prod.py", vllm_host, a_extra=", max_num_seqs=8")
    code, report, _ = verify(inventory)
    engines = {e["engine"]: {c["name"]: c for c in e["checks"]} for e in report["engines"]}
    failing = {(e, n): c["reason"] for e, cs in engines.items() for n, c in cs.items() if not c["ok"]}
    assert code == 0, failing
    a = engines["vllm:a"]
    assert list(a) == ["unit", "container", "bind", "health", "version", "models", "chat", "stream", "auth", "metrics"]
    assert a["container"]["reason"] == "gpuctl-vllm-a running, healthy"
    assert a["version"]["reason"] == "vLLM 0.32.0"
    assert a["auth"]["reason"] == "a request without the key gets 401"
    assert engines["vllm:b"]["auth"]["reason"] == "no API key in the spec: not checked"


def test_status_shows_each_engine_and_probes_each_with_one_token(vllm_host, first_deploy, tmp_path):
    inventory = write_inventory(tmp_path / "prod.py", vllm_host, a_extra=", max_num_seqs=8")

    def generated_by_b() -> float:
        metrics = vllm_host.run("curl -s 127.0.0.1:8002/metrics | grep '^vllm:generation_tokens_total'").stdout
        return float(metrics.split()[-1])

    before = generated_by_b()
    quiet = gpuctl("status", str(inventory), "--no-probe", "--json")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert generated_by_b() == before, "--no-probe generated tokens"
    assert {r["generating"] for r in json.loads(quiet.stdout)["engines"]} == {None}
    result = gpuctl("status", str(inventory), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["engine"]: r for r in json.loads(result.stdout)["engines"]}
    for engine, model in (("vllm:a", "tiny-a"), ("vllm:b", "tiny-b")):
        row = rows[engine]
        assert (row["unit"], row["health"], row["version"], row["model"]) == ("active", "200", "0.32.0", model)
        assert row["running"] == 0 and row["waiting"] == 0 and row["kv_cache_usage"] is not None
        assert row["generating"] is True
    assert generated_by_b() == before + 1, "the probe asks for exactly one token"


def test_gpu_checks_on_the_host_and_inside_the_container(vllm_host, first_deploy):
    """GPU STAND-IN: a fake nvidia-smi on the host (tests/harness/gpu_standin.py). The stand-in image
    has no nvidia-smi at all, which is what the in-container check sees when a container lost its GPUs."""
    gpu_standin.install(vllm_host, gpus=1, driver_loaded=True)
    try:
        spec = HostSpec(
            name="vllm",
            address=vllm_host.address,
            ssh_key=str(vllm_host.ssh_key),
            ssh_known_hosts_file=str(vllm_host.known_hosts),
            ssh_strict_host_key_checking="yes",
            gpus={"model": "H100 80GB", "count": 1, "memory_gib": 80},
            vllm=[VllmSpec(name="a", image=IMAGE, model="m", gpu_access="reservation")],
        )
        checks = {c.name: c for c in gpu_checks(Remote(spec), spec, spec.vllm[0])}
        assert (checks["gpu"].ok, checks["gpu"].reason) == (True, "1 GPU(s), driver 580.159.04")
        assert checks["gpu"].numbers == {"memory_used_mib": 0.0, "memory_total_mib": 81559.0, "driver": "580.159.04"}
        assert not checks["gpu_in_container"].ok
        assert checks["gpu_in_container"].reason.startswith("nvidia-smi fails inside the container")
        # A driver that lost its kernel module (after a kernel upgrade): nvidia-smi's own words, and its exit code.
        vllm_host.write_file(
            "/usr/local/bin/nvidia-smi",
            "#!/bin/sh\n# GPU STAND-IN: a driver that does not answer\n"
            'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\nexit 9\n',
            mode=0o755,
        )
        failed = {c.name: c for c in gpu_checks(Remote(spec), spec, spec.vllm[0])}["gpu"]
        assert (failed.ok, failed.reason) == (
            False,
            "nvidia-smi failed on the host (exit 9): NVIDIA-SMI has failed "
            "because it couldn't communicate with the NVIDIA driver.",
        )
    finally:
        gpu_standin.remove(vllm_host)


def test_preflight_refuses_an_unknown_flag_and_leaves_the_engine_running(vllm_host, first_deploy, tmp_path):
    """The pinned image (the stand-in knows vLLM 0.32.0's options) is asked for its flags first."""
    before = engine_state(vllm_host, "a")
    compose_before = vllm_host.read_file("/etc/gpuctl/vllm-a/compose.yaml")
    inventory = write_inventory(
        tmp_path / "prod.py", vllm_host, a_extra=', max_num_seqs=8, extra_args=["--swap-space", "4"]'
    )
    result = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert result.returncode == 1, result.stdout
    [outcome] = json.loads(result.stdout)["hosts"]
    assert outcome["failed_operation"] == "vLLM engine | Preflight gpuctl-vllm-a (image flags, CUDA, GPU memory)"
    assert f"{IMAGE} does not accept --swap-space (renamed or removed in this version?)" in outcome["error"]
    assert engine_state(vllm_host, "a") == before
    assert vllm_host.read_file("/etc/gpuctl/vllm-a/compose.yaml") == compose_before


def test_preflight_names_an_old_driver_and_a_process_holding_gpu_memory(vllm_host, first_deploy):
    """GPU STAND-IN (fake nvidia-smi) and an image STAND-IN that declares NVIDIA_REQUIRE_CUDA like the
    real vllm/vllm-openai images. The preflight script itself runs on the real host."""
    cuda_image = "gpuctl-test/vllm-standin:v0.32.0-cu129"
    vllm_host.run(
        f"docker create --name cuda-env {IMAGE} && docker commit --change "
        f"'ENV NVIDIA_REQUIRE_CUDA=cuda>=12.9 brand=tesla,driver>=535' cuda-env {cuda_image} && "
        "docker rm cuda-env",
        timeout=120,
    )
    gpu_standin.install(vllm_host, gpus=1, driver_loaded=True)
    before = engine_state(vllm_host, "a")
    spec = HostSpec(
        name="vllm",
        address=vllm_host.address,
        gpus={"model": "H100 80GB", "count": 1, "memory_gib": 80},
        vllm=[VllmSpec(name="a", image=cuda_image, model="m", gpu_access="reservation")],
    )
    # The GPUs as the deploy's preflight operation reads them when it runs.
    script = preflight_script(spec, spec.vllm[0], gpu_memory(vllm_host.run(NvidiaGpuMemory().command()).stdout))
    try:
        gpu_standin.configure(vllm_host, cuda="12.4", others_mib=30000)
        failed = vllm_host.run(script, check=False, timeout=120)
        assert failed.rc == 1
        assert "the driver supports CUDA 12.4 but the image needs CUDA >= 12.9" in failed.stderr
        assert (
            "GPU 0: gpu_memory_utilization 0.9 needs 73403 of 81559 MiB, but 30000 MiB are held by: "
            "python3 (pid 4242, 30000 MiB)"
        ) in failed.stderr
        gpu_standin.configure(vllm_host, cuda="13.0", others_mib=0)
        passed = vllm_host.run(script, check=False, timeout=120)
        assert passed.rc == 0, passed.stderr
        assert passed.stdout.startswith("preflight ok")
        # R610's banner says "CUDA UMD Version" (no "CUDA Version" any more): still read.
        gpu_standin.configure(vllm_host, cuda="13.3", others_mib=0, driver="610.43.02")
        assert "KMD Version: 610.43.02     CUDA UMD Version: 13.3" in vllm_host.run("nvidia-smi").stdout
        passed = vllm_host.run(script, check=False, timeout=120)
        assert passed.rc == 0, passed.stderr
        assert engine_state(vllm_host, "a") == before
    finally:
        gpu_standin.remove(vllm_host)


def test_crashed_container_fails_with_its_logs_then_wait_sees_it_recover(vllm_host, first_deploy, tmp_path):
    inventory = write_inventory(tmp_path / "prod.py", vllm_host, a_extra=", max_num_seqs=8")
    vllm_host.run("docker kill gpuctl-vllm-b")
    with Stopwatch() as detect:
        code, report, _ = verify(inventory, "--limit", "vllm")
    b = next({c["name"]: c for c in e["checks"]} for e in report["engines"] if e["engine"] == "vllm:b")
    assert code == 1
    assert not b["container"]["ok"]
    # Killed (137) and not yet replaced by the unit's restart, or already removed by it: both said in words.
    assert re.fullmatch(
        r"gpuctl-vllm-b exited, \w+ \(exit code 137\)|no container gpuctl-vllm-b: .+", b["container"]["reason"]
    ), b["container"]["reason"]
    assert b["container"]["details"], "the container's last log lines explain the failure"
    # systemd restarts the unit (Restart=on-failure) after RestartSec; once it is starting again,
    # --wait follows the cold start with progress.
    with Stopwatch() as repair:
        vllm_host.run(
            'timeout 60 sh -c \'until [ "$(systemctl show -p SubState --value gpuctl-vllm-b)" != auto-restart ]; '
            "do sleep 1; done'",
            timeout=90,
        )
        code, report, stderr = verify(inventory, "--wait", "120")
    fault_times.record("container killed", detect.seconds, repair.seconds, "systemd (Restart=on-failure)")
    assert code == 0, [
        (e["engine"], c["name"], c["reason"]) for e in report["engines"] for c in e["checks"] if not c["ok"]
    ]
    assert "vllm:b: waiting for /health" in stderr or "vllm:b: ready after" in stderr


def test_wait_gives_up_early_when_the_unit_fails(vllm_host, first_deploy, tmp_path):
    inventory = write_inventory(tmp_path / "prod.py", vllm_host, a_extra=", max_num_seqs=8")
    dropin = "/etc/systemd/system/gpuctl-vllm-b.service.d/break.conf"
    vllm_host.write_file(dropin, "[Service]\nExecStartPre=/bin/sh -c 'echo broken on purpose >&2; exit 3'\n")
    vllm_host.run("systemctl daemon-reload && systemctl restart --no-block gpuctl-vllm-b.service")
    try:
        started = time.monotonic()
        code, report, _ = verify(inventory, "--wait", "300")
        took = time.monotonic() - started
        b = next({c["name"]: c for c in e["checks"]} for e in report["engines"] if e["engine"] == "vllm:b")
        assert code == 1
        assert b["wait"]["reason"].startswith("gpuctl-vllm-b.service failed")
        assert any("broken on purpose" in line for line in b["wait"]["details"])
        assert took < 120, f"gave up after {took:.0f} s, not at the 300 s limit"
    finally:
        vllm_host.run(
            f"rm -f {dropin} && systemctl daemon-reload && systemctl reset-failed gpuctl-vllm-b.service; "
            "systemctl restart gpuctl-vllm-b.service",
            timeout=200,
        )


def test_six_changes_in_an_hour_each_restart_the_engine(vllm_host, first_deploy, tmp_path):
    """StartLimitBurst=5 per hour guards against crash loops; gpuctl's own restarts must neither count
    against it nor be refused by it (the sixth deploy of alternating settings used to leave the engine down)."""
    for i in range(6):
        inventory = write_inventory(
            tmp_path / f"prod{i}.py", vllm_host, a_extra=f", max_num_seqs={12 if i % 2 else 16}"
        )
        before = engine_state(vllm_host, "a")
        result = gpuctl("deploy", str(inventory), "--yes", "--json")
        assert result.returncode == 0, (i, result.stdout[-3000:])
        assert (
            "vLLM engine | Restart gpuctl-vllm-a.service (its files changed)"
            in json.loads(result.stdout)["hosts"][0]["changes"]
        )
        assert engine_state(vllm_host, "a") != before
        assert vllm_host.run("systemctl is-active gpuctl-vllm-a").stdout.strip() == "active"
    # Crash-loop protection stays in the unit.
    assert vllm_host.run("systemctl show -p StartLimitBurst --value gpuctl-vllm-a").stdout.strip() == "5"


def test_deploy_starts_an_engine_locked_by_its_start_limit(vllm_host, first_deploy, tmp_path):
    """Six starts inside the hour (a crash loop, or hands on the host) lock the unit: systemd refuses
    the next start. An unchanged deploy is the operator asking for the engine: it starts it again."""
    inventory = write_inventory(tmp_path / "prod.py", vllm_host, a_extra=", max_num_seqs=12")
    assert gpuctl("deploy", str(inventory), "--yes").returncode == 0
    vllm_host.run(
        "for i in 1 2 3 4 5 6 7; do systemctl restart gpuctl-vllm-b.service || break; done; true", timeout=600
    )
    state = vllm_host.run("systemctl show -p ActiveState,Result --value gpuctl-vllm-b").stdout.split()
    assert sorted(state) == ["failed", "start-limit-hit"], state
    with Stopwatch() as detect:
        verify(inventory, "--limit", "vllm")
    with Stopwatch() as repair:
        result = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads(result.stdout)["hosts"][0]["changes"] == [
        "vLLM engine | Start gpuctl-vllm-b.service (was failed)"
    ]
    fault_times.record("engine locked by its start limit", detect.seconds, repair.seconds, "gpuctl deploy")
    assert vllm_host.run("systemctl is-active gpuctl-vllm-b").stdout.strip() == "active"
