"""Ollama from its pinned release archive, checksum verified, installed side by side with the releases
before it (a rollback switches back), configured by a systemd drop-in; each change recorded as a release."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Arch, Groups
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gpuctl import releases
from gpuctl.deploy.facts import CommandSucceeds, FileText, LoginIdentity, MissingCommands, OllamaModels, UserAccount
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.packages import apt_installed
from gpuctl.deploy.release_steps import files_differ, keep_running_release
from gpuctl.deploy.scripts import script_command
from gpuctl.deploy.units import restart_command, start_unless_active
from gpuctl.errors import GpuctlError
from gpuctl.host_layout import OLLAMA_HOME, at_home
from gpuctl.render import OllamaFiles
from gpuctl.spec import OllamaSpec, full_model_name, on_host_address

READY_WAIT_S = 60


def install_command(ollama: OllamaSpec, host_arch: str) -> str:
    """Run templates/ollama/install-ollama.sh: make the pinned release the live one. Unless it is installed
    side by side already, read the release's sha256sum.txt, take the first listed archive among the
    acceptable ones, verify its checksum, and only then unpack it beside the others and link it live.

    A wrong checksum stops before anything installed is touched: the running version stays.
    `curl` reads https:// mirrors and file:// folders alike.
    """
    layout = ollama.layout
    candidates = ollama.archive_candidates(host_arch)
    args = [ollama.version, ollama.source_url(), str(layout.download_dir), str(layout.prefix), *candidates]
    return script_command("ollama/install-ollama.sh", *args)


def switch_release(
    ollama: OllamaSpec, rendered: OllamaFiles, host_arch: str, installed: str | None
) -> OperationMeta | None:
    """Before anything changes, keep the running release (when no recorded release matches it); then make the
    pinned version the live one. Returns the install operation, or None when the version is live already."""
    if installed != ollama.version or files_differ(rendered.all()):
        keep_running_release(ollama, installed)
    if installed == ollama.version:
        host.noop(f"Ollama {ollama.version} is installed")
        return None
    if host.get_fact(FileText, path=on_host(ollama.layout.version_marker_of(ollama.version))) == ollama.version:
        name = f"Switch to Ollama {ollama.version} (installed side by side; was {installed or 'absent'})"
    else:
        name = f"Install Ollama {ollama.version} (was {installed or 'absent'}), sha256 verified"
    return server.shell(name=name, commands=[install_command(ollama, host_arch)])


def ollama_user(groups: list[str]) -> None:
    """The system user ollama (home OLLAMA_HOME, group ollama, and render/video where the host has them, for
    the GPU). Its one account is read first; pyinfra's user step, which reads every account, runs only
    when something differs."""
    extra_groups = [g for g in ("render", "video") if g in groups]
    account = host.get_fact(UserAccount, user="ollama")
    wanted = {"home": str(OLLAMA_HOME), "shell": "/bin/false", "group": "ollama"}
    as_wanted = account is not None and all(account[k] == v for k, v in wanted.items())
    if as_wanted and set(extra_groups) <= set(account["groups"]):  # type: ignore[index]
        host.noop("user ollama is as wanted")
        return
    server.user(
        name="User ollama",
        user="ollama",
        system=True,
        group="ollama",
        groups=extra_groups or None,
        home=str(OLLAMA_HOME),
        create_home=True,
        shell="/bin/false",
    )


def on_host(path: PurePosixPath) -> str:
    """PATH as the host names it: a user-level install's ~ is the deploying user's home."""
    return str(at_home(path, host.get_fact(LoginIdentity)[2])) if path.parts[:1] == ("~",) else str(path)


def system_prerequisites(ollama: OllamaSpec, tools: list[str]) -> None:
    """As root: the tools the installer uses, the system user ollama and its models folder."""
    apt_installed(f"Ollama's tools ({', '.join(tools)})", tools)
    server.group(name="Group ollama", group="ollama", system=True)
    ollama_user(host.get_fact(Groups) or [])
    files.directory(
        name=f"Directory {ollama.models_path()}",
        path=ollama.models_path(),
        present=True,
        user="ollama",
        group="ollama",
        mode="0755",
    )


def user_prerequisites(tools: list[str], gpu_host: bool) -> None:
    """A user-level install installs nothing as root: stop, naming what an admin must do, when the tools
    are missing, the GPU host's driver does not answer, or the user's service manager would stop at logout
    (no lingering)."""
    user = host.get_fact(LoginIdentity)[0]
    if gpu_host and not host.get_fact(CommandSucceeds, test="nvidia-smi -L"):
        raise GpuctlError(
            "the host declares GPUs, but nvidia-smi does not answer: a user-level install uses the NVIDIA driver "
            'an admin installed (a deploy of the host with install="system" installs it)'
        )
    missing = host.get_fact(MissingCommands, names=tuple(tools))
    if missing:
        raise GpuctlError(
            f"a user-level install cannot install packages: ask an admin to install {' '.join(missing)} "
            f"(apt install {' '.join(missing)})"
        )
    if not host.get_fact(CommandSucceeds, test=f"test -e /var/lib/systemd/linger/{user}"):
        raise GpuctlError(
            f"user {user} has no lingering, so a user-level Ollama would stop at logout and not start at boot: "
            f"ask an admin to run `sudo loginctl enable-linger {user}` once"
        )


def needs_zstd(ollama: OllamaSpec, host_arch: str) -> bool:
    """zstd is installed only when the archive expected first is a .tar.zst (Ollama 0.14.0 and later)."""
    return ollama.archive_candidates(host_arch)[0].endswith(".tar.zst")


def pull_command(address: str, model: str) -> str:
    """Run templates/ollama/ollama-api.sh: wait (bounded) for the API at ADDRESS, then pull MODEL through it;
    a failure says Ollama's own error."""
    request = json.dumps({"model": model, "stream": False})
    return script_command("ollama/ollama-api.sh", address, str(READY_WAIT_S), "pull", f"pull {model}", request)


