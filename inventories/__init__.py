"""gpuctl's example inventories (shipped as gpuctl.examples: `gpuctl check example:prod`)."""
