"""Parsers of nvidia-smi -L and nvidia-ctk cdi list (gpuctl/gpu_facts.py), on real-shaped output.

`nvidia-smi -L`: the line captured on a real H100 (tests/data/nvidia-smi-h100.txt's UUID).
`nvidia-ctk cdi list`: the shape NVIDIA's toolkit prints, as quoted in containerd/nerdctl's GPU docs
("INFO[0000] Found 3 CDI devices", then one device per line); checked 2026-12-04.
"""

from __future__ import annotations

from gpuctl.gpu_facts import cdi_gpu_uuids, cdi_staleness, gpu_uuids

H100 = "GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f"
OTHER = "GPU-3eb87630-93d5-b2b6-b8ff-9b359caf4ee2"
SMI_L = f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {H100})\n"
CDI_CURRENT = f"INFO[0000] Found 3 CDI devices\nnvidia.com/gpu=0\nnvidia.com/gpu={H100}\nnvidia.com/gpu=all\n"
CDI_STALE = f"INFO[0000] Found 3 CDI devices\nnvidia.com/gpu=0\nnvidia.com/gpu={OTHER}\nnvidia.com/gpu=all\n"


def test_uuids_are_read_from_both_tools():
    assert gpu_uuids(SMI_L + f"GPU 1: NVIDIA H100 80GB HBM3 (UUID: {OTHER})\n") == [H100, OTHER]
    assert cdi_gpu_uuids(CDI_CURRENT) == [H100]


def test_a_current_spec_matches():
    assert cdi_staleness(CDI_CURRENT, SMI_L) is None


def test_a_spec_from_another_gpu_set_is_named_stale():
    assert cdi_staleness(CDI_STALE, SMI_L) == (
        f"the CDI spec lacks {H100}; it lists {OTHER}, which the driver does not see "
        "(stale after a driver or GPU change)"
    )


def test_no_spec_and_no_gpu_are_said_plainly():
    assert cdi_staleness("INFO[0000] Found 0 CDI devices\n", SMI_L) == "no CDI spec lists nvidia.com/gpu=all"
    assert cdi_staleness(CDI_CURRENT, "") == "the driver sees no GPU (nvidia-smi -L lists none)"
