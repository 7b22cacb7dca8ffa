#!/bin/sh
# Run by gpuctl on the host (never installed there); changes nothing. The NVIDIA GPUs on the PCI bus,
# one line each: from lspci when it is installed, else from sysfs (vendor 0x10de, display class
# 0x03xxxx), so a bare server without pciutils is still seen.
# Usage: pci-gpus DEVICES_DIR   (the kernel's /sys/bus/pci/devices)
set -u
devices=$1

if command -v lspci >/dev/null 2>&1; then
    lspci -d 10de: -nn | grep -Ei 'vga|3d|display' || true
    exit 0
fi
for device in "$devices"/*; do
    [ "$(cat "$device/vendor" 2>/dev/null)" = 0x10de ] || continue
    case "$(cat "$device/class")" in
        0x03*) echo "${device##*/} NVIDIA [10de:$(cut -c3- "$device/device")]" ;;
    esac
done
