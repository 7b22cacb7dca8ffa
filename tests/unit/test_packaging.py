"""`pip install .` gives a gpuctl that works from any folder: templates and deploys ship in the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from harness.cli import REPO


def test_wheel_ships_templates_and_deploys_and_works_from_another_folder(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("gpuctl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "gpuctl/cli.py",
        "gpuctl/templates/vllm/compose.yaml.j2",
        "gpuctl/templates/vllm/vllm.service.j2",
        "gpuctl/templates/vllm/wait-healthy.sh",
        "gpuctl/templates/ollama/override.conf.j2",
        "gpuctl/deploy/__init__.py",
    ):
        assert expected in names, expected
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "inventories").mkdir(parents=True)
    (elsewhere / "inventories" / "prod.py").write_text((REPO / "inventories" / "prod.py").read_text())
    # -I: isolated mode, so neither the checkout nor an editable install can shadow the wheel.
    code = f"import sys; sys.path.insert(0, {str(target)!r}); from gpuctl.cli import main; main()"
    run = subprocess.run(
        [sys.executable, "-I", "-c", code, "render", "prod", "--out", "out"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "out/gpu-01/etc/gpuctl/vllm-main/compose.yaml").is_file()
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(target)!r}); import gpuctl.render as r; print(r.templates_dir())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip().startswith(str(target)), probe.stdout + probe.stderr
