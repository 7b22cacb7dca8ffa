"""The preflight reads the driver's CUDA version from nvidia-smi of R580 and of R610 and later.

Fixtures: tests/data/nvidia-smi-h100.txt (real, captured on an H100 with driver 580.159.04),
tests/data/nvidia-smi-610-banner.txt (the R610 banner as published, sources in the file) and
tests/data/proc-driver-nvidia-version-580.txt (/proc/driver/nvidia/version of 580.95.05, as quoted
in nix-community/nixGL#186). The preflight's shipped script (templates/vllm/preflight.sh) runs here for
real with sh, with the command the deploy builds; the driver's version is read from the /proc fixture
as the deploy's fact reads it. Only `nvidia-smi` and `docker` are STAND-INS (no GPU or Docker here):
they print a fixture.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gpuctl import outside
from gpuctl.deploy.preflight import flags_of, preflight_script
from gpuctl.gpu_facts import GpuMemory, proc_driver_version
from gpuctl.spec import HostSpec, VllmSpec

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
SPEC = HostSpec(
    name="h",
    address="10.0.0.1",
    gpus={"model": "H100 80GB", "count": 1, "memory_gib": 80},
    vllm=[VllmSpec(image="vllm/vllm-openai:v0.32.0", model="m")],
)
GPU = GpuMemory(0, "GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f", 81559)


def stand_ins(tmp_path: Path, banner: str | None, need: str) -> Path:
    """A folder with the STAND-INS: nvidia-smi printing BANNER (failing when None; no compute apps), and
    docker answering `run IMAGE --help=all` (every flag the engine uses), `image inspect` with
    NVIDIA_REQUIRE_CUDA=cuda>=NEED as the real images declare it, and `top` with no process."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "banner").write_text(banner or "")
    smi = f"cat {tmp_path / 'banner'}" if banner is not None else "exit 9"
    (bin_dir / "nvidia-smi").write_text(
        f'#!/bin/sh\n# STAND-IN: nvidia-smi printing a fixture\ncase "$*" in --query-*) exit 0 ;; esac\n{smi}\n'
    )
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n# STAND-IN: docker image inspect of a vLLM image\n"
        'case "$1 $2" in\n'
        f"  'image inspect') echo PATH=/usr/bin; echo 'NVIDIA_REQUIRE_CUDA=cuda>={need} brand=tesla,driver>=535' ;;\n"
        "  'top '*) echo PID ;;\n"
        f"  *) echo 'usage: vllm serve [options] {' '.join(flags_of(SPEC.vllm[0]))}' ;;\n"
        "esac\n"
    )
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return bin_dir


def run_preflight(tmp_path: Path, banner: str | None, proc: str | None, need: str) -> str:
    """Run the preflight; return what it reports ('' when it passes)."""
    bin_dir = stand_ins(tmp_path, banner, need)
    driver = proc_driver_version(proc or "")
    command = preflight_script(SPEC, SPEC.vllm[0], [GPU], outside.max_cuda_of_driver(driver) if driver else None)
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=30, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}
    )
    assert result.returncode == (1 if result.stderr else 0), result.stderr
    return " ".join(line.strip() for line in result.stderr.splitlines()[1:])


def run_cuda_check(tmp_path: Path, banner: str | None, proc: str | None, need: str) -> tuple[str, str]:
    """(the CUDA version the preflight read, what it reports for an image that needs NEED). The version
    read shows in what it reports for an image that needs more than any driver gives."""
    fail = run_preflight(tmp_path, banner, proc, need)
    too_new = run_preflight(tmp_path, banner, proc, "99.9")
    have = re.fullmatch(r"the driver supports CUDA (\S+) but .*|nvidia-smi does not answer: .*", too_new)
    assert have is not None, too_new
    return have.group(1) or "", fail


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


def test_the_driver_version_is_read_from_proc():
    assert proc_driver_version(PROC_580) == "580.95.05"
    assert proc_driver_version(PROC_610) == "610.43.02"
    assert proc_driver_version("") is None and proc_driver_version("GCC version:  gcc 11.4.0\n") is None


def test_driver_branch_table_gives_the_highest_cuda():
    assert outside.max_cuda_of_driver("580.159.04") == "13.0"
    assert outside.max_cuda_of_driver("610.43.02") == "13.3"
    assert outside.max_cuda_of_driver("612.1.0") == "13.3"  # an unlisted branch: the branch below it
    assert outside.max_cuda_of_driver("470.1") is None and outside.max_cuda_of_driver("?") is None
