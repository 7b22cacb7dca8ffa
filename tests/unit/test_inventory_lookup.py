"""Inventories by name from anywhere: ./inventories, then $GPUCTL_INVENTORIES, then the XDG config folder,
and the examples shipped with gpuctl as example:NAME; every place searched is named when none has it."""

from __future__ import annotations

from pathlib import Path

from harness.cli import run_cli

ONE_HOST = (
    "from gpuctl.inventory import Host, Ollama\n"
    "lab = [Host('{name}', local=True, ollama=Ollama(version='0.13.0', cpu_fallback=True))]\n"
)


def write(folder: Path, name: str, host: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(ONE_HOST.format(name=host))


def check(name: str, cwd: Path, **env: str):
    return run_cli("check", name, "--json", cwd=cwd, env={"XDG_CONFIG_HOME": "", **env})


def test_a_name_is_found_in_the_working_folder_then_the_env_folders_then_the_config_folder(tmp_path):
    elsewhere, home = tmp_path / "somewhere", tmp_path / "home"
    elsewhere.mkdir()
    write(home / ".config" / "gpuctl" / "inventories", "lab", "from-config")
    assert '"name": "from-config"' in check("lab", elsewhere, HOME=str(home)).stdout
    write(tmp_path / "team", "lab", "from-env")
    found = check("lab", elsewhere, HOME=str(home), GPUCTL_INVENTORIES=f"{tmp_path / 'none'}:{tmp_path / 'team'}")
    assert '"name": "from-env"' in found.stdout
    write(elsewhere / "inventories", "lab", "from-cwd")
    assert (
        '"name": "from-cwd"'
        in check("lab", elsewhere, HOME=str(home), GPUCTL_INVENTORIES=str(tmp_path / "team")).stdout
    )
    xdg = tmp_path / "xdg"
    write(xdg / "gpuctl" / "inventories", "other", "from-xdg")
    assert '"name": "from-xdg"' in check("other", elsewhere, HOME=str(home), XDG_CONFIG_HOME=str(xdg)).stdout


def test_not_found_names_every_place_searched_and_the_examples(tmp_path):
    result = run_cli(
        "check",
        "lab",
        cwd=tmp_path,
        env={"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": "", "GPUCTL_INVENTORIES": "/srv/inv"},
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: inventory lab: not found as lab.py in {tmp_path}/inventories, /srv/inv, ~/.config/gpuctl/inventories "
        "(none there; examples shipped with gpuctl: example:cpu-server, example:dev-laptop, "
        "example:dev-workstation, example:prod, "
        "example:vagrant)\n"
    )


def test_the_shipped_examples_work_from_anywhere_and_are_not_deployed(tmp_path):
    assert run_cli("check", "example:prod", cwd=tmp_path).exit_code == 0
    assert run_cli("plan", "example:cpu-server", cwd=tmp_path).exit_code == 0
    rendered = run_cli("render", "example:dev-laptop", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert rendered.exit_code == 0 and len(list((tmp_path / "out").iterdir())) >= 1
    refused = run_cli("deploy", "example:prod", "--yes", cwd=tmp_path)
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: example:prod is an example shipped with gpuctl (documentation addresses)")
    unknown = run_cli("check", "example:nope", cwd=tmp_path)
    assert unknown.stderr == (
        "error: inventory example:nope: no such example "
        "(examples: cpu-server, dev-laptop, dev-workstation, prod, vagrant)\n"
    )