def copy_command(address: str, tag: str, alias: str) -> str:
    """templates/ollama/ollama-api.sh: wait (bounded) for the API at ADDRESS, then name TAG ALIAS too."""
    request = json.dumps({"source": tag, "destination": alias})
    return script_command("ollama/ollama-api.sh", address, str(READY_WAIT_S), "copy", f"name {tag} {alias}", request)


def api_address(ollama: OllamaSpec) -> str:
    """Where gpuctl talks to Ollama on the host itself (loopback when it listens everywhere)."""
    return on_host_address(ollama.bind, ollama.port)


def reload_units(ollama: OllamaSpec, changes: list) -> None:
    """`daemon-reload` of the unit's service manager (the user's, for a user-level install) after a change."""
    if ollama.layout.user_level:
        server.shell(
            name="systemd --user daemon-reload",
            commands=[f"{ollama.systemctl} daemon-reload"],
            _if=any_changed(*changes),
        )
    else:
        systemd.daemon_reload(name="systemd daemon-reload", _if=any_changed(*changes))


@deploy("Ollama")
def ollama_engine(ollama: OllamaSpec, rendered: OllamaFiles, gpu_host: bool = False) -> None:
    """Install the pinned Ollama, its unit and drop-in; restart on change; pre-pull the models. GPU_HOST: the
    host declares GPUs (a user-level install then needs the driver an admin installed)."""
    host_arch = host.get_fact(Arch) or "unknown"
    zstd = ["zstd"] if needs_zstd(ollama, host_arch) else []
    if ollama.layout.user_level:
        user_prerequisites(["curl", "tar", "sha256sum", *zstd], gpu_host)
    else:
        system_prerequisites(ollama, ["curl", "ca-certificates", "tar", *zstd])
    installed = host.get_fact(FileText, path=on_host(ollama.layout.version_marker))
    binary = switch_release(ollama, rendered, host_arch, installed)
    changes = [put_rendered(item) for item in rendered.all()]
    reload_units(ollama, changes)
    restarted = server.shell(
        name="Restart ollama.service (its files or binary changed)",
        commands=[restart_command("ollama.service", systemctl=ollama.systemctl, journalctl=ollama.journalctl)],
        _if=any_changed(*changes, *([binary] if binary else [])),
    )
    server.shell(
        name="Record the release of ollama (gpuctl history)",
        commands=[releases.record_command(ollama)],
        _if=restarted.did_change,
    )
    start_unless_active("ollama.service", ollama.systemctl, ollama.journalctl)
    address = api_address(ollama)
    present = host.get_fact(OllamaModels, address=address) or {}
    for model in ollama.models:
        name = full_model_name(model)
        if name in present:
            host.noop(f"model {name} is present")
        else:
            server.shell(name=f"Pull model {model}", commands=[pull_command(address, model)])
    for alias, tag in ollama.aliases.items():
        digest = present.get(full_model_name(alias))
        if digest is not None and digest == present.get(full_model_name(tag)):
            host.noop(f"model {alias} is {tag}")
        else:
            server.shell(
                name=f"Name model {tag} {alias} (clients send {alias})", commands=[copy_command(address, tag, alias)]
            )
