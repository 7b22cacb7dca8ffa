"""Rolling, verified deploys: `gpuctl deploy --rolling N|N%`, `--verify`, and groups with a `Rollout(...)`.

A deploy becomes a rollout of phases (`plan`): `--rolling` makes every host one phase; without it, the hosts
sharing a Rollout setting form one phase each (in inventory order), and the hosts without one a last phase,
deployed all at once (verified only with `--verify`). A phase changes its hosts in batches. Per batch: the
live release of every engine is read (gpuctl.releases); the batch is deployed (hosts in parallel, as a plain
deploy); every host that deployed is verified the way `gpuctl verify` is (with its cold-start wait); a host
whose deploy or verify failed has its engines returned to the release they ran before (not restarted when
they still run it: a preflight stops a deploy before anything is replaced) and verified again. Once a phase
has more failed hosts than its max_failed, the rollout stops: later batches and phases are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuctl import fleet, releases
from gpuctl.drain import drained
from gpuctl.errors import GpuctlError, InventoryError
from gpuctl.keystore import Keystore
from gpuctl.parallel import per_host
from gpuctl.rollback import RollbackOutcome, rollback_host
from gpuctl.spec import HostSpec, RolloutSpec
from gpuctl.verify import runner
from gpuctl.verify.remote import Remote


@dataclass
class Phase:
    """Hosts changed SIZE at a time, stopping once more than MAX_FAILED of them failed."""

    hosts: list[HostSpec]
    size: int
    max_failed: int
    verify: bool
    why: str
    """Where the phase comes from: "--rolling 2", "Rollout(batch=1, max_failed=0)", "all at once"."""

    def batches(self) -> list[list[HostSpec]]:
        return [self.hosts[i : i + self.size] for i in range(0, len(self.hosts), self.size)]

    def as_dict(self) -> dict[str, Any]:
        batches = [[h.name for h in b] for b in self.batches()]
        return {"why": self.why, "batches": batches, "max_failed": self.max_failed, "verify": self.verify}


def rolling_setting(text: str, max_failed: int | None = None) -> RolloutSpec:
    """`--rolling N|N%` (and `--max-failed`) as a Rollout setting; a clear error when it is not one."""
    try:
        return RolloutSpec(batch=text, max_failed=max_failed or 0)
    except ValueError:
        raise InventoryError([f"--rolling {text}: give a number of hosts (2) or a share of them (25%)"]) from None


def plan(hosts: list[HostSpec], rolling: str | None, max_failed: int | None, verify: bool) -> list[Phase] | None:
    """The phases of a deploy, or None for a plain one (no --rolling, no --verify, no Rollout setting)."""
    if rolling is not None:
        setting = rolling_setting(rolling, max_failed)
        return [Phase(hosts, setting.size(len(hosts)), setting.max_failed, True, f"--rolling {rolling}")]
    groups: dict[str, list[HostSpec]] = {}
    for host in (h for h in hosts if h.rollout is not None):
        groups.setdefault(host.rollout.model_dump_json(), []).append(host)  # type: ignore[union-attr]
    if not groups and not verify:
        return None
    phases = []
    for members in groups.values():
        setting = members[0].rollout
        assert setting is not None
        limit = setting.max_failed if max_failed is None else max_failed
        phases.append(Phase(members, setting.size(len(members)), limit, True, setting.describe()))
    rest = [h for h in hosts if h.rollout is None]
    if rest:
        phases.append(Phase(rest, len(rest), len(rest), verify, "all at once"))
    return phases


@dataclass
class BatchResult:
    hosts: list[str]
    outcomes: list[fleet.HostOutcome] = field(default_factory=list)
    reports: list[runner.EngineReport] = field(default_factory=list)
    rollbacks: list[RollbackOutcome] = field(default_factory=list)

    @property
    def failed_hosts(self) -> list[str]:
        failed = {o.name for o in self.outcomes if o.status == "failed"} | {r.host for r in self.reports if not r.ok}
        return [h for h in self.hosts if h in failed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "hosts": self.hosts,
            "failed_hosts": self.failed_hosts,
            "deploy": [o.as_dict() for o in self.outcomes],
            "verify": [r.as_dict() for r in self.reports],
            "rollbacks": [r.as_dict() for r in self.rollbacks],
        }


@dataclass
class Rollout:
    phases: list[Phase]
    batches: list[BatchResult] = field(default_factory=list)
    stopped: str | None = None
    """Why the rollout stopped before its end (None when it went through)."""

    @property
    def planned(self) -> list[list[str]]:
        return [[h.name for h in batch] for phase in self.phases for batch in phase.batches()]

    @property
    def failed_hosts(self) -> list[str]:
        return [h for b in self.batches for h in b.failed_hosts]

    @property
    def ok(self) -> bool:
        return not self.failed_hosts

    @property
    def untouched(self) -> list[str]:
        done = {h for b in self.batches for h in b.hosts}
        return [h for batch in self.planned for h in batch if h not in done]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "phases": [p.as_dict() for p in self.phases],
            "planned": self.planned,
            "batches": [b.as_dict() for b in self.batches],
            "failed_hosts": self.failed_hosts,
            "stopped": self.stopped,
            "untouched": self.untouched,
        }


def live_releases(hosts: list[HostSpec]) -> dict[tuple[str, str], str | None]:
    """(host, engine label) → the id of the release each engine runs now (None: none recorded)."""

    def of_host(host: HostSpec) -> list[tuple[tuple[str, str], str | None]]:
        remote = Remote(host)
        found = []
        for engine in host.engines():
            try:
                live = next((r.id for r in releases.list_releases(remote, engine) if r.current), None)
            except GpuctlError:
                live = None
            found.append(((host.name, engine.label), live))
        return found

    return dict(per_host(hosts, of_host))


def back_to(before: dict[tuple[str, str], str | None], host: HostSpec):  # noqa: ANN201 - a rollback.Chooser
    """The chooser that returns each engine of HOST to the release it ran before the batch."""

    def choose(engine: releases.Engine, recorded: list[releases.Release]) -> releases.Release:
        wanted = before.get((host.name, engine.label))
        if wanted is None:
            # No release matched the engine before the batch (deployed before releases were recorded, or
            # edited by hand): the deploy kept its running files as a release before changing them.
            adopted = [r for r in recorded if r.spec_sha256 == releases.AS_FOUND]
            if not adopted:
                raise GpuctlError("no release was recorded before this deploy: nothing to roll back to")
            return adopted[-1]
        return releases.rollback_target(recorded, wanted)

    return choose


def roll_back_failed(
    host: HostSpec, result: BatchResult, before: dict[tuple[str, str], str | None], options: runner.Options
) -> list[RollbackOutcome]:
    """HOST's engines back to what they ran before: all of them when its deploy failed, else those whose
    verify failed."""
    deploy_failed = any(o.name == host.name and o.status == "failed" for o in result.outcomes)
    failed = {r.engine for r in result.reports if r.host == host.name and not r.ok}
    return rollback_host(host, back_to(before, host), options, only=None if deploy_failed else failed)


def run_batch(
    batch: list[HostSpec],
    verify: bool,
    base_dir: Path,
    options: runner.Options,
    hosts: dict[str, HostSpec] | None = None,
    **deploy_args: Any,
) -> BatchResult:
    """Deploy BATCH; with VERIFY, verify it and roll its failed hosts back. Throughout, BATCH's hosts are
    drained from the fleet endpoints of HOSTS (the inventory's) that they serve behind (gpuctl.drain)."""
    with drained(batch, hosts or {}, deploy_args.get("progress")) as draining:
        return deploy_batch(batch, verify, base_dir, options, draining=draining, **deploy_args)


def deploy_batch(
    batch: list[HostSpec], verify: bool, base_dir: Path, options: runner.Options, **deploy_args: Any
) -> BatchResult:
    """run_batch's work, once its hosts are drained."""
    result = BatchResult([h.name for h in batch])
    before = live_releases(batch) if verify else {}
    result.outcomes = fleet.deploy(batch, base_dir, **deploy_args)
    if not verify:
        return result
    deployed = [h for h in batch if h.name not in {o.name for o in result.outcomes if o.status == "failed"}]
    result.reports = runner.verify_hosts(deployed, options, deploy_args.get("progress")) if deployed else []
    failed = [h for h in batch if h.name in result.failed_hosts]
    result.rollbacks = per_host(failed, lambda host: roll_back_failed(host, result, before, options)) if failed else []
    return result


def roll_out(
    phases: list[Phase],
    base_dir: Path,
    options: runner.Options,
    *,
    keystore: Keystore | None = None,
    progress: fleet.Progress | None = None,
    hosts: dict[str, HostSpec] | None = None,
) -> Rollout:
    """Deploy each phase in its batches, verifying each batch and rolling its failed hosts back; stop once a
    phase has more failed hosts than its max_failed. HOSTS: the inventory's, for the endpoints to drain."""
    rollout = Rollout(phases)
    for phase in phases:
        failed = 0
        for batch in phase.batches():
            result = run_batch(batch, phase.verify, base_dir, options, hosts, keystore=keystore, progress=progress)
            rollout.batches.append(result)
            failed += len(result.failed_hosts)
            if failed > phase.max_failed:
                rollout.stopped = (
                    f"{failed} failed host(s) in {phase.why}: more than max_failed={phase.max_failed}"
                    if phase.max_failed
                    else f"a host failed in {phase.why}"
                )
                return rollout
    return rollout
