"""GPU STAND-IN for fleet hosts: fake `lspci` and `nvidia-smi` executables that report an H100.

No GPU exists on this machine or its test hosts. These two scripts are the only stand-in in the GPU
deploy tests: every other fact (packages, files, services, Docker's configuration) is read from a
real host. Their output is copied from a real H100 (tests/data/nvidia-smi-h100.txt, driver
580.159.04). Install them into /usr/local/bin, which comes first on PATH.
"""

from __future__ import annotations

from harness.fleet import Host

LSPCI_LINE = "00:06.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)"
DRIVER_VERSION = "580.159.04"
UUID = "GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f"

LSPCI = """#!/bin/sh
# GPU STAND-IN (tests only): answers `lspci -d 10de: ...` as a host with {count} H100 would.
case "$*" in
  *10de:*) {lines} ;;
esac
exit 0
"""

NVIDIA_SMI = """#!/bin/sh
# GPU STAND-IN (tests only): nvidia-smi of a host with a loaded {version} driver and one H100.
# /etc/gpuctl-test/nvidia-smi.conf may set CUDA (driver's CUDA version), OTHERS_MIB (memory held
# by another process, pid 4242) and DRIVER (a >= 610 version prints R610's banner: "KMD Version",
# "CUDA UMD Version") to stage an old or new driver or a busy GPU.
CUDA=13.0; OTHERS_MIB=0; DRIVER={version}
[ -r /etc/gpuctl-test/nvidia-smi.conf ] && . /etc/gpuctl-test/nvidia-smi.conf
UUID=GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f
case "$*" in
  *--query-gpu=driver_version,memory.used,memory.total*) echo "$DRIVER, $OTHERS_MIB, 81559" ;;
  *--query-gpu=index,uuid,memory.total,memory.used*) echo "0, $UUID, 81559, $OTHERS_MIB" ;;
  *--query-gpu=memory.used,memory.total*) echo "$OTHERS_MIB, 81559" ;;
  *--query-gpu=driver_version*) echo "$DRIVER" ;;
  *--query-compute-apps*) [ "$OTHERS_MIB" -gt 0 ] && echo "4242, python3, $OTHERS_MIB, $UUID" ;;
  -L) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: $UUID)" ;;
  *) if [ "${{DRIVER%%.*}}" -ge 610 ]; then
       echo "| NVIDIA-SMI $DRIVER              KMD Version: $DRIVER     CUDA UMD Version: $CUDA     |"
     else
       echo "| NVIDIA-SMI $DRIVER             Driver Version: $DRIVER     CUDA Version: $CUDA     |"
     fi ;;
esac
exit 0
"""


def configure(host: Host, cuda: str = "13.0", others_mib: int = 0, driver: str = DRIVER_VERSION) -> None:
    """Stage the driver (its version decides the banner's shape), its CUDA version and memory held by
    another process."""
    host.write_file("/etc/gpuctl-test/nvidia-smi.conf", f"CUDA={cuda}\nOTHERS_MIB={others_mib}\nDRIVER={driver}\n")


def remove(host: Host) -> None:
    host.run("rm -f /usr/local/bin/lspci /usr/local/bin/nvidia-smi /etc/gpuctl-test/nvidia-smi.conf")


def install(host: Host, gpus: int = 1, driver_loaded: bool = False) -> None:
    """Make HOST report GPUS H100s on its PCI bus and, if DRIVER_LOADED, a working nvidia-smi."""
    lines = "; ".join(f"echo '{LSPCI_LINE.replace('06.0', f'0{6 + i}.0')}'" for i in range(gpus)) or ":"
    host.write_file("/usr/local/bin/lspci", LSPCI.format(count=gpus, lines=lines), mode=0o755)
    if driver_loaded:
        host.write_file("/usr/local/bin/nvidia-smi", NVIDIA_SMI.format(version=DRIVER_VERSION), mode=0o755)
    else:
        host.run("rm -f /usr/local/bin/nvidia-smi")


