"""`tls="acme"` on a real fleet host: certbot gets the gateway's certificate over http-01 from a real
ACME server, and a second deploy changes nothing.

Stand-ins, named: the ACME server is Pebble (Let's Encrypt's test server, Debian's `pebble` package)
running on the host itself, because Let's Encrypt is not reachable from here; the domain `llm.test`
resolves to the host through its /etc/hosts. Pebble validates the challenge for real: it fetches
http://llm.test/.well-known/acme-challenge/… from the gateway's nginx on port 80. The engine is the
Ollama STAND-IN from the local release mirror. Real: certbot, nginx, nftables, systemd, SSH, TLS.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from gpuctl.keystore import Keystore
from harness import mirror
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

DOMAIN = "llm.test"
PEBBLE_DIR = "/etc/pebble"
OLLAMA_VERSION = "0.13.0"


def start_pebble(host: Host, tmp_path: Path, domain: str = DOMAIN) -> None:
    """Pebble on the host's loopback, with a TLS certificate from a throwaway CA the host's certbot trusts."""
    host.run("apt-get update -q", timeout=120)
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble", timeout=300)
    tls = Keystore(tmp_path / "pebble-ca").server_cert("pebble", ["localhost", "127.0.0.1"])
    host.write_file(f"{PEBBLE_DIR}/cert.pem", tls.chain_pem)
    host.write_file(f"{PEBBLE_DIR}/key.pem", tls.key_pem, mode=0o600)
    host.write_file(f"{PEBBLE_DIR}/ca.pem", (tmp_path / "pebble-ca" / "ca.pem").read_text())
    config = {
        "pebble": {
            "listenAddress": "127.0.0.1:14000",
            "managementListenAddress": "127.0.0.1:15000",
            "certificate": f"{PEBBLE_DIR}/cert.pem",
            "privateKey": f"{PEBBLE_DIR}/key.pem",
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    host.write_file(f"{PEBBLE_DIR}/config.json", json.dumps(config))
    host.run(f"echo '{host.address} {domain}' >> /etc/hosts")
    host.run(
        "systemd-run --unit=pebble -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 "
        f"/usr/bin/pebble -config {PEBBLE_DIR}/config.json"
    )
    host.run(
        f"timeout 20 sh -c 'until curl -fsS --cacert {PEBBLE_DIR}/ca.pem https://127.0.0.1:14000/dir "
        ">/dev/null; do sleep 0.2; done'"
    )


ACME = 'acme_server="https://127.0.0.1:14000/dir", acme_ca_bundle="' + PEBBLE_DIR + '/ca.pem"'
"""Pebble on the host's loopback, with the CA certbot trusts for it."""


def write_inventory(path: Path, host: Host, gateway: str, endpoint: str = "") -> Path:
    """One host with Ollama (the stand-in from the mirror) and GATEWAY; ENDPOINT: more inventory lines."""
    path.write_text(
        "from gpuctl.inventory import Endpoint, Gateway, Host, Ollama\n"
        f"edge = [Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r}, "
        f"ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking='yes', "
        f"ollama=Ollama(version={OLLAMA_VERSION!r}, cpu_fallback=True, release_url={mirror.MIRROR_URL!r}, "
        f"models=['qwen2.5:0.5b']), gateway={gateway})]\n{endpoint}\n"
    )
    return path


def gpuctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gpuctl", *args], capture_output=True, text=True, timeout=600)


