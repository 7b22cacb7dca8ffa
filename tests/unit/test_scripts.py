"""The shell scripts gpuctl ships under templates/: every one passes shellcheck, and each runs here with
`sh` in a temporary folder and does what it says.

gpuctl runs a shipped script as `sh -c SCRIPT NAME ARGS…` (gpuctl.deploy.scripts.script_command), or
installs it (wait-healthy), so each is a POSIX sh script checked with `shellcheck -s sh`. Scripts are
found by glob: a new one is checked without being listed here.

STAND-INS, named: no GPU, Docker, Ollama, certbot, nginx or systemd runs here, so `docker`, `nvidia-smi`,
`curl`, `certbot`, `nginx`, `systemctl`, `modinfo` and `lspci` are small sh scripts put first on PATH
that print what the real tools print (quoted from their output in tests/data or the fleet's stand-ins)
and record how they were called. `sh`, `awk`, `sed`, `grep`, `sort` and `openssl` are the real ones.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuctl.capacity import CPU_OVERHEAD_GIB, vllm_budget
from gpuctl.deploy.nvidia import installed_branch_check
from gpuctl.deploy.ollama import pull_command
from gpuctl.deploy.preflight import flags_of, preflight_script, ram_mib
from gpuctl.deploy.scripts import script_command
from gpuctl.gpu_facts import GpuMemory
from gpuctl.render import templates_dir
from gpuctl.spec import DriverSpec, HostSpec, VllmSpec

SCRIPTS = sorted(templates_dir().rglob("*.sh"))
UUID = "GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f"
OTHER_UUID = "GPU-3eb87630-93d5-b2b6-b8ff-9b359caf4ee2"
IMAGE = "vllm/vllm-openai:v0.32.0"


def script(path: str) -> Path:
    return templates_dir() / path


def stand_in(bin_dir: Path, name: str, body: str) -> None:
    """Write the STAND-IN executable NAME into BIN_DIR."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n# STAND-IN for {name} (tests only)\n{body}\n")
    (bin_dir / name).chmod(0o755)


def run(command: str | list[str], bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run COMMAND (a shell command line, or sh's arguments) with the stand-ins first on PATH."""
    args = command if isinstance(command, str) else ["sh", *command]
    return subprocess.run(
        args,
        shell=isinstance(command, str),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir.parent), **env},
    )


# ---- every script -----------------------------------------------------------------------------


def test_the_glob_finds_the_shipped_scripts():
    names = {p.relative_to(templates_dir()).as_posix() for p in SCRIPTS}
    assert {"vllm/preflight.sh", "vllm/wait-healthy.sh", "ollama/install-ollama.sh", "ollama/ollama-api.sh"} <= names
    assert {"gateway/acme-bootstrap.sh", "gateway/acme-certificate.sh", "nvidia/pci-gpus.sh"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.relative_to(templates_dir()).as_posix())
def test_script_is_posix_sh_and_passes_shellcheck(path):
    assert path.read_text().startswith("#!/bin/sh\n"), "gpuctl runs its scripts with sh"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (CI installs it)")
    result = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "")


def test_a_script_command_carries_the_script_and_quotes_its_arguments(tmp_path):
    command = script_command("nvidia/loaded-branch.sh", "580", str(tmp_path / "it's here"))
    assert command.startswith("sh -c '#!/bin/sh\n")
    (tmp_path / "it's here").write_text("570.1\n")
    result = run(command, tmp_path / "bin")
    assert (result.returncode, result.stderr) == (1, "after reboot the loaded driver is 570.1, not 580\n")


# ---- vLLM preflight -----------------------------------------------------------------------------


def gpu_host(**engine: object) -> HostSpec:
    return HostSpec(
        name="h",
        address="10.0.0.1",
        gpus={"model": "H100 80GB", "count": 2, "memory_gib": 80},
        vllm=[VllmSpec(image=IMAGE, model="m", **engine)],
    )


