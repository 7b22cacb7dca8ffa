"""pytest fixtures for the systemd-nspawn test fleet (see ``harness.fleet``).

* ``fleet`` (session): the run's ``Fleet``; ``fleet.host("web")`` boots lazily and is reused,
  ``fleet.new_host("x")`` is always fresh. Everything is removed at the end of the session.
* ``fresh_host`` (function): a pristine host for one test, destroyed after it.

Without root, ``debootstrap`` or ``systemd-nspawn`` the fixtures skip, unless the environment
variable ``CI`` is set: then they fail, so a CI machine that lost a prerequisite is noticed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from harness.fleet import Fleet, Host, missing_prerequisites


def _require_prerequisites() -> None:
    """Skip (or fail under CI) when this machine cannot run the fleet."""
    missing = missing_prerequisites()
    if not missing:
        return
    reason = "test fleet unavailable: " + "; ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set, so this is an error)", pytrace=False)
    pytest.skip(reason)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_runs_teardown() -> Iterator[None]:
    """Turn SIGTERM (e.g. a CI timeout) into KeyboardInterrupt, so fixture teardown still runs.

    Only when nobody else handles SIGTERM and only in the main thread; restored afterwards.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    """The session's fleet of Debian bookworm hosts booted with systemd-nspawn."""
    _require_prerequisites()
    with _sigterm_runs_teardown():
        the_fleet = Fleet.open()
        try:
            yield the_fleet
        finally:
            the_fleet.close()


@pytest.fixture
def fresh_host(fleet: Fleet, request: pytest.FixtureRequest) -> Iterator[Host]:
    """A pristine host named after the test, destroyed when the test ends."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:20]
    host = fleet.new_host(name.strip("-") or "t")
    try:
        yield host
    finally:
        host.destroy()
