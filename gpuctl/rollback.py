"""`gpuctl history` and `gpuctl rollback`: the releases recorded on each host (gpuctl.releases), and the
way back to one of them, verified."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gpuctl import releases
from gpuctl.errors import GpuctlError
from gpuctl.parallel import per_host
from gpuctl.spec import HostSpec
from gpuctl.verify import runner
from gpuctl.verify.remote import Remote


@dataclass
class HistoryRow:
    host: str
    engine: str
    releases: list[releases.Release] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "engine": self.engine,
            "releases": [r.as_dict() for r in self.releases],
            "error": self.error,
        }


def host_history(host: HostSpec) -> list[HistoryRow]:
    remote = Remote(host)
    rows = []
    for engine in host.engines():
        try:
            rows.append(HistoryRow(host.name, engine.label, releases.list_releases(remote, engine)))
        except GpuctlError as exc:
            rows.append(HistoryRow(host.name, engine.label, error=str(exc)))
    return rows


def fleet_history(hosts: list[HostSpec]) -> list[HistoryRow]:
    return per_host(hosts, host_history)


@dataclass
class RollbackOutcome:
    host: str
    engine: str
    from_release: str | None = None
    to_release: str | None = None
    restored: bool = False
    """False when the engine already ran TO_RELEASE (a deploy that stopped before replacing it)."""
    error: str | None = None
    verify: runner.EngineReport | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.verify is not None and self.verify.ok

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "verify"}
        data["ok"] = self.ok
        data["verify"] = self.verify.as_dict() if self.verify is not None else None
        return data


Chooser = Callable[[releases.Engine, list[releases.Release]], releases.Release]
"""Which recorded release an engine returns to."""


def named_or_previous(to: str | None) -> Chooser:
    """`gpuctl rollback [--to RELEASE]`: that release, else the newest verified one before the live one."""
    return lambda _engine, recorded: releases.rollback_target(recorded, to)


def rollback_host(
    host: HostSpec, choose: Chooser, options: runner.Options, only: set[str] | None = None
) -> list[RollbackOutcome]:
    """Each engine of HOST (or those labelled in ONLY) back to the release CHOOSE picks, restarted (unless it
    already runs it), then verified (which marks the restored release)."""
    remote = Remote(host)
    outcomes = []
    for engine in (e for e in host.engines() if only is None or e.label in only):
        outcome = RollbackOutcome(host.name, engine.label)
        outcomes.append(outcome)
        try:
            recorded = releases.list_releases(remote, engine)
            target = choose(engine, recorded)
        except GpuctlError as exc:
            outcome.error = str(exc)
            continue
        outcome.from_release = next((r.id for r in recorded if r.current), None)
        outcome.to_release = target.id
        if target.id != outcome.from_release:
            outcome.restored = True
            outcome.error = releases.restore(remote, engine, target)
        if outcome.error is None:
            outcome.verify = runner.verify_engine(remote, host, releases.engine_of(engine, target), options, None)
    return outcomes


def rollback(
    hosts: list[HostSpec], choose: Chooser, options: runner.Options, only: set[str] | None = None
) -> list[RollbackOutcome]:
    return per_host(hosts, lambda h: rollback_host(h, choose, options, only))
