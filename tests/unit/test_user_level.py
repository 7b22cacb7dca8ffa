"""A user-level install (Host(install="user")): Ollama in the user's home as a `systemctl --user` service, no
root. What it accepts, the files it renders (checked by the real `systemd-analyze verify --user`), and the
host commands it runs, executed for real with sh against a scratch $HOME: the installer and the release
records land in the home, and the user's service manager is found without a login session's environment.
(The deploy itself, as a plain user on a host with lingering, is tests/deploy/test_deploy_user_level.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from gpuctl import inventory, releases
from gpuctl.access import Connection
from gpuctl.deploy.ollama import install_command
from gpuctl.errors import GpuctlError
from gpuctl.host_layout import USER_OLLAMA
from gpuctl.render import render_host
from harness import mirror
from harness.cli import REPO

WORKSTATION = REPO / "inventories" / "dev-workstation.py"


def workstation():
    return inventory.load(str(WORKSTATION)).hosts["dev-workstation"]


def load_one(tmp_path: Path, host: str) -> None:
    path = tmp_path / "inv.py"
    path.write_text(
        textwrap.dedent(
            """
            from gpuctl.inventory import Driver, Gateway, Gpu, Host, Ollama, Vllm
            O = Ollama(version="0.13.0", cpu_fallback=True)
            hosts = [HOST]
            """
        ).replace("HOST", host)
    )
    inventory.load(str(path))


@pytest.mark.parametrize(
    ("host", "field"),
    [
        ('Host("w", local=True, install="user")', "install"),
        ('Host("w", local=True, install="user", ollama=O, gateway=Gateway())', "gateway"),
        (
            'Host("w", local=True, install="user", ollama=O, '
            'vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model="org/m", gpu_access="none"))',
            "vllm",
        ),
        (
            'Host("w", local=True, install="user", ollama=O, '
            'gpus=Gpu(model="RTX 4090", count=1, memory_gib=24), driver=Driver(branch=580))',
            "driver",
        ),
        ('Host("w", address="192.0.2.9", ssh_user="dev", install="user", ollama=O, sudo=True)', "sudo"),
    ],
)
def test_a_user_level_host_holds_only_what_runs_without_root(tmp_path, host, field):
    with pytest.raises(GpuctlError) as failed:
        load_one(tmp_path, host)
    message = str(failed.value)
    assert f"{field}:" in message and "\n" not in message.strip()


def test_a_user_level_host_connects_without_sudo_and_a_shared_ollama_stays_system_wide_elsewhere(tmp_path):
    path = tmp_path / "inv.py"
    path.write_text(
        textwrap.dedent(
            """
            from gpuctl.inventory import Host, Ollama
            O = Ollama(version="0.13.0", cpu_fallback=True)
            hosts = [Host("w", address="192.0.2.9", ssh_user="dev", install="user", ollama=O),
                     Host("s", address="192.0.2.10", ssh_user="ops", ollama=O)]
            """
        )
    )
    hosts = inventory.load(str(path)).hosts
    user, system = hosts["w"], hosts["s"]
    assert (Connection.of(user).sudo, Connection.of(system).sudo) == (False, True)
    assert user.ollama.layout is USER_OLLAMA and not system.ollama.layout.user_level
    assert system.ollama.environment()["OLLAMA_MODELS"] == "/usr/share/ollama/.ollama/models"


def test_the_workstation_renders_into_the_home_without_a_models_override():
    files = render_host(workstation(), resolve=lambda _: "unused")
    paths = sorted(str(f.path) for f in files)
    assert paths == ["~/.config/systemd/user/ollama.service", "~/.config/systemd/user/ollama.service.d/override.conf"]
    assert {(f.owner, f.group) for f in files} == {("~", "~")}
    assert files.ollama is not None
    dropin = files.ollama.dropin.content
    assert "OLLAMA_MODELS" not in dropin  # Ollama's own default for a user: ~/.ollama/models
    assert "User=" not in files.ollama.unit.content


def verify_user_unit(home: Path, unit_text: str) -> str:
    """`systemd-analyze verify --user` of UNIT_TEXT installed in HOME (its %h); its complaints."""
    units = home / ".config/systemd/user"
    units.mkdir(parents=True, exist_ok=True)
    (units / "ollama.service").write_text(unit_text)
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = os.environ | {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    argv = ["systemd-analyze", "verify", "--man=no", "--user", str(units / "ollama.service")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    return (out.stdout + out.stderr).strip()


def test_the_user_unit_passes_systemd_analyze_and_would_fail_without_the_linked_binary(tmp_path):
    files = render_host(workstation(), resolve=lambda _: "unused")
    assert files.ollama is not None
    unit = files.ollama.unit.content
    assert "is not executable" in verify_user_unit(tmp_path, unit)  # nothing at ~/.local/bin/ollama yet
    binary = tmp_path / ".local/bin/ollama"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert verify_user_unit(tmp_path, unit) == ""


def run_as_user(command: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """COMMAND as gpuctl sends it to the host, run by sh with HOME (and only ENV besides PATH)."""
    environ = {"HOME": str(home), "PATH": os.environ["PATH"], **env}
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, env=environ)


def test_install_and_release_records_land_in_the_home_of_whoever_runs_them(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ollama = workstation().ollama.model_copy(update={"release_url": mirror.local_release(tmp_path, "0.40.2")})
    installed = run_as_user(install_command(ollama, "x86_64"), home)
    assert installed.returncode == 0, installed.stderr
    assert (home / ".local/bin/ollama").resolve() == home / ".local/lib/gpuctl-ollama/0.40.2/bin/ollama"
    assert (home / ".local/lib/ollama/.gpuctl-version").read_text() == "0.40.2\n"
    for item in render_host(workstation(), resolve=lambda _: "unused"):
        target = home / str(item.path).removeprefix("~/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content)
    recorded = run_as_user(releases.record_command(ollama), home)
    assert recorded.returncode == 0, recorded.stderr
    listed = run_as_user(releases.release_command("list", ollama), home).stdout.splitlines()
    [release] = [releases.parse_release(line) for line in listed]
    assert release.current and release.ollama_version == "0.40.2"
    assert (home / ".local/state/gpuctl/releases/ollama").is_dir()
    assert json.loads(json.dumps(release.as_dict()))["engine"] == "ollama"


def test_the_user_service_manager_is_found_without_a_login_session(tmp_path):
    """su, cron and some SSH setups give no XDG_RUNTIME_DIR: the user's manager is then /run/user/UID."""
    stub = tmp_path / "bin" / "systemctl"  # a STAND-IN for systemctl that says where it would connect
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$XDG_RUNTIME_DIR $*"\n')
    stub.chmod(0o755)
    command = f"{USER_OLLAMA.systemctl} is-active ollama.service"
    path = f"{stub.parent}:{os.environ['PATH']}"
    bare = run_as_user(command, tmp_path, PATH=path).stdout.strip()
    assert bare == f"/run/user/{os.getuid()} --user is-active ollama.service"
    given = run_as_user(command, tmp_path, PATH=path, XDG_RUNTIME_DIR="/run/user/4242").stdout.strip()
    assert given == "/run/user/4242 --user is-active ollama.service"