def preflight_stand_ins(tmp_path: Path, help_text: str, apps: str = "", ours: str = "") -> Path:
    """docker: `run … --help=all` prints HELP_TEXT, `image inspect` an image that needs CUDA 12.9, `top`
    the PIDs OURS of the engine's own container. nvidia-smi: R580's banner (CUDA 13.0), the compute apps
    APPS ("pid, name, MiB, uuid" lines, as `--query-compute-apps=… --format=csv,noheader,nounits`)."""
    bin_dir = tmp_path / "bin"
    (tmp_path / "help.txt").write_text(help_text)
    (tmp_path / "apps.csv").write_text(apps)
    stand_in(
        bin_dir,
        "docker",
        'case "$1" in\n'
        f'  run) echo "$*" >> {tmp_path}/docker-runs; cat {tmp_path}/help.txt ;;\n'
        "  image) echo 'NVIDIA_REQUIRE_CUDA=cuda>=12.9 brand=tesla,driver>=535' ;;\n"
        # `top -eo pid` lists the PIDs; `top -eo pid,rss` also says each holds 4 GiB (4194304 KiB).
        f"  top) echo PID; for pid in {ours}; do\n"
        '    case "$*" in *rss*) echo "$pid 4194304" ;; *) echo $pid ;; esac\n'
        "  done ;;\n"
        "esac",
    )
    stand_in(
        bin_dir,
        "nvidia-smi",
        'case "$*" in\n'
        f"  *--query-compute-apps*) cat {tmp_path}/apps.csv ;;\n"
        '  *) echo "| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |" ;;\n'
        "esac",
    )
    return bin_dir


def test_preflight_passes_when_the_image_lists_every_flag(tmp_path):
    spec = gpu_host(gpu_access="none")
    help_text = "usage: vllm serve [model_tag] [options]\n" + "\n".join(f"  {f} VALUE" for f in flags_of(spec.vllm[0]))
    bin_dir = preflight_stand_ins(tmp_path, help_text)
    result = run(preflight_script(spec, spec.vllm[0]), bin_dir)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"preflight ok: {len(flags_of(spec.vllm[0]))} flags accepted\n"
    assert (tmp_path / "docker-runs").read_text() == f"run --rm --network none {IMAGE} --help=all\n"


def test_preflight_names_each_flag_the_image_does_not_accept(tmp_path):
    """A flag must be a whole option of the help text: '--max-num' is not accepted because
    '--max-num-seqs' is, and a '.' in a flag is no wildcard."""
    spec = gpu_host(gpu_access="none", extra_args=["--swap-space", "4", "--max-num", "2", "--a.b=1"])
    listed = [f for f in flags_of(spec.vllm[0]) if f not in ("--swap-space", "--max-num", "--a.b")]
    bin_dir = preflight_stand_ins(tmp_path, "\n".join(f"  {f}" for f in [*listed, "--max-num-seqs", "--axb"]))
    result = run(preflight_script(spec, spec.vllm[0]), bin_dir)
    assert result.returncode == 1
    assert result.stderr == (
        "preflight failed:\n"
        f"  {IMAGE} does not accept --a.b (renamed or removed in this version?)\n"
        f"  {IMAGE} does not accept --max-num (renamed or removed in this version?)\n"
        f"  {IMAGE} does not accept --swap-space (renamed or removed in this version?)\n"
    )


def test_preflight_asks_an_older_image_with_help_when_help_all_fails(tmp_path):
    spec = gpu_host(gpu_access="none")
    bin_dir = preflight_stand_ins(tmp_path, "\n".join(flags_of(spec.vllm[0])))
    stand_in(
        bin_dir,
        "docker",
        f'echo "$*" >> {tmp_path}/docker-runs\n'
        'case "$*" in *--help=all) echo "error: unrecognized arguments: --help=all"; exit 2 ;; esac\n'
        f"cat {tmp_path}/help.txt",
    )
    result = run(preflight_script(spec, spec.vllm[0]), bin_dir)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "docker-runs").read_text().splitlines()[-1] == f"run --rm --network none {IMAGE} --help"


