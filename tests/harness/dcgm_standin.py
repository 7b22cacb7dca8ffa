"""DCGM EXPORTER STAND-IN for fleet hosts: NVIDIA's DCGM exporter needs a GPU, and none exists here.

Single file, standard library only: run on a fleet host as `python3 dcgm_standin.py PORT STATE_FILE`, it
answers GET /metrics with the DCGM exporter's default counters for one H100 (gpu="0"), in its exposition
format: the label set of internal/pkg/rendermetrics/render_metrics.go (gpu, UUID, pci_bus_id, device,
modelName, hostname) and the HELP texts and types of etc/default-counters.csv (NVIDIA/dcgm-exporter at
4.5.3-4.8.2, read 2026-12-05). The values come from STATE_FILE (JSON, read on every scrape) so a test can
stage a GPU whose memory another process holds, a hot GPU or an Xid error.
"""

from __future__ import annotations

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTERS = {  # name: (type, help, default)
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %).", 0),
    "DCGM_FI_DEV_FB_USED": ("gauge", "Framebuffer memory used (in MiB).", 0),
    "DCGM_FI_DEV_FB_FREE": ("gauge", "Framebuffer memory free (in MiB).", 81559),
    "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C).", 35),
    "DCGM_FI_DEV_MEMORY_TEMP": ("gauge", "Memory temperature (in C).", 40),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W).", 70.5),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("counter", "Total energy consumption since boot (in mJ).", 1000),
    "DCGM_FI_DEV_XID_ERRORS": ("gauge", "Value of the last XID error encountered.", 0),
}
LABELS = (
    'gpu="0",UUID="GPU-979d25eb-2ab7-bbf6-96eb-1060b2d3a27f",pci_bus_id="00000000:00:06.0",device="nvidia0",'
    'modelName="NVIDIA H100 80GB HBM3",hostname="{hostname}"'
)


def exposition(state: dict[str, float]) -> str:
    labels = LABELS.format(hostname=socket.gethostname())
    lines = []
    for name, (kind, text, default) in COUNTERS.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {state.get(name, default)}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    port, state_file = int(sys.argv[1]), sys.argv[2]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/metrics":
                self.send_error(404)
                return
            try:
                with open(state_file) as handle:
                    state = json.load(handle)
            except FileNotFoundError:
                state = {}
            body = exposition(state).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
