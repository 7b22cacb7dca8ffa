"""A laptop without root: `gpuctl deploy dev-workstation` run by a plain user (no sudo) on the machine itself
installs Ollama in that user's home as a `systemctl --user` service, which runs at boot with nobody logged in.

Real: a fleet host (systemd as PID 1, logind, the user's own systemd manager user@UID started by lingering),
a user `dev` without sudo, gpuctl built from this checkout and run there as `dev`, the README's
inventories/dev-workstation.py with only the release URL pointed at the local mirror. The Ollama server is
the STAND-IN from that mirror (no internet; the real one cannot run here).
"""

from __future__ import annotations

import json
import shlex

import pytest

from gpuctl import outside
from harness import mirror
from harness.fleet import Fleet, Host, Result
from harness.gpuctl_site import install_gpuctl

pytestmark = pytest.mark.fleet

USER = "dev"
HOME = f"/home/{USER}"
VERSION = outside.OLLAMA_VERSION


def as_dev(host: Host, command: str, timeout: float = 120) -> Result:
    """COMMAND as `dev` in a login shell of its own (su -l: a PAM session, as an SSH login would open)."""
    return host.run(f"su -l {USER} -c {shlex.quote(command)}", check=False, timeout=timeout)


def user_systemctl(host: Host, args: str) -> str:
    """`systemctl --user ARGS` as dev (its manager found as gpuctl finds it: su may give no XDG_RUNTIME_DIR)."""
    out = as_dev(host, f'XDG_RUNTIME_DIR="${{XDG_RUNTIME_DIR:-/run/user/$(id -u)}}" systemctl --user {args}')
    return out.stdout.strip() or out.stderr.strip()


@pytest.fixture(scope="module")
def workstation(fleet: Fleet) -> Host:
    host = fleet.new_host("workstation")
    # What an admin provides once: the distribution's pam_systemd (every desktop has it), the archive's tools.
    host.run(
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libpam-systemd zstd",
        timeout=300,
    )
    host.run(f"useradd --create-home --shell /bin/bash {USER}")
    install_gpuctl(fleet, host)
    mirror.serve(host)
    mirror.publish(host, VERSION)
    host.write_file(f"{HOME}/work/inventories/dev-workstation.py", mirror.shipped_inventory("dev-workstation", VERSION))
    host.run(f"chown -R {USER}: {HOME}/work")
    return host


def releases(host: Host) -> list[dict]:
    """`gpuctl history` of the workstation's Ollama, as dev."""
    history = as_dev(host, "cd ~/work && gpuctl history dev-workstation --json")
    assert history.rc == 0, history.stdout + history.stderr
    return json.loads(history.stdout)["engines"][0]["releases"]


def deploy(host: Host) -> Result:
    return as_dev(host, "cd ~/work && gpuctl deploy dev-workstation --yes --json", timeout=600)


def test_without_lingering_the_deploy_names_the_admin_step_and_installs_nothing(workstation):
    out = deploy(workstation)
    assert out.rc != 0
    [host] = json.loads(out.stdout)["hosts"]
    assert host["status"] == "failed"
    assert "sudo loginctl enable-linger dev" in json.dumps(host)
    assert workstation.run(f"test -e {HOME}/.local/bin/ollama", check=False).rc == 1


