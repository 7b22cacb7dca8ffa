"""Rendering: real validators accept every rendered file, output is deterministic, and the files
carry exactly what the spec says (read back from the rendered text, not compared to a frozen blob)."""

from __future__ import annotations

import filecmp
import shlex
import shutil
import subprocess

import pytest

from gpuctl import inventory
from gpuctl.render import render_host
from gpuctl.spec import HostSpec, OllamaSpec, VllmSpec
from harness.cli import REPO, run_cli
from harness.validators import compose_config, compose_resolved, install, systemd_root, systemd_verify

EXAMPLES = ["prod", "dev-laptop", "vagrant", "cpu-server"]


def example_hosts() -> list[HostSpec]:
    return [h for name in EXAMPLES for h in inventory.load(name, cwd=REPO).hosts.values()]


def variant_hosts() -> list[HostSpec]:
    """Rendering branches the examples do not reach: CDI devices, no GPU access, IPv6, shm."""
    base = dict(image="vllm/vllm-openai:v0.32.0", model="org/model$x")
    gpus = {"model": "L40S", "count": 4, "memory_gib": 48}
    return [
        HostSpec(
            name="cdi",
            address="10.0.0.1",
            gpus=gpus,
            vllm=[
                VllmSpec(name="a", gpu_access="cdi", gpus=[2, 3], tensor_parallel_size=2, port=8001, **base),
                VllmSpec(name="b", gpu_access="reservation", gpus=[0], bind="::1", shm_size="16g", **base),
            ],
        ),
        HostSpec(
            name="rehearsal",
            address="10.0.0.2",
            vllm=[VllmSpec(gpu_access="none", **base)],
            ollama=OllamaSpec(
                version="0.13.0",
                cpu_fallback=True,
                flash_attention=True,
                kv_cache_type="q8_0",
                context_length=8192,
                max_queue=64,
            ),
        ),
    ]


ALL_HOSTS = example_hosts() + variant_hosts()


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory):
    return systemd_root(tmp_path_factory.mktemp("sysroot"))


