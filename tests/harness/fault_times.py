"""Time-to-detect and time-to-repair of the fault catalog's faults, recorded while the fleet tests run.

Each fault test measures how long `gpuctl verify` took to name the fault and how long the repair took
(`gpuctl deploy`, or the host healing itself), and records it here: printed, and appended as a JSON
line to gpuctl-fault-times.jsonl in the temporary folder. Figures only; no test asserts on them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

RECORD = Path(tempfile.gettempdir()) / "gpuctl-fault-times.jsonl"


def record(fault: str, detect_s: float, repair_s: float, repaired_by: str) -> None:
    line = {"fault": fault, "detect_s": round(detect_s, 1), "repair_s": round(repair_s, 1), "repaired_by": repaired_by}
    print(f"fault catalog: {fault}: named by verify in {detect_s:.1f} s, repaired by {repaired_by} in {repair_s:.1f} s")
    with RECORD.open("a") as out:
        out.write(json.dumps(line) + "\n")


class Stopwatch:
    """`with Stopwatch() as t: …` then `t.seconds`."""

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
