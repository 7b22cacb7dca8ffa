"""The preflight reads the driver's CUDA version from nvidia-smi of R580 and of R610 and later.

Fixtures: tests/data/nvidia-smi-h100.txt (real, captured on an H100 with driver 580.159.04),
tests/data/nvidia-smi-610-banner.txt (the R610 banner as published, sources in the file) and
tests/data/proc-driver-nvidia-version-580.txt (/proc/driver/nvidia/version of 580.95.05, as quoted
in nix-community/nixGL#186). The preflight's own shell lines run here for real with sh; only
`nvidia-smi` and `docker image inspect` are STAND-INS (no GPU or Docker here) that print a fixture.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuctl import outside
from gpuctl.deploy.preflight import cuda_lines

DATA = Path(__file__).parents[1] / "data"


def section(name: str, title: str) -> str:
    """The lines of fixture NAME under '## TITLE' (up to the next '##')."""
    lines, inside = [], False
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("## "):
            inside = line[3:].strip() == title
        elif inside:
            lines.append(line)
    return "\n".join(lines) + "\n"


BANNER_580 = section("nvidia-smi-h100.txt", "nvidia-smi")
BANNER_610 = section("nvidia-smi-610-banner.txt", "nvidia-smi")
PROC_610 = section("nvidia-smi-610-banner.txt", "/proc/driver/nvidia/version")
ADVICE = ": install a newer driver branch or pin an older image"
PROC_580 = (DATA / "proc-driver-nvidia-version-580.txt").read_text()


def run_cuda_check(tmp_path: Path, banner: str | None, proc: str | None, need: str) -> tuple[str, str]:
    """Run the preflight's CUDA lines; return (the CUDA version it read, what it would report)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "banner").write_text(banner or "")
    smi = f"cat {tmp_path / 'banner'}" if banner is not None else "exit 9"
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n# STAND-IN: nvidia-smi printing a fixture\n{smi}\n")
    (bin_dir / "docker").write_text(
        f"#!/bin/sh\n# STAND-IN: docker image inspect of a vLLM image\n"
        f"echo PATH=/usr/bin; echo 'NVIDIA_REQUIRE_CUDA=cuda>={need} brand=tesla,driver>=535'\n"
    )
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    version_file = tmp_path / "version"
    if proc is not None:
        version_file.write_text(proc)
    script = "\n".join(
        [
            "fail=''",
            'note() { fail="$fail $1"; }',
            *cuda_lines("vllm/vllm-openai:v0.32.0", str(version_file)),
            'echo "$have"',
            'echo "$fail"',
        ]
    )
    result = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}
    )
    assert result.returncode == 0, result.stderr
    have, fail = result.stdout.split("\n")[:2]
    return have, fail.strip()


def test_fixtures_are_what_they_claim():
    assert "Driver Version: 580.159.04     CUDA Version: 13.0" in BANNER_580
    assert "KMD Version: 610.43.02     CUDA UMD Version: 13.3" in BANNER_610 and "CUDA Version:" not in BANNER_610


@pytest.mark.parametrize(
    ("banner", "proc", "need", "have", "fail"),
    [
        (BANNER_580, PROC_580, "12.9", "13.0", ""),
        (BANNER_610, PROC_610, "13.0", "13.3", ""),  # read "CUDA UMD Version" (R610 and later)
        (
            BANNER_580,
            PROC_580,
            "13.3",
            "13.0",
            "the driver supports CUDA 13.0 but the image needs CUDA >= 13.3" + ADVICE,
        ),
        (BANNER_610, None, "13.4", "13.3", "the driver supports CUDA 13.3 but the image needs CUDA >= 13.4" + ADVICE),
        ("", PROC_610, "13.0", "13.3", ""),  # no banner field at all: the driver's branch gives 13.3
        (None, PROC_580, "13.0", "13.0", ""),
        (None, None, "12.9", "", "nvidia-smi does not answer: no driver to run CUDA 12.9"),
    ],
    ids=["580", "610", "580-too-old", "610-too-old", "610-no-field", "580-no-smi", "no-driver"],
)
def test_preflight_reads_the_drivers_cuda_for_580_and_610(tmp_path, banner, proc, need, have, fail):
    assert run_cuda_check(tmp_path, banner, proc, need) == (have, fail)


def test_driver_branch_table_gives_the_highest_cuda():
    assert outside.max_cuda_of_driver("580.159.04") == "13.0"
    assert outside.max_cuda_of_driver("610.43.02") == "13.3"
    assert outside.max_cuda_of_driver("612.1.0") == "13.3"  # an unlisted branch: the branch below it
    assert outside.max_cuda_of_driver("470.1") is None and outside.max_cuda_of_driver("?") is None