def test_a_user_deploys_ollama_in_their_home_and_verify_passes(workstation):
    workstation.run(f"loginctl enable-linger {USER}")  # the admin's one step
    first = deploy(workstation)
    assert first.rc == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["hosts"][0]["status"] == "changed"
    assert user_systemctl(workstation, "is-active ollama.service") == "active"
    assert user_systemctl(workstation, "is-enabled ollama.service") == "enabled"
    live = workstation.run(f"readlink -f {HOME}/.local/bin/ollama").stdout.strip()
    assert live == f"{HOME}/.local/lib/gpuctl-ollama/{VERSION}/bin/ollama"
    # Nothing outside the home: no system unit, binary, user or release folder; all of it owned by dev.
    for path in ("/etc/systemd/system/ollama.service", "/usr/local/bin/ollama", "/var/lib/gpuctl", "/etc/gpuctl"):
        assert workstation.run(f"test -e {path}", check=False).rc == 1, path
    assert workstation.run("getent passwd ollama", check=False).rc == 2
    foreign = workstation.run(f"find {HOME} ! -user {USER} -print").stdout.split()
    assert foreign == []
    assert listener(workstation)[0] == USER

    verify = as_dev(workstation, "cd ~/work && gpuctl verify dev-workstation --json", timeout=300)
    assert verify.rc == 0, verify.stdout + verify.stderr
    [engine] = json.loads(verify.stdout)["engines"]
    reasons = {c["name"]: c["reason"] for c in engine["checks"]}
    assert reasons["unit"] == "ollama.service is active and enabled"
    assert all(c["ok"] for c in engine["checks"]), engine["checks"]

    [release] = releases(workstation)
    assert release["ollama_version"] == VERSION and release["current"]

    again = deploy(workstation)
    assert again.rc == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["hosts"][0]["status"] == "unchanged"


def listener(host: Host) -> tuple[str, str]:
    """(user, cgroup) of the process listening on Ollama's port, read as root: no session of dev is opened."""
    found = host.run("ss -Hltnp 'sport = :11434'").stdout
    pid = found.split("pid=")[1].split(",")[0]
    owner = host.run(f"ps -o user= -p {pid}").stdout.strip()
    return owner, host.run(f"cat /proc/{pid}/cgroup").stdout.strip()


def test_the_user_service_starts_at_boot_with_nobody_logged_in(workstation):
    if user_systemctl(workstation, "is-active ollama.service") != "active":
        pytest.skip("needs the deploy of the test before")
    workstation.reboot(timeout=120)
    up = workstation.run(
        "timeout 60 sh -c 'until curl -fsS http://127.0.0.1:11434/api/version; do sleep 1; done'",
        check=False,
        timeout=90,
    )
    assert up.rc == 0, up.stdout + up.stderr
    owner, cgroup = listener(workstation)
    uid = workstation.run(f"id -u {USER}").stdout.strip()
    assert owner == USER
    assert cgroup.endswith(f"/user@{uid}.service/app.slice/ollama.service"), cgroup
    verify = as_dev(workstation, "cd ~/work && gpuctl verify dev-workstation --json", timeout=300)
    assert verify.rc == 0, verify.stdout + verify.stderr


def test_an_upgrade_and_a_rollback_stay_in_the_home(workstation):
    """Another release deployed beside the first (in ~/.local/lib/gpuctl-ollama), then `gpuctl rollback --to`
    the first: its binary live again through ~/.local/bin/ollama, the user's unit restarted and verified."""
    if user_systemctl(workstation, "is-active ollama.service") != "active":
        pytest.skip("needs the deploy of the tests before")
    [first] = releases(workstation)
    mirror.serve(workstation)  # again: the mirror's server did not survive the reboot of the test before
    mirror.publish(workstation, "0.13.5")
    inventory = f"{HOME}/work/inventories/dev-workstation.py"
    workstation.run(f'sed -i \'s/version="{VERSION}"/version="0.13.5"/\' {inventory}')
    upgraded = deploy(workstation)
    assert upgraded.rc == 0, upgraded.stdout + upgraded.stderr
    assert json.loads(workstation.run("curl -fsS http://127.0.0.1:11434/api/version").stdout) == {"version": "0.13.5"}
    back = as_dev(workstation, f"cd ~/work && gpuctl rollback dev-workstation --to {first['id']} --yes --json", 300)
    assert back.rc == 0, back.stdout + back.stderr
    [engine] = json.loads(back.stdout)["engines"]
    assert (engine["restored"], engine["ok"]) == (True, True)
    live = workstation.run(f"readlink -f {HOME}/.local/bin/ollama").stdout.strip()
    assert live == f"{HOME}/.local/lib/gpuctl-ollama/{VERSION}/bin/ollama"
    assert workstation.run("test -e /usr/local/bin/ollama", check=False).rc == 1
