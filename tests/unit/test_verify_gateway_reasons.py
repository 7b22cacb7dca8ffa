"""What verify's gateway checks SAY (gpuctl/verify/gateway.py), read word for word.

A PURPOSE-BUILT HTTPS server on 127.0.0.1 stands where a host's gateway would be: its certificate is
issued by gpuctl's own keystore CA (the private-CA path, real TLS verification), and it answers like a
correct gateway or like a broken one (a route open without the key, admin routes allowed). The real
nginx gateway is verified on the fleet (tests/deploy/test_deploy_gateway.py); this reads every text.
Also the runner's reasons that need no SSH: a host with no engine, a gateway whose key is missing.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuctl.access import GatewayAccess, gateway_access
from gpuctl.errors import GpuctlError
from gpuctl.keystore import Keystore
from gpuctl.spec import GatewaySpec, HostSpec, OllamaSpec
from gpuctl.verify.gateway import gateway_checks
from harness import local_http

KEY = "sk-gateway-0123456789abcdefghij"
OLLAMA = OllamaSpec(version="0.40.2", cpu_fallback=True)


@contextlib.contextmanager
def tls_gateway(tmp_path: Path, *, open_route: str | None = None, pull_status: int = 403) -> Iterator[GatewayAccess]:
    """An HTTPS server with a certificate from a keystore CA: 401 without KEY on every route, except
    OPEN_ROUTE (200 to anyone); POST /api/pull with the key answers PULL_STATUS."""
    keystore = Keystore.for_inventory(tmp_path / "inv.py")
    cert = keystore.server_cert("gw", ["127.0.0.1"])
    (tmp_path / "chain.pem").write_text(cert.chain_pem)
    (tmp_path / "key.pem").write_text(cert.key_pem)

    def respond(method: str, path: str, headers: object) -> tuple[int, str, bytes]:
        authorized = headers.get("Authorization") == f"Bearer {KEY}"  # type: ignore[attr-defined]
        if path == open_route:
            status = 200
        elif not authorized:
            status = 401
        else:
            status = pull_status if path == "/api/pull" else 200
        return status, "application/json", json.dumps({"status": status}).encode()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    with local_http.serve(respond, context) as url:
        yield GatewayAccess(url, KEY, str(keystore.ca_path))


def reasons(access: GatewayAccess, allow_admin: bool = False) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.reason) for c in gateway_checks(access, OLLAMA, allow_admin)}


def test_a_correct_gateway_says_what_it_proved(tmp_path):
    with tls_gateway(tmp_path) as access:
        said = reasons(access)
    assert said == {
        "gateway tls": (
            True,
            f"certificate verified (against {access.verify}); GET /v1/models with the key answered 200",
        ),
        "gateway auth": (
            True,
            "without the key every route tried answers 401 (/v1/models, /metrics, /api/tags, /api/pull)",
        ),
        "gateway admin": (True, "with the key, /api/pull is refused (403)"),
    }


def test_a_route_open_without_the_key_is_named_with_its_status(tmp_path):
    with tls_gateway(tmp_path, open_route="/metrics") as access:
        said = reasons(access)
    assert said["gateway auth"] == (False, "without the key these did not answer 401: /metrics 200")


def test_admin_routes_allowed_or_not_refused(tmp_path):
    with tls_gateway(tmp_path, pull_status=200) as access:
        refused = reasons(access)["gateway admin"]
        allowed = reasons(access, allow_admin=True)["gateway admin"]
    assert refused == (False, "with the key, /api/pull answered 200, not 403")
    assert allowed == (True, "admin routes allowed by the inventory (/api/pull: 200)")


def test_a_certificate_from_another_ca_is_a_tls_failure(tmp_path):
    other = Keystore.for_inventory(tmp_path / "other" / "inv.py")
    other.ca()
    with tls_gateway(tmp_path) as access:
        wrong = GatewayAccess(access.base_url, KEY, str(other.ca_path))
        said = reasons(wrong)
    ok, reason = said["gateway tls"]
    assert not ok and reason.startswith(
        f"TLS with {access.base_url.removeprefix('https://')} failed ([SSL: CERTIFICATE_VERIFY_FAILED]"
    )


def test_a_missing_keystore_or_key_is_said_in_one_line(tmp_path):
    host = HostSpec(name="gw", address="10.0.0.9", ollama=OLLAMA, gateway=GatewaySpec())
    with pytest.raises(GpuctlError) as none_open:
        gateway_access(host, OLLAMA, None, tmp_path)
    assert str(none_open.value) == "gw: the gateway's key and CA are in the inventory's keystore, and none is open"
    keystore = Keystore.for_inventory(tmp_path / "inv.py", write=False)
    with pytest.raises(GpuctlError) as no_key:
        gateway_access(host, OLLAMA, keystore, tmp_path)
    assert (
        str(no_key.value)
        == f"gw: no gateway key in {keystore.path(keystore.api_key_name('gw'))} (gpuctl deploy creates it)"
    )