def test_preflight_names_the_processes_holding_gpu_memory_but_not_the_engines_own(tmp_path):
    spec = gpu_host(gpus=[0, 1])
    apps = (
        f"4242, python3, 30000, {UUID}\n"
        f"4343, /usr/bin/ollama, 2000, {UUID}\n"
        f"777, VLLM::EngineCore, 70000, {UUID}\n"  # the engine's own container: freed by the restart
        f"5151, python3, 8000, {OTHER_UUID}\n"  # on GPU 1, which has room for it: 81559 - 8000 >= 73403
    )
    bin_dir = preflight_stand_ins(tmp_path, "\n".join(flags_of(spec.vllm[0])), apps, ours="777 778")
    gpus = [GpuMemory(0, UUID, 81559), GpuMemory(1, OTHER_UUID, 81559)]
    result = run(preflight_script(spec, spec.vllm[0], gpus), bin_dir)
    assert result.returncode == 1
    assert result.stderr == (
        "preflight failed:\n"
        "  GPU 0: gpu_memory_utilization 0.9 needs 73403 of 81559 MiB, but 32000 MiB are held by: "
        "python3 (pid 4242, 30000 MiB) /usr/bin/ollama (pid 4343, 2000 MiB)\n"
    )
    help_text = "\n".join(flags_of(spec.vllm[0]))
    not_ours = run(preflight_script(spec, spec.vllm[0], gpus), preflight_stand_ins(tmp_path, help_text, apps, ours=""))
    assert "/usr/bin/ollama (pid 4343, 2000 MiB) VLLM::EngineCore (pid 777, 70000 MiB)\n" in not_ours.stderr


def test_preflight_names_a_gpu_nvidia_smi_does_not_list_and_checks_the_driver_for_the_image(tmp_path):
    spec = gpu_host(tensor_parallel_size=2)
    bin_dir = preflight_stand_ins(tmp_path, "\n".join(flags_of(spec.vllm[0])))
    result = run(preflight_script(spec, spec.vllm[0], [GpuMemory(0, UUID, 81559)]), bin_dir)
    assert (result.returncode, result.stderr) == (1, "preflight failed:\n  GPU 1 is not visible to nvidia-smi\n")
    stand_in(bin_dir, "nvidia-smi", "exit 9")
    result = run(preflight_script(spec, spec.vllm[0], [GpuMemory(0, UUID, 81559)], driver_cuda="12.4"), bin_dir)
    assert "the driver supports CUDA 12.4 but the image needs CUDA >= 12.9" in result.stderr


def test_preflight_needs_what_the_planner_budgets(tmp_path):
    """The MiB the preflight wants free on a GPU is vllm_budget of its total, as in the plan."""
    spec = gpu_host(gpu_memory_utilization=0.85)
    total = 81559
    needed = int(vllm_budget(0.85, total))
    assert needed == 69325
    apps = f"4242, python3, {total - needed + 1}, {UUID}\n"
    bin_dir = preflight_stand_ins(tmp_path, "\n".join(flags_of(spec.vllm[0])), apps)
    result = run(preflight_script(spec, spec.vllm[0], [GpuMemory(0, UUID, total)]), bin_dir)
    assert f"gpu_memory_utilization 0.85 needs {needed} of {total} MiB, but {total - needed + 1} MiB" in result.stderr
    (tmp_path / "apps.csv").write_text(f"4242, python3, {total - needed}, {UUID}\n")
    assert run(preflight_script(spec, spec.vllm[0], [GpuMemory(0, UUID, total)]), bin_dir).returncode == 0