@pytest.mark.parametrize("host", ALL_HOSTS, ids=[h.name for h in ALL_HOSTS])
def test_rendered_units_pass_systemd_analyze_verify(host, unit_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(unit_root, root, symlinks=True)
    files = render_host(host)
    install(files, root)
    units = [str(f.path) for f in files if str(f.path).endswith((".service", ".timer"))]
    assert units, "every example host has at least one unit"
    result = systemd_verify(root, units)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_verify_does_fail_on_a_broken_unit(unit_root, tmp_path):
    """The validator is not a check that cannot fail: a typo and a bad value are both caught."""
    root = tmp_path / "root"
    shutil.copytree(unit_root, root, symlinks=True)
    host = inventory.load("dev-laptop", cwd=REPO).hosts["dev-laptop"]
    files = render_host(host)
    install(files, root)
    dropin = root / "etc/systemd/system/ollama.service.d/override.conf"
    dropin.write_text(dropin.read_text() + "Restart=sometimes\nEnviroment=X=1\n")
    result = systemd_verify(root, ["/etc/systemd/system/ollama.service"])
    assert "Failed to parse service restart specifier" in result.stderr
    assert "Unknown key 'Enviroment' in section [Service]" in result.stderr


@pytest.mark.parametrize("host", ALL_HOSTS, ids=[h.name for h in ALL_HOSTS])
def test_rendered_compose_files_pass_compose_config(host, tmp_path):
    files = render_host(host)
    install(files, tmp_path)
    compose_files = sorted(tmp_path.rglob("compose.yaml"))
    assert len(compose_files) == len(host.vllm)
    for compose_file in compose_files:
        result = compose_config(compose_file)
        assert (result.returncode, result.stderr) == (0, ""), compose_file


def test_compose_config_does_fail_on_a_broken_file(tmp_path):
    host = inventory.load("prod", cwd=REPO).hosts["gpu-01"]
    install(render_host(host), tmp_path)
    compose_file = next(tmp_path.rglob("compose.yaml"))
    compose_file.write_text(compose_file.read_text().replace("interval: 5s", "interval: five"))
    result = compose_config(compose_file)
    assert result.returncode != 0
    assert "interval" in result.stderr


def test_wait_healthy_script_passes_shellcheck(tmp_path):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (CI installs it)")
    host = inventory.load("prod", cwd=REPO).hosts["gpu-01"]
    script = next(f for f in render_host(host) if f.path.name == "wait-healthy")
    (tmp_path / "wait-healthy").write_text(script.content)
    result = subprocess.run(["shellcheck", str(tmp_path / "wait-healthy")], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "")


# -- determinism -----------------------------------------------------------------------------


def test_rendering_is_deterministic(tmp_path):
    for host in ALL_HOSTS:
        assert render_host(host) == render_host(host.model_copy(deep=True))
    for out in ("a", "b"):
        assert run_cli("render", "prod", "--out", str(tmp_path / out)).exit_code == 0
    comparison = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert comparison.left_list == comparison.right_list
    for host in comparison.left_list:
        for path in (tmp_path / "a" / host).rglob("*"):
            if path.is_file():
                twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
                assert path.read_bytes() == twin.read_bytes(), path


# -- the rendered files say what the spec says -------------------------------------------------


def parse_flags(argv: list[str]) -> dict[str, str | bool]:
    """`--flag value` pairs and bare `--switch`es of a command line, as a dict; a leading positional
    argument (vllm serve's model) under "model"."""
    flags: dict[str, str | bool] = {}
    i = 0
    if argv and not argv[0].startswith("-"):
        flags["model"], i = argv[0], 1
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[argv[i]] = argv[i + 1]
            i += 2
        else:
            flags[argv[i]] = True
            i += 1
    return flags


def compose_service(host: HostSpec, engine: VllmSpec, tmp_path) -> dict:
    """The vLLM service as Compose itself reads the rendered file."""
    install(render_host(host), tmp_path / host.name)
    resolved = compose_resolved(tmp_path / host.name / str(engine.config_dir / "compose.yaml").lstrip("/"))
    service = resolved["services"]["vllm"]
    # `config` re-escapes `$` as `$$` in its output; undo that to get the argv the engine receives.
    service["command"] = [arg.replace("$$", "$") for arg in service["command"]]
    return service


def published(service: dict) -> list[tuple[str, str, int]]:
    return [(p["host_ip"], p["published"], p["target"]) for p in service["ports"]]


def mounts(service: dict) -> list[tuple[str, str, str]]:
    return [(v["type"], v["source"], v["target"]) for v in service["volumes"]]


def test_prod_rtx4090_vllm_command_line_matches_the_inventory(tmp_path):
    inv = inventory.load("prod", cwd=REPO)
    for name, utilization in (("gpu-01", "0.9"), ("gpu-02", "0.88")):
        host = inv.hosts[name]
        service = compose_service(host, host.vllm[0], tmp_path)
        flags = parse_flags(service["command"])
        assert flags == {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "--served-model-name": "llama-3.1-8b",
            "--host": "0.0.0.0",
            "--port": "8000",
            "--gpu-memory-utilization": utilization,
            "--kv-cache-dtype": "fp8",
            "--tensor-parallel-size": "1",
            "--max-model-len": "16384",
            "--max-num-seqs": "64",
            "--enable-chunked-prefill": True,
            "--enable-prefix-caching": True,
        }
        assert service["image"] == "vllm/vllm-openai:v0.32.0"
        assert published(service) == [("127.0.0.1", "8000", 8000)]
        assert service["ipc"] == "host"
        assert service["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}
        ]
        assert mounts(service) == [
            ("bind", "/var/lib/gpuctl/huggingface", "/root/.cache/huggingface"),
            ("bind", "/var/lib/gpuctl/vllm-main/cache", "/root/.cache/vllm"),
        ]
        assert "--api-key" not in flags, "the key travels in the env file, never on the command line"


def test_prod_h100_uses_both_gpus_with_tensor_parallel(tmp_path):
    host = inventory.load("prod", cwd=REPO).hosts["gpu-h100-01"]
    service = compose_service(host, host.vllm[0], tmp_path)
    flags = parse_flags(service["command"])
    assert flags["--tensor-parallel-size"] == "2"
    assert flags["model"] == "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["0", "1"]


@pytest.mark.parametrize("host", ALL_HOSTS, ids=[h.name for h in ALL_HOSTS])
def test_every_vllm_command_line_reads_back_as_the_spec(host, tmp_path):
    for engine in host.vllm:
        service = compose_service(host, engine, tmp_path)
        assert service["command"] == engine.command_args()
        flags = parse_flags(service["command"])
        assert flags["model"] == engine.model and "--model" not in flags
        utilization = f"{engine.gpu_memory_utilization:g}" if engine.device == "gpu" else None  # RAM on the CPU
        assert flags.get("--gpu-memory-utilization") == utilization
        assert flags["--kv-cache-dtype"] == engine.kv_cache_dtype
        assert flags["--served-model-name"] == engine.served_name
        assert flags.get("--max-model-len") == (str(engine.max_model_len) if engine.max_model_len else None)
        assert ("--enable-chunked-prefill" in flags) == engine.enable_chunked_prefill
        assert ("--no-enable-prefix-caching" in flags) == (not engine.enable_prefix_caching)
        assert published(service) == [(engine.bind, str(engine.port), 8000)]
        if engine.gpu_access == "cdi":
            assert [d["source"] for d in service["devices"]] == [f"nvidia.com/gpu={i}" for i in engine.gpu_indices()]
        if engine.gpu_access == "none":
            assert "deploy" not in service and "devices" not in service
        assert {k: v for k, v in service["environment"].items() if k.startswith(("VLLM_CPU", "HF_HUB"))} == (
            engine.environment()
        )


def test_a_cpu_engine_gets_its_kv_space_and_no_gpu(tmp_path):
    host = inventory.load("cpu-server", cwd=REPO).hosts["cpu-01"]
    engine = host.vllm[0]
    service = compose_service(host, engine, tmp_path)
    assert service["environment"]["VLLM_CPU_KVCACHE_SPACE"] == "8"
    assert "HF_HUB_OFFLINE" not in service["environment"]
    assert "deploy" not in service and "devices" not in service and "runtime" not in service
    assert service["ipc"] == "host"  # vLLM's CPU engine needs 160 MiB of /dev/shm (Docker's default is 64)
    assert not host.needs_nvidia()
    offline_engine = engine.model_copy(update={"offline": True})
    offline = compose_service(host.model_copy(update={"vllm": [offline_engine]}), offline_engine, tmp_path / "off")
    assert offline["environment"]["HF_HUB_OFFLINE"] == "1"


def dropin_environment(host: HostSpec) -> dict[str, str]:
    """Environment= lines of the rendered Ollama drop-in, unquoted as systemd would."""
    dropin = next(f for f in render_host(host) if f.path.name == "override.conf")
    env = {}
    for line in dropin.content.splitlines():
        if line.startswith("Environment="):
            key, _, value = shlex.split(line.removeprefix("Environment="))[0].partition("=")
            env[key] = value
    return env


def test_dev_laptop_ollama_environment_matches_the_inventory():
    host = inventory.load("dev-laptop", cwd=REPO).hosts["dev-laptop"]
    assert dropin_environment(host) == {
        "OLLAMA_HOST": "127.0.0.1:11434",
        "OLLAMA_KEEP_ALIVE": "30m",
        "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_MAX_LOADED_MODELS": "1",
        "OLLAMA_MODELS": "/usr/share/ollama/.ollama/models",
        "OLLAMA_FLASH_ATTENTION": "0",
        "OLLAMA_KV_CACHE_TYPE": "f16",
    }


@pytest.mark.parametrize("host", [h for h in ALL_HOSTS if h.ollama], ids=[h.name for h in ALL_HOSTS if h.ollama])
def test_ollama_dropin_reads_back_as_the_spec(host):
    assert dropin_environment(host) == host.ollama.environment()


def test_ollama_base_unit_is_the_installer_unit_and_settings_only_in_the_dropin():
    host = inventory.load("dev-laptop", cwd=REPO).hosts["dev-laptop"]
    unit = next(f for f in render_host(host) if f.path.name == "ollama.service")
    assert "ExecStart=/usr/local/bin/ollama serve" in unit.content
    assert "OLLAMA_" not in unit.content


def test_vllm_unit_owns_the_compose_project_with_a_long_start_and_graceful_stop():
    host = inventory.load("prod", cwd=REPO).hosts["gpu-01"]
    unit = next(f for f in render_host(host) if f.path.name == "gpuctl-vllm-main.service").content
    directives = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert directives["Restart"] == "on-failure"
    assert int(directives["TimeoutStartSec"]) >= 600
    assert directives["KillSignal"] == "SIGTERM"
    assert "stop --timeout 90" in directives["ExecStop"]
    assert int(directives["TimeoutStopSec"]) > 90
    assert directives["ExecStart"].endswith(
        "up --pull never --no-color --abort-on-container-exit --exit-code-from vllm"
    )
    assert directives["ExecStartPost"] == "/usr/local/libexec/gpuctl/wait-healthy gpuctl-vllm-main 900"


def test_files_have_the_right_modes():
    for host in ALL_HOSTS:
        for item in render_host(host):
            private = item.path.name.endswith(".env") or item.path.name in ("secrets.conf", "key.pem")
            expected = 0o600 if private else 0o755 if item.path.name in ("wait-healthy", "heal-engines") else 0o644
            assert item.secret == private or item.path.name.endswith(".env"), item.path
            assert (str(item.path), item.mode, item.owner) == (str(item.path), expected, "root")
