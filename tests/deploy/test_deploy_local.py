"""`gpuctl deploy dev-laptop` and `gpuctl verify dev-laptop` run ON a machine against itself (@local).

This machine has no systemd as PID 1, so the "laptop" is a fleet host: gpuctl (built from this
checkout, with its dependencies) is copied into it and run there, exactly as a user would run it.
The Ollama server is the STAND-IN from a local mirror (no internet; the real one cannot run here).
"""

from __future__ import annotations

import json

import pytest

from gpuctl import outside
from harness import mirror
from harness.fleet import Fleet, Host
from harness.gpuctl_site import install_gpuctl

pytestmark = pytest.mark.fleet

VERSION = outside.OLLAMA_VERSION  # what the README's main job installs


@pytest.fixture(scope="module")
def laptop(fleet: Fleet) -> Host:
    host = fleet.new_host("laptop")
    install_gpuctl(fleet, host)
    mirror.serve(host)
    mirror.publish(host, VERSION)
    # The README's own inventory, with only the release URL pointed at the local mirror (no internet).
    host.write_file("/srv/work/inventories/dev-laptop.py", mirror.shipped_inventory("dev-laptop", VERSION))
    return host


def test_local_deploy_then_verify_on_the_machine_itself(laptop):
    first = laptop.run("cd /srv/work && gpuctl deploy dev-laptop --yes --json", check=False, timeout=600)
    assert first.rc == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["hosts"][0]["status"] == "changed"
    assert laptop.run("systemctl is-active ollama.service").stdout.strip() == "active"
    # A current release ships .tar.zst only; nothing in the inventory had to say so.
    assert laptop.read_file("/usr/local/lib/ollama/.gpuctl-archive").decode().strip() == "ollama-linux-amd64.tar.zst"

    verify = laptop.run("cd /srv/work && gpuctl verify dev-laptop --json", check=False, timeout=300)
    assert verify.rc == 0, verify.stdout + verify.stderr
    [engine] = json.loads(verify.stdout)["engines"]
    assert engine["url"] == "http://127.0.0.1:11434"
    assert {c["name"]: c["ok"] for c in engine["checks"]} == {
        "unit": True,
        "bind": True,
        "version": True,
        "models": True,
        "chat": True,
        "openai": True,
        "keep_alive": True,
    }
    reasons = {c["name"]: c["reason"] for c in engine["checks"]}
    assert reasons["unit"] == "ollama.service is active and enabled"
    assert reasons["bind"] == "port 11434 listens on 127.0.0.1 only"
    assert reasons["version"] == f"Ollama {VERSION}"

    again = laptop.run("cd /srv/work && gpuctl deploy dev-laptop --yes --json", check=False, timeout=600)
    assert again.rc == 0
    assert json.loads(again.stdout)["hosts"][0]["status"] == "unchanged"