def test_preflight_checks_the_hosts_ram_for_a_cpu_engine(tmp_path):
    """Against this machine's real /proc/meminfo: a CPU engine needing more than MemAvailable is named, unless its
    own running container (replaced by the deploy) holds the difference; a GPU engine gets no RAM check."""
    available_mib = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024
    spec = HostSpec(name="cpu", address="10.0.0.2", vllm=[VllmSpec(image=IMAGE, model="m", device="cpu")])
    engine = spec.vllm[0]
    assert ram_mib(engine) == math.ceil((4 + CPU_OVERHEAD_GIB) * 1024)  # unknown model: KV space + runtime
    help_text = "\n".join(flags_of(engine))
    assert run(preflight_script(spec, engine), preflight_stand_ins(tmp_path, help_text)).returncode == 0
    too_big = engine.model_copy(update={"cpu_kv_cache_gib": available_mib // 1024 + 2})
    spec = spec.model_copy(update={"vllm": [too_big]})
    result = run(preflight_script(spec, too_big), preflight_stand_ins(tmp_path, help_text))
    assert result.returncode == 1
    assert re.fullmatch(
        rf"preflight failed:\n  the CPU engine needs about {ram_mib(too_big)} MiB of RAM \(weights, cpu_kv_cache_gib, "
        r"runtime\) but \d+ MiB are available \(and 0 MiB held by the engine now\): lower cpu_kv_cache_gib or free "
        r"memory\n",
        result.stderr,
    ), result.stderr
    held = run(preflight_script(spec, too_big), preflight_stand_ins(tmp_path, help_text, ours="777 778"))
    assert held.returncode == 0, held.stderr  # 8 GiB held by the engine's own container counts as free


# ---- Ollama model pull ----------------------------------------------------------------------------


def curl_stand_in(tmp_path: Path, code: int, body: str) -> Path:
    """curl: /api/version answers; /api/pull records its request and answers BODY with status CODE."""
    bin_dir = tmp_path / "bin"
    stand_in(
        bin_dir,
        "curl",
        'for arg; do last=$arg; done\ncase "$*" in\n'
        '  */api/version*) echo \'{"version":"0.13.0"}\' ;;\n'
        f"  */api/pull*) printf '%s' \"$last\" > {tmp_path}/request; printf '%s\\n{code}' '{body}' ;;\n"
        "esac",
    )
    return bin_dir


def test_pull_model_posts_the_request_and_passes_on_200(tmp_path):
    bin_dir = curl_stand_in(tmp_path, 200, '{"status":"success"}')
    result = run(pull_command("127.0.0.1:11434", "qwen2.5:0.5b"), bin_dir)
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads((tmp_path / "request").read_text()) == {"model": "qwen2.5:0.5b", "stream": False}


def test_pull_model_fails_with_ollamas_own_error(tmp_path):
    bin_dir = curl_stand_in(tmp_path, 500, '{"error":"pull model manifest: file does not exist"}')
    result = run(pull_command("[::1]:11434", "nosuch"), bin_dir)
    assert result.returncode == 1
    assert result.stderr == 'pull nosuch failed (500): {"error":"pull model manifest: file does not exist"}\n'


# ---- gateway: ACME --------------------------------------------------------------------------------


def acme_paths(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    live = tmp_path / "letsencrypt/live/llm.test"
    tls = tmp_path / "gateway/tls"
    return live, tls / "fullchain.pem", tls / "key.pem", tmp_path / "acme"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_acme_bootstrap_makes_a_self_signed_certificate_then_links_certbots(tmp_path):
    live, cert, key, webroot = acme_paths(tmp_path)
    args = [str(script("gateway/acme-bootstrap.sh")), "llm.test", str(live), str(cert), str(key), str(webroot)]
    assert run(args, tmp_path / "bin").returncode == 0
    assert webroot.is_dir() and not cert.is_symlink()
    assert (cert.stat().st_mode & 0o777, key.stat().st_mode & 0o777) == (0o644, 0o600)
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(cert)], capture_output=True, text=True
    )
    assert "CN = llm.test" in subject.stdout or "CN=llm.test" in subject.stdout
    before = cert.read_bytes()
    assert run(args, tmp_path / "bin").returncode == 0 and cert.read_bytes() == before, "kept while it exists"
    live.mkdir(parents=True)
    (live / "fullchain.pem").write_text("chain\n")
    (live / "privkey.pem").write_text("key\n")
    assert run(args, tmp_path / "bin").returncode == 0
    assert (os.readlink(cert), os.readlink(key)) == (str(live / "fullchain.pem"), str(live / "privkey.pem"))


def acme_stand_ins(tmp_path: Path, certbot_ok: bool) -> Path:
    """certbot, nginx and systemctl append how they were called to calls.log."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "calls.log"
    stand_in(
        bin_dir, "certbot", f'echo "certbot $* CA=${{REQUESTS_CA_BUNDLE:-}}" >> {log}\nexit {0 if certbot_ok else 1}'
    )
    stand_in(bin_dir, "nginx", f'echo "nginx $*" >> {log}')
    stand_in(bin_dir, "systemctl", f'echo "systemctl $*" >> {log}')
    return bin_dir


def test_acme_certificate_runs_certbot_then_links_checks_and_reloads(tmp_path):
    live, cert, key, _ = acme_paths(tmp_path)
    cert.parent.mkdir(parents=True)
    cert.write_text("self-signed\n")
    args = [str(script("gateway/acme-certificate.sh")), str(live), str(cert), str(key), "/etc/pebble/ca.pem"]
    result = run([*args, "certbot", "certonly", "-d", "llm.test"], acme_stand_ins(tmp_path, certbot_ok=True))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls.log").read_text().splitlines() == [
        "certbot certonly -d llm.test CA=/etc/pebble/ca.pem",
        "nginx -t -q",
        "systemctl reload nginx",
    ]
    assert os.readlink(cert) == str(live / "fullchain.pem") and os.readlink(key) == str(live / "privkey.pem")


def test_acme_certificate_stops_when_certbot_fails(tmp_path):
    live, cert, key, _ = acme_paths(tmp_path)
    args = [str(script("gateway/acme-certificate.sh")), str(live), str(cert), str(key), ""]
    result = run([*args, "certbot", "certonly"], acme_stand_ins(tmp_path, certbot_ok=False))
    assert result.returncode == 1
    assert (tmp_path / "calls.log").read_text().splitlines() == ["certbot certonly CA="]
    assert not cert.is_symlink()


# ---- NVIDIA driver ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modinfo", "code", "said"),
    [
        ("echo 580.95.05", 0, "nvidia module on disk: 580.95.05\n"),
        (
            "echo 570.195.03",
            1,
            "requested driver branch 580 but the packages installed 570.195.03 (Ubuntu ships "
            "nvidia-headless-580-server-open as a transitional package on this release): pin the branch it "
            "really installs\n",
        ),
        ("echo 'modinfo: ERROR: Module nvidia not found.' >&2; exit 1", 1, "installed no nvidia module ("),
    ],
    ids=["right-branch", "transitional-package", "no-module"],
)
def test_installed_branch_check(tmp_path, modinfo, code, said):
    stand_in(tmp_path / "bin", "modinfo", modinfo)
    result = run(installed_branch_check(DriverSpec(branch=580)), tmp_path / "bin")
    assert result.returncode == code
    assert said in (result.stdout if code == 0 else result.stderr)


def test_loaded_branch_check_after_the_reboot(tmp_path):
    version = tmp_path / "version"
    version.write_text("580.95.05\n")
    stand_in(tmp_path / "bin", "nvidia-smi", "exit 0")
    args = [str(script("nvidia/loaded-branch.sh")), "580", str(version)]
    assert run(args, tmp_path / "bin").returncode == 0
    stand_in(tmp_path / "bin", "nvidia-smi", "echo 'NVIDIA-SMI has failed' ; exit 9")
    assert run(args, tmp_path / "bin").returncode == 9, "nvidia-smi must work too"
    version.write_text("570.1\n")
    result = run(args, tmp_path / "bin")
    assert (result.returncode, result.stderr) == (1, "after reboot the loaded driver is 570.1, not 580\n")


def test_pci_gpus_from_sysfs_without_lspci(tmp_path):
    devices = tmp_path / "devices"
    for slot, vendor, cls, device in [
        ("0000:00:06.0", "0x10de", "0x030200", "0x2330"),  # H100: 3D controller
        ("0000:00:07.0", "0x10de", "0x040300", "0x22e8"),  # the same card's audio function
        ("0000:00:08.0", "0x8086", "0x030000", "0x1234"),  # another vendor's VGA
    ]:
        (devices / slot).mkdir(parents=True)
        for name, value in (("vendor", vendor), ("class", cls), ("device", device)):
            (devices / slot / name).write_text(value + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cat", "cut"):  # a PATH without lspci
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(
        ["/bin/sh", str(script("nvidia/pci-gpus.sh")), str(devices)],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
    )
    assert (result.returncode, result.stdout) == (0, "0000:00:06.0 NVIDIA [10de:2330]\n")


def test_pci_gpus_from_lspci(tmp_path):
    line = "00:06.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)"
    audio = "00:07.0 Audio device [0403]: NVIDIA Corporation Device [10de:22e8] (rev a1)"
    stand_in(tmp_path / "bin", "lspci", f'[ "$*" = "-d 10de: -nn" ] && printf "%s\\n" "{line}" "{audio}"')
    result = run([str(script("nvidia/pci-gpus.sh")), str(tmp_path / "none")], tmp_path / "bin")
    assert (result.returncode, result.stdout) == (0, line + "\n")


# ---- vLLM unit: wait for the healthcheck ----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "code", "said"),
    [("running/healthy", 0, ""), ("running/unhealthy", 1, "c is unhealthy\n"), ("exited/", 1, "c stopped (exited/)\n")],
)
def test_wait_healthy_ends_on_the_containers_state(tmp_path, state, code, said):
    stand_in(tmp_path / "bin", "docker", f"echo '{state}'")
    result = run([str(script("vllm/wait-healthy.sh")), "c", "30"], tmp_path / "bin")
    assert (result.returncode, result.stderr) == (code, said)