def https_get(address: str, path: str, key: str, root_pem: str, domain: str = DOMAIN) -> tuple[str, str]:
    """GET PATH over TLS with SNI and hostname check for DOMAIN, trusting only ROOT_PEM; (status line, issuer)."""
    context = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection((address, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=domain) as tls:
            issuer = dict(x[0] for x in tls.getpeercert()["issuer"]).get("commonName", "")
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {domain}\r\nAuthorization: Bearer {key}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            status = tls.recv(4096).decode(errors="replace").splitlines()[0]
    return status, issuer


@pytest.fixture(scope="module")
def acme_host(fleet: Fleet, tmp_path_factory) -> Host:
    host = fleet.new_host("acme")
    mirror.serve(host)
    mirror.publish(host, OLLAMA_VERSION)
    start_pebble(host, tmp_path_factory.mktemp("pebble"))
    return host


def test_acme_certificate_from_http_01_then_a_no_op_redeploy(acme_host, tmp_path):
    gateway = f'Gateway(tls="acme", domain={DOMAIN!r}, acme_email="ops@llm.test", {ACME})'
    inventory = write_inventory(tmp_path / "edge.py", acme_host, gateway)
    first = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    [outcome] = json.loads(first.stdout)["hosts"]
    assert any(c.endswith(f"ACME certificate for {DOMAIN} (certbot, http-01)") for c in outcome["changes"])
    key = (tmp_path / ".gpuctl" / "edge" / f"{acme_host.name}.api-key").read_text().strip()
    root = acme_host.run(f"curl -fsS --cacert {PEBBLE_DIR}/ca.pem https://127.0.0.1:15000/roots/0").stdout
    status, issuer = https_get(acme_host.address, "/v1/models", key, root)
    assert status == "HTTP/1.1 200 OK"
    assert issuer.startswith("Pebble Intermediate CA"), issuer
    assert (
        https_get(acme_host.address, "/v1/models", "sk-wrong-0123456789abcdef", root)[0] == "HTTP/1.1 401 Unauthorized"
    )
    assert (
        acme_host.run("readlink /etc/gpuctl/gateway/tls/fullchain.pem").stdout.strip()
        == f"/etc/letsencrypt/live/{DOMAIN}/fullchain.pem"
    )
    # Port 80 answers only challenges and the redirect to https.
    redirect = acme_host.run(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{DOMAIN}/v1/models")
    assert redirect.stdout == f"301 https://{DOMAIN}/v1/models"
    # certbot's renewal (certbot.timer) reloads nginx through the deploy hook it saved.
    renewal = acme_host.run(f"cat /etc/letsencrypt/renewal/{DOMAIN}.conf").stdout
    assert "renew_hook = systemctl reload nginx" in renewal
    second = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["hosts"][0]["status"] == "unchanged"


ENDPOINT_DOMAIN = "fleet.test"


def test_a_fleet_endpoint_gets_its_acme_certificate_too(fleet: Fleet, tmp_path):
    """A fleet endpoint with tls="acme" on its front (the host's own gateway on 8443, private CA, behind it)."""
    host = fleet.new_host("acme-ep")
    mirror.serve(host)
    mirror.publish(host, OLLAMA_VERSION)
    start_pebble(host, tmp_path / "pebble", ENDPOINT_DOMAIN)
    endpoint = (
        f'llm = Endpoint("llm", hosts=edge, model="qwen2.5:0.5b", on={host.name!r}, tls="acme", '
        f'domain={ENDPOINT_DOMAIN!r}, acme_email="ops@fleet.test", {ACME})'
    )
    inventory = write_inventory(tmp_path / "front.py", host, "Gateway(port=8443)", endpoint)
    first = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    [outcome] = json.loads(first.stdout)["hosts"]
    assert any(c.endswith(f"ACME certificate for {ENDPOINT_DOMAIN} (certbot, http-01)") for c in outcome["changes"])
    key = (tmp_path / ".gpuctl" / "front" / "endpoint.llm.api-key").read_text().strip()
    root = host.run(f"curl -fsS --cacert {PEBBLE_DIR}/ca.pem https://127.0.0.1:15000/roots/0").stdout
    status, issuer = https_get(host.address, "/v1/models", key, root, ENDPOINT_DOMAIN)
    assert status == "HTTP/1.1 200 OK" and issuer.startswith("Pebble Intermediate CA"), (status, issuer)
    assert https_get(host.address, "/v1/models", "sk-wrong-0123456789abcdef", root, ENDPOINT_DOMAIN)[0] == (
        "HTTP/1.1 401 Unauthorized"
    )
    linked = host.run("readlink /etc/gpuctl/endpoints/llm/tls/fullchain.pem").stdout.strip()
    assert linked == f"/etc/letsencrypt/live/{ENDPOINT_DOMAIN}/fullchain.pem"
    second = gpuctl("deploy", str(inventory), "--yes", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["hosts"][0]["status"] == "unchanged", second.stdout
