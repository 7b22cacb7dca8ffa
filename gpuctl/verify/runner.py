"""Verify hosts (or a bare URL): host checks over SSH, then the engine's API through a tunnel when it
listens on loopback. Expectations (port, served name, version, key, models) come from the spec."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from gpuctl import releases
from gpuctl.access import Engine, EngineAccess, client_access
from gpuctl.detect import detect
from gpuctl.errors import GpuctlError
from gpuctl.keystore import Keystore
from gpuctl.parallel import per_host
from gpuctl.spec import HostSpec, OllamaSpec, VllmSpec
from gpuctl.verify.checks import Check, unreachable
from gpuctl.verify.containers import container_status
from gpuctl.verify.gateway import gateway_checks
from gpuctl.verify.host_checks import engine_host_checks, journal
from gpuctl.verify.ollama_api import OllamaChecker, OllamaExpectations
from gpuctl.verify.openai_api import VllmChecker, VllmExpectations
from gpuctl.verify.remote import Remote

Progress = Callable[[str, str], None]
POLL_S = 3.0
OLLAMA_MIN_GENERATION_S = 60.0
"""Ollama loads a model on its first request: its first token may take this long whatever --gen-timeout says."""


@dataclass
class EngineReport:
    """Every check of one engine on one host."""

    host: str
    engine: str
    url: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "engine": self.engine,
            "url": self.url,
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass
class Options:
    wait_s: float = 0.0
    generation_timeout_s: float = 30.0
    base_dir: Path = Path(".")
    keystore: Keystore | None = None
    """The inventory's generated gateway keys and CA (needed for hosts with a gateway)."""


def verify_hosts(hosts: list[HostSpec], options: Options, progress: Progress | None = None) -> list[EngineReport]:
    """Verify HOSTS in parallel; reports in inventory order."""
    return per_host(hosts, lambda h: verify_host(h, options, progress))


def verify_host(host: HostSpec, options: Options, progress: Progress | None = None) -> list[EngineReport]:
    remote = Remote(host)
    if not host.local:
        reach = remote.reachable()
        if not reach.ok:
            unreachable = Check("ssh", False, f"unreachable: {reach.stderr.strip()[:200]}")
            return [EngineReport(host.name, "host", None, [unreachable])]
    if not host.engines():
        return [EngineReport(host.name, "host", None, [Check("engines", True, "no engine in the spec")])]
    return [verify_engine(remote, host, engine, options, progress) for engine in host.engines()]


def verify_engine(
    remote: Remote, host: HostSpec, engine: Engine, options: Options, progress: Progress | None
) -> EngineReport:
    """One engine: the cold-start wait (on the engine itself), host checks, the gateway's, then the API
    as clients reach it (through the gateway when the host has one)."""
    try:
        client = client_access(host, engine, keystore=options.keystore, base_dir=options.base_dir, remote=remote)
    except GpuctlError as exc:
        return EngineReport(host.name, engine.label, None, [Check("gateway key", False, str(exc))])
    # The cold-start wait asks the engine itself (its /health), through a tunnel when it is on loopback.
    own = client_access(host, engine, keystore=None, base_dir=options.base_dir, remote=remote, direct=True)
    try:
        with own.open() as direct_url, client.open() as base_url:
            report = EngineReport(host.name, engine.label, base_url)
            if options.wait_s > 0:

                def say(message: str) -> None:
                    if progress:
                        progress(host.name, f"{engine.label}: {message}")

                failure = wait_ready(remote, engine, direct_url, options.wait_s, say)
                if failure is not None:
                    report.checks.append(failure)
            report.checks += engine_host_checks(remote, host, engine)
            if client.gateway is not None:
                allow_admin = bool(host.gateway and host.gateway.allow_ollama_admin)
                report.checks += gateway_checks(client.gateway, engine, allow_admin)
            report.checks += api_checks(engine, base_url, options, client)
            explain_failures(remote, engine, report.checks)
            releases.mark(remote, engine, report.ok)  # gpuctl history / rollback read it
    except ConnectionError as exc:
        report = EngineReport(host.name, engine.label, None, [Check("tunnel", False, str(exc))])
    return report


def explain_failures(remote: Remote, engine: Engine, checks: list[Check]) -> None:
    """Give the first failed check the engine's last log lines, unless a check already carries some."""
    if any(c.details for c in checks):
        return
    failed = next((c for c in checks if not c.ok), None)
    if failed is None:
        return
    if isinstance(engine, VllmSpec):
        failed.details = remote.run(f"docker logs --tail 20 {engine.project} 2>&1").stdout.splitlines()[-20:]
    else:
        failed.details = journal(remote, engine)


