"""Verify a fleet endpoint as its clients use it (gpuctl.endpoints): its one model listed, a chat and a
stream through it, its key enforced; then each host behind it, as `gpuctl verify HOST` does, so a host that
is down is named while the endpoint still answers through the others."""

from __future__ import annotations

from gpuctl.access import endpoint_access
from gpuctl.errors import GpuctlError
from gpuctl.inventory import Inventory
from gpuctl.keystore import Keystore
from gpuctl.spec import EndpointSpec
from gpuctl.verify.checks import Check, run_check, unreachable
from gpuctl.verify.openai_api import VllmChecker, VllmExpectations
from gpuctl.verify.runner import EngineReport, Options, Progress, verify_hosts


class EndpointChecker(VllmChecker):
    """The OpenAI checks that hold for any engine behind an endpoint (no /health, /version or /metrics)."""

    def run(self) -> list[Check]:
        checks = [run_check("models", self.models)]
        if unreachable(checks[0]):
            return checks
        checks += [run_check(name, func) for name, func in (("chat", self.chat), ("stream", self.stream))]
        checks.append(run_check("auth", self.auth))
        return checks

    def models(self) -> Check:
        check = super().models()
        if check.ok:
            check.reason = f"{self.expect.model} listed (the endpoint's model)"
        return check

    def _not_generating(self, what: str) -> Check:
        return Check(what, False, f"not generating: no token within {self.expect.generation_timeout_s:g} s")


def verify_endpoint(
    inv: Inventory, endpoint: EndpointSpec, options: Options, progress: Progress | None = None
) -> list[EngineReport]:
    """The endpoint's report, then one per engine of the hosts behind it."""
    members = [inv.hosts[name] for name in endpoint.hosts]
    return [endpoint_report(inv, endpoint, options), *verify_hosts(members, options, progress)]


def endpoint_report(inv: Inventory, endpoint: EndpointSpec, options: Options) -> EngineReport:
    """The endpoint's own checks, as its clients reach it."""
    front = inv.hosts[endpoint.on]
    keystore = options.keystore or Keystore.for_inventory(inv.path, write=False)
    label = f"endpoint {endpoint.name}"
    try:
        access = endpoint_access(front, endpoint, keystore, inv.base_dir)
    except GpuctlError as exc:
        report = EngineReport(front.name, label, endpoint.url(front), [Check("endpoint key", False, str(exc))])
    else:
        expect = VllmExpectations(
            base_url=access.base_url,
            model=endpoint.model,
            api_key=access.api_key,
            key_required=True,
            generation_timeout_s=options.generation_timeout_s,
        )
        checks = EndpointChecker(expect, access.session()).run()
        report = EngineReport(front.name, label, access.base_url, checks)
    return report
