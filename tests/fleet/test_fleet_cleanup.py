"""Nothing is left on the machine after a fleet closes, or after a run crashed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.fleet import Fleet, leftovers, mounts_under, nspawn_processes, reap_stale_runs

pytestmark = pytest.mark.fleet

TESTS_DIR = Path(__file__).resolve().parents[1]


def assert_nothing_left(run_id: str, netns: list[str], veths: list[str]) -> None:
    assert leftovers(run_id) == []
    assert nspawn_processes(run_id) == []
    assert all(not Path(f"/run/netns/{n}").exists() for n in netns), netns
    assert all(not Path(f"/sys/class/net/{v}").exists() for v in veths), veths


def test_close_removes_everything(fleet: Fleet) -> None:
    small = Fleet(fleet.base, fleet.repo)
    hosts = [small.new_host("cleanup-a"), small.new_host("cleanup-b")]
    hosts[1].stop()
    netns, veths = [h.netns for h in hosts], [h.veth for h in hosts]
    assert all(Path(f"/run/netns/{n}").exists() for n in netns)
    assert mounts_under(small.workdir)
    small.close()
    assert_nothing_left(small.run_id, netns, veths)


CRASHING_RUN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from harness.fleet import Fleet
fleet = Fleet.open()
host = fleet.new_host("crashy")
print(fleet.run_id, host.netns, host.veth, flush=True)
time.sleep(600)
"""


def test_crashed_run_is_reaped_at_next_start(fleet: Fleet) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_RUN, str(TESTS_DIR)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        run_id, netns, veth = line.split()
        assert nspawn_processes(run_id), "the crashing run's host is not running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up runs: as if it crashed
        proc.wait(10)
    assert leftovers(run_id), "a crashed run should leave its state behind"
    assert run_id in reap_stale_runs()
    assert_nothing_left(run_id, [netns], [veth])
