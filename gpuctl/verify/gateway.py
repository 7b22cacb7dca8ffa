"""The gateway's own promises, checked as clients see them: https://HOST/v1 with the bearer key, the TLS
chain against the CA gpuctl handed out (private CA) or the system's. How to reach it: gpuctl.access."""

from __future__ import annotations

from gpuctl.access import GatewayAccess
from gpuctl.spec import OllamaSpec, VllmSpec
from gpuctl.verify.checks import Check, run_check


def gateway_checks(access: GatewayAccess, engine: VllmSpec | OllamaSpec, allow_admin: bool) -> list[Check]:
    """The gateway's own promises: TLS verifies, no route answers without the key, admin routes refused."""
    http = access.session()
    routes = ["/v1/models", "/metrics"] + (["/api/tags", "/api/pull"] if isinstance(engine, OllamaSpec) else [])

    def tls() -> Check:
        response = http.get(access.base_url + "/v1/models", timeout=10)
        return Check(
            "gateway tls",
            True,
            f"certificate verified ({_trust(access)}); GET /v1/models with the key answered {response.status_code}",
        )

    def without_key() -> Check:
        answers = {}
        for route in routes:
            method = "POST" if route == "/api/pull" else "GET"
            response = http.request(
                method,
                access.base_url + route,
                headers={"Authorization": None},
                timeout=10,
                json={"model": "gpuctl-verify-probe"} if method == "POST" else None,
            )
            answers[route] = response.status_code
        wrong = {route: code for route, code in answers.items() if code != 401}
        if wrong:
            shown = ", ".join(f"{r} {c}" for r, c in wrong.items())
            return Check("gateway auth", False, f"without the key these did not answer 401: {shown}")
        return Check("gateway auth", True, f"without the key every route tried answers 401 ({', '.join(routes)})")

    def admin() -> Check:
        response = http.post(
            access.base_url + "/api/pull", json={"model": "gpuctl-verify-probe", "stream": False}, timeout=10
        )
        if allow_admin:
            return Check(
                "gateway admin", True, f"admin routes allowed by the inventory (/api/pull: {response.status_code})"
            )
        ok = response.status_code == 403
        return Check(
            "gateway admin",
            ok,
            "with the key, /api/pull is refused (403)"
            if ok
            else f"with the key, /api/pull answered {response.status_code}, not 403",
        )

    checks = [run_check("gateway tls", tls)]
    if not checks[0].ok:
        return checks
    checks.append(run_check("gateway auth", without_key))
    if isinstance(engine, OllamaSpec):
        checks.append(run_check("gateway admin", admin))
    return checks


def _trust(access: GatewayAccess) -> str:
    return f"against {access.verify}" if isinstance(access.verify, str) else "against the system's CAs"
