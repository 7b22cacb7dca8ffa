#!/bin/sh
# Run by `gpuctl discover` on a host (never installed there); reads only, changes nothing.
# Prints KEY=VALUE lines: the distribution, kernel, CPU, RAM, free disk where models go, Docker and the
# NVIDIA container toolkit, and the NVIDIA GPUs nvidia-smi sees when a driver is loaded.
# Usage: host-facts MODELS_DIR
set -u
models_dir=$1

if [ -r /etc/os-release ]; then
    # shellcheck source=/dev/null
    . /etc/os-release
    echo "os_id=${ID:-unknown}"
    echo "os_version=${VERSION_ID:-unknown}"
    echo "os_name=${PRETTY_NAME:-unknown}"
fi
echo "kernel=$(uname -r)"
echo "arch=$(uname -m)"
echo "cpus=$(nproc 2>/dev/null || echo 0)"
echo "cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "mem_kib=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/meminfo)"
where=$models_dir
while [ ! -d "$where" ] && [ "$where" != / ]; do where=$(dirname "$where"); done
echo "disk_avail_bytes=$(df -P -B1 "$where" 2>/dev/null | awk 'NR == 2 {print $4}')"
docker=$(docker version --format '{{.Server.Version}}' 2>/dev/null | head -n 1)
echo "docker=${docker:-none}"
toolkit=$(nvidia-ctk --version 2>/dev/null | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -n 1)
echo "toolkit=${toolkit:-none}"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L | sed 's/^/smi_gpu=/'
    nvidia-smi --query-gpu=index,uuid,memory.total,memory.used --format=csv,noheader,nounits | sed 's/^/smi_memory=/'
    echo "driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)"
    echo "cuda=$(nvidia-smi | sed -n 's/.*CUDA\( UMD\)\{0,1\} Version: *\([0-9.]*\).*/\2/p' | head -n 1)"
fi
# The GPUs on the PCI bus come from nvidia/pci-gpus.sh (gpuctl.discover runs it after this script);
# NVSwitch bridges are not display devices, so they are counted here.
if command -v lspci >/dev/null 2>&1; then
    echo "nvswitches=$(lspci -d 10de: -nn | grep -ci 'nvswitch')"
fi
exit 0