UBUNTU_2404_OS_RELEASE = """PRETTY_NAME="Ubuntu 24.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.3 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=noble
"""
"""/etc/os-release of Ubuntu 24.04.3 (its first lines as captured on the H100 host, tests/data)."""


def claim_ubuntu(host: Host) -> None:
    """OS-IDENTITY STAND-IN: the Debian fleet host's /etc/os-release says Ubuntu 24.04, so gpuctl plans
    the Ubuntu GPU path there (GPU hosts on Debian are refused). For dry runs only: the packages
    planned are Ubuntu's and do not exist in the fleet's Debian repository."""
    host.write_file("/etc/os-release", UBUNTU_2404_OS_RELEASE)


def restore_debian(host: Host) -> None:
    host.run("ln -sf ../usr/lib/os-release /etc/os-release")


NVIDIA_CTK = """#!/bin/sh
# CONTAINER-TOOLKIT STAND-IN (tests only; the real toolkit cannot be installed here). Two commands:
#   nvidia-ctk cdi list                     devices of the CDI specs in /etc/cdi and /var/run/cdi
#   nvidia-ctk cdi generate [--output=F]    a spec for the GPUs `nvidia-smi -L` lists (default:
#                                           $NVIDIA_CTK_CDI_OUTPUT_FILE_PATH, as nvidia-cdi-refresh sets it)
case "$1 $2" in
  "cdi list")
    n=$(cat /etc/cdi/*.yaml /var/run/cdi/*.yaml 2>/dev/null | grep -c '^  - name:')
    echo "INFO[0000] Found $n CDI devices" >&2
    cat /etc/cdi/*.yaml /var/run/cdi/*.yaml 2>/dev/null \\
      | sed -n 's/^  - name: "\\{0,1\\}\\([^"]*\\)"\\{0,1\\}$/nvidia.com\\/gpu=\\1/p'
    ;;
  "cdi generate")
    out=${NVIDIA_CTK_CDI_OUTPUT_FILE_PATH:-/dev/stdout}
    case "$3" in --output=*) out=${3#--output=} ;; esac
    mkdir -p "$(dirname "$out")"
    {
      echo 'cdiVersion: 0.5.0'; echo 'kind: nvidia.com/gpu'; echo 'devices:'
      nvidia-smi -L | sed -n 's/^GPU \\([0-9]*\\): .*(UUID: \\(GPU-[0-9a-f-]*\\)).*/  - name: "\\1"\\n  - name: \\2/p'
      echo '  - name: all'
    } > "$out"
    echo "INFO[0000] Generated CDI spec with version 0.5.0" >&2
    ;;
  *) echo "nvidia-ctk stand-in: unsupported: $*" >&2; exit 2 ;;
esac
"""

CDI_REFRESH_SERVICE = """[Unit]
Description=Refresh NVIDIA CDI specification (CONTAINER-TOOLKIT STAND-IN, shaped like the toolkit's unit)
[Service]
Type=oneshot
Environment=NVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/var/run/cdi/nvidia.yaml
ExecStart=/usr/local/bin/nvidia-ctk cdi generate
"""


def install_toolkit(host: Host, spec_uuid: str | None = None) -> None:
    """CONTAINER-TOOLKIT STAND-IN: nvidia-ctk and nvidia-cdi-refresh.service; SPEC_UUID stages a CDI spec
    left from another GPU (a stale spec after a driver or GPU change)."""
    host.write_file("/usr/local/bin/nvidia-ctk", NVIDIA_CTK, mode=0o755)
    host.write_file("/etc/systemd/system/nvidia-cdi-refresh.service", CDI_REFRESH_SERVICE)
    host.run("systemctl daemon-reload")
    if spec_uuid is not None:
        host.write_file(
            "/var/run/cdi/nvidia.yaml",
            f'cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n  - name: "0"\n  - name: {spec_uuid}\n  - name: all\n',
        )


def remove_toolkit(host: Host) -> None:
    host.run(
        "rm -f /usr/local/bin/nvidia-ctk /etc/systemd/system/nvidia-cdi-refresh.service /var/run/cdi/nvidia.yaml"
        " && systemctl daemon-reload"
    )
