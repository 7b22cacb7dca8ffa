"""Reaching engines through the host's gateway, as clients do: https://HOST/v1 with the bearer key,
the TLS chain checked against the CA gpuctl handed out (private CA) or the system's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from gpuctl.errors import GpuctlError
from gpuctl.keystore import Keystore
from gpuctl.spec import HostSpec, OllamaSpec, VllmSpec
from gpuctl.verify.checks import Check, run_check


@dataclass
class GatewayAccess:
    """How a client reaches one engine through the gateway."""

    base_url: str
    api_key: str
    verify: str | bool
    """requests' `verify`: the CA file to trust, or True for the system's CAs."""

    def session(self) -> requests.Session:
        """A session that trusts the right CA and sends the key on every request."""
        http = PinnedTrustSession()
        http.verify = self.verify
        http.headers["Authorization"] = f"Bearer {self.api_key}"
        return http


class PinnedTrustSession(requests.Session):
    """A session whose `verify` wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment
    (requests otherwise lets those replace a session's CA file)."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None:
            settings["verify"] = self.verify
        return settings


def gateway_access(
    host: HostSpec, engine: VllmSpec | OllamaSpec, keystore: Keystore | None, base_dir: Path
) -> GatewayAccess:
    """The URL, key and trust for ENGINE behind HOST's gateway (never creates a key)."""
    gateway = host.gateway
    assert gateway is not None
    if keystore is None:
        raise GpuctlError(f"{host.name}: the gateway's key and CA are in the inventory's keystore, and none is open")
    if gateway.api_key is not None:
        key = gateway.api_key.resolve(base_dir)
    else:
        found = keystore.api_key(host.name)
        if found is None:
            raise GpuctlError(
                f"{host.name}: no gateway key in {keystore.path(keystore.api_key_name(host.name))} "
                "(gpuctl deploy creates it)"
            )
        key = found
    verify: str | bool = True
    if gateway.tls == "private-ca":
        verify = str(keystore.ca_path)
    elif gateway.tls == "provided" and gateway.ca_file:
        path = Path(gateway.ca_file).expanduser()
        verify = str(path if path.is_absolute() else base_dir / path)
    return GatewayAccess(host.gateway_url(engine), key, verify)


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
