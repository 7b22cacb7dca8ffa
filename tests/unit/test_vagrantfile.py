"""The Vagrantfile validates with the real vagrant (libvirt provider) and matches inventories/vagrant.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from gpuctl import inventory
from harness.cli import REPO


def vagrant_validate(folder, tmp_path) -> subprocess.CompletedProcess[str]:
    if shutil.which("vagrant") is None:
        if os.environ.get("CI"):
            pytest.fail("vagrant is not installed (.ci/run must install vagrant and vagrant-libvirt)")
        pytest.skip("vagrant is not installed")
    env = {
        **os.environ,
        "VAGRANT_HOME": str(tmp_path / "vagrant-home"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
    }
    return subprocess.run(["vagrant", "validate"], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_vagrantfile_validates(tmp_path):
    result = vagrant_validate(REPO, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully." in result.stdout


def test_vagrant_validate_catches_a_bad_provider_setting(tmp_path):
    folder = tmp_path / "vm"
    folder.mkdir()
    (folder / "Vagrantfile").write_text((REPO / "Vagrantfile").read_text().replace("lv.cpus", "lv.cpuz"))
    result = vagrant_validate(folder, tmp_path)
    assert result.returncode != 0
    assert "cpuz" in result.stdout + result.stderr


def test_vagrant_inventory_points_at_the_vm():
    address = re.search(r'^VM_ADDRESS = "([0-9.]+)"$', (REPO / "Vagrantfile").read_text(), re.M).group(1)
    host = inventory.load("vagrant", cwd=REPO).hosts["gpuctl-vm"]
    assert host.address == address
    assert host.ssh_user == "vagrant"
    assert host.ollama is not None and host.ollama.cpu_fallback