def api_checks(engine: Engine, base_url: str, options: Options, client: EngineAccess) -> list[Check]:
    """The engine's API checks at BASE_URL, with the key and TLS trust CLIENT says."""
    session = client.gateway.session() if client.gateway is not None else None
    if isinstance(engine, VllmSpec):
        expect = VllmExpectations(
            base_url=base_url,
            model=engine.served_name,
            api_key=client.api_key,
            version=engine.expected_version(),
            max_model_len=engine.max_model_len,
            key_required=client.key_required,
            generation_timeout_s=options.generation_timeout_s,
        )
        return VllmChecker(expect, session).run()
    return OllamaChecker(
        OllamaExpectations(
            base_url=base_url,
            version=engine.version,
            models=engine.models,
            aliases=engine.aliases,
            keep_alive=engine.keep_alive,
            generation_timeout_s=max(options.generation_timeout_s, OLLAMA_MIN_GENERATION_S),
        ),
        session,
    ).run()


def verify_url(
    url: str, engine: str | None, model: str | None, api_key: str | None, expect_version: str | None, options: Options
) -> EngineReport:
    """Verify a bare URL. The engine (vLLM or Ollama) and the model are asked from the server unless ENGINE
    and MODEL say them (gpuctl.detect)."""
    served = detect(url, api_key, engine)  # type: ignore[arg-type]
    if served.engine == "openai":
        raise GpuctlError(
            f"{url} answers neither /version (vLLM) nor /api/version (Ollama): pass --engine vllm or --engine ollama"
        )
    engine = served.engine
    if engine == "vllm" or model is not None or len(served.models) == 1:
        model = served.pick(model, url)  # Ollama with several models and no --model: all are checked
    report = EngineReport(url, engine, url)
    if engine == "vllm":
        assert model is not None
        expect = VllmExpectations(
            base_url=url,
            model=model,
            api_key=api_key,
            version=expect_version,
            key_required=api_key is not None,
            generation_timeout_s=options.generation_timeout_s,
        )
        report.checks = VllmChecker(expect).run()
        return report
    expect_ollama = OllamaExpectations(
        base_url=url,
        version=expect_version,
        models=[model] if model else [],
        generation_timeout_s=max(options.generation_timeout_s, OLLAMA_MIN_GENERATION_S),
    )
    report.checks = OllamaChecker(expect_ollama).run()
    return report


def deploy_hint(target: str, inv: Any, reports: list[EngineReport]) -> str | None:
    """When nothing answered at all: the deploy command that would bring TARGET up."""
    if not any(unreachable(c) for r in reports for c in r.checks):
        return None
    limit = f" --limit {target}" if target in inv.hosts else ""
    return f"nothing answered; to deploy it: gpuctl deploy {inv.label}{limit}"


def wait_ready(
    remote: Remote, engine: VllmSpec | OllamaSpec, base_url: str, wait_s: float, say: Callable[[str], Any]
) -> Check | None:
    """Poll until the engine answers, giving up early when its unit failed or its container exited."""
    path = "/health" if isinstance(engine, VllmSpec) else "/api/version"
    started = time.monotonic()
    for _ in range(int(wait_s / POLL_S) + 2):
        elapsed = time.monotonic() - started
        shown = remote.run(f"{engine.systemctl} show -p ActiveState -p SubState -p NRestarts {engine.unit_name}").stdout
        props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        unit = props.get("ActiveState", "unknown")
        answered = False
        with contextlib.suppress(requests.RequestException):
            answered = requests.get(base_url + path, timeout=3).status_code == 200
        if answered and unit == "active":  # the unit leaves "activating" once the healthcheck passed
            say(f"ready after {elapsed:.0f} s")
            return None
        state = unit
        if unit == "failed" or props.get("SubState") == "auto-restart":
            # Failed, or failed and waiting to be restarted by systemd: a cold start does neither.
            what = (
                "failed" if unit == "failed" else f"failed and is restarting (restarts: {props.get('NRestarts', '?')})"
            )
            return Check(
                "wait",
                False,
                f"{engine.unit_name} {what} after {elapsed:.0f} s",
                details=journal(remote, engine),
            )
        if isinstance(engine, VllmSpec):
            container = container_status(remote, engine.project)
            state += f", container {container}"
            if container in ("exited", "dead") and unit != "activating":
                logs = remote.run(f"docker logs --tail 20 {engine.project} 2>&1").stdout.splitlines()
                return Check(
                    "wait", False, f"container {engine.project} {container} after {elapsed:.0f} s", details=logs
                )
        if elapsed >= wait_s:
            break
        say(f"waiting for {path} ({elapsed:.0f}/{wait_s:.0f} s; unit {state})")
        time.sleep(POLL_S)
    return Check("wait", False, f"not ready after {wait_s:.0f} s ({path} did not answer 200)")
