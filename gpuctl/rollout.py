"""`gpuctl deploy --rolling N|N%` and `--verify`: change hosts in batches, verify each batch the way `gpuctl
verify` does (with its cold-start wait), and roll a failed host back to the release it ran before.

Per batch: the live release of every vLLM engine is read first (gpuctl.releases); the batch is deployed
(hosts in parallel, as a plain deploy); every host that deployed is verified; a host whose deploy or
verify failed has each engine returned to the release it ran before (not restarted when it still runs
it: a preflight stops a deploy before anything is replaced) and verified again. A batch with a failure
stops the rollout: later batches are not touched. `--verify` alone is one batch of every host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuctl import fleet, releases
from gpuctl.errors import GpuctlError, InventoryError
from gpuctl.keystore import Keystore
from gpuctl.parallel import per_host
from gpuctl.rollback import RollbackOutcome, rollback_host
from gpuctl.spec import HostSpec, VllmSpec
from gpuctl.verify import runner
from gpuctl.verify.remote import Remote


def batch_size(text: str, hosts: int) -> int:
    """--rolling N (hosts per batch) or N% (of the hosts deployed, rounded up): at least one host."""
    value = text.strip()
    try:
        number = float(value[:-1]) if value.endswith("%") else int(value)
    except ValueError:
        raise InventoryError([f"--rolling {text}: give a number of hosts (2) or a share of them (25%)"]) from None
    if number <= 0 or (value.endswith("%") and number > 100):
        raise InventoryError([f"--rolling {text}: must be more than 0 (and at most 100%)"])
    size = math.ceil(hosts * number / 100) if value.endswith("%") else int(number)
    return max(1, min(size, hosts))


def batches(hosts: list[HostSpec], size: int) -> list[list[HostSpec]]:
    return [hosts[i : i + size] for i in range(0, len(hosts), size)]


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
    planned: list[list[str]]
    batches: list[BatchResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(b.failed_hosts for b in self.batches)

    @property
    def untouched(self) -> list[str]:
        done = {h for b in self.batches for h in b.hosts}
        return [h for batch in self.planned for h in batch if h not in done]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "planned": self.planned,
            "batches": [b.as_dict() for b in self.batches],
            "untouched": self.untouched,
        }


def live_releases(hosts: list[HostSpec]) -> dict[tuple[str, str], str | None]:
    """(host, engine label) → the id of the release each vLLM engine runs now (None: none recorded)."""

    def of_host(host: HostSpec) -> list[tuple[tuple[str, str], str | None]]:
        remote = Remote(host)
        found = []
        for engine in host.vllm:
            try:
                live = next((r.id for r in releases.list_releases(remote, engine) if r.current), None)
            except GpuctlError:
                live = None
            found.append(((host.name, engine.label), live))
        return found

    return dict(per_host(hosts, of_host))


def back_to(before: dict[tuple[str, str], str | None], host: HostSpec):  # noqa: ANN201 - a rollback.Chooser
    """The chooser that returns each engine of HOST to the release it ran before the batch."""

    def choose(engine: VllmSpec, recorded: list[releases.Release]) -> releases.Release:
        wanted = before.get((host.name, engine.label))
        if wanted is None:
            raise GpuctlError("no release was recorded before this deploy: nothing to roll back to")
        return releases.rollback_target(recorded, wanted)

    return choose


def roll_back_failed(
    host: HostSpec, result: BatchResult, before: dict[tuple[str, str], str | None], options: runner.Options
) -> list[RollbackOutcome]:
    """HOST's vLLM engines back to what they ran before: all of them when its deploy failed, else those whose
    verify failed. A failed Ollama is said to stay as it is (gpuctl keeps one Ollama release for now)."""
    deploy_failed = any(o.name == host.name and o.status == "failed" for o in result.outcomes)
    failed = {r.engine for r in result.reports if r.host == host.name and not r.ok}
    outcomes = []
    vllm = None if deploy_failed else failed & {e.label for e in host.vllm}
    if vllm is None or vllm:
        outcomes += rollback_host(host, back_to(before, host), options, only=vllm)
    if host.ollama is not None and host.ollama.label in failed:
        outcomes.append(
            RollbackOutcome(
                host.name,
                host.ollama.label,
                error="not rolled back: gpuctl keeps one Ollama release for now; pin the previous version and deploy",
            )
        )
    return outcomes


def roll_out(
    hosts: list[HostSpec],
    base_dir: Path,
    size: int,
    options: runner.Options,
    *,
    keystore: Keystore | None = None,
    progress: fleet.Progress | None = None,
) -> Rollout:
    """Deploy HOSTS in batches of SIZE, verifying each batch and rolling its failed hosts back; stop at the
    first batch with a failure."""
    rollout = Rollout([[h.name for h in batch] for batch in batches(hosts, size)])
    for batch in batches(hosts, size):
        result = BatchResult([h.name for h in batch])
        rollout.batches.append(result)
        before = live_releases(batch)
        result.outcomes = fleet.deploy(batch, base_dir, progress=progress, keystore=keystore)
        deployed = [h for h in batch if h.name not in {o.name for o in result.outcomes if o.status == "failed"}]
        result.reports = runner.verify_hosts(deployed, options, progress) if deployed else []
        for host in (h for h in batch if h.name in result.failed_hosts):
            result.rollbacks += roll_back_failed(host, result, before, options)
        if result.failed_hosts:
            break
    return rollout
