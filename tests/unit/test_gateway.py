"""The gateway, firewall and keystore as rendered and stored (no host): files, modes, patterns, checks.

`nft -c` (the real nftables parser, inside a private network namespace) checks the rendered ruleset;
the fleet tests (tests/deploy/test_deploy_gateway.py) run nginx -t and the whole thing on a host.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from gpuctl.fleet import prepare
from gpuctl.keystore import KEY_PREFIX, Keystore
from gpuctl.render import BEARER_PATTERN, GatewayMaterial, firewall_ports, key_pattern, render_host
from gpuctl.spec import FirewallSpec, GatewaySpec, HostSpec, OllamaSpec, SecretRef, VllmSpec

IMAGE = "vllm/vllm-openai:v0.32.0"


def edge_host(**gateway: object) -> HostSpec:
    return HostSpec(
        name="edge",
        address="203.0.113.5",
        gpus={"model": "RTX 4090", "count": 2, "memory_gib": 24},
        vllm=[
            VllmSpec(name="a", image=IMAGE, model="m", gpus=[0], api_key=SecretRef(env="ENGINE_KEY")),
            VllmSpec(name="b", image=IMAGE, model="m", gpus=[1], port=8001),
        ],
        ollama=OllamaSpec(version="0.13.0", models=["qwen2.5:0.5b"]),
        gateway=GatewaySpec(engine="a", **gateway),
    )


def by_path(files) -> dict[str, object]:
    return {str(f.path): f for f in files}


# -- keystore -----------------------------------------------------------------------------------


def test_keystore_creates_private_files_and_reuses_them(tmp_path):
    store = Keystore.for_inventory(tmp_path / "prod.py")
    key = store.ensure_api_key("edge")
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43
    cert = store.server_cert("edge", ["203.0.113.5", "edge"])
    folder = tmp_path / ".gpuctl" / "prod"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {
        "edge.api-key": 0o600,
        "ca.pem": 0o644,
        "ca-key.pem": 0o600,
        "edge.pem": 0o644,
        "edge-key.pem": 0o600,
    }
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (tmp_path / ".gpuctl" / ".gitignore").read_text().splitlines()[-1] == "*"
    again = Keystore.for_inventory(tmp_path / "prod.py")
    assert again.ensure_api_key("edge") == key
    assert again.server_cert("edge", ["203.0.113.5", "edge"]) == cert


def test_server_certificate_verifies_against_the_ca_for_its_names(tmp_path):
    store = Keystore.for_inventory(tmp_path / "prod.py")
    cert = store.server_cert("edge", ["edge.example.com", "203.0.113.5"])
    leaf, ca = x509.load_pem_x509_certificates(cert.chain_pem.encode())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(store.ca_path.read_bytes()))
    assert ca.subject == leaf.issuer
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edge.example.com"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["203.0.113.5"]
    # Python's own TLS stack accepts the chain and key together.
    (tmp_path / "chain.pem").write_text(cert.chain_pem)
    (tmp_path / "key.pem").write_text(cert.key_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")


def test_certificate_is_reissued_for_new_names_or_a_new_ca(tmp_path):
    store = Keystore.for_inventory(tmp_path / "prod.py")
    first = store.server_cert("edge", ["203.0.113.5"])
    assert store.server_cert("edge", ["203.0.113.5", "edge"]) != first
    second = store.server_cert("edge", ["203.0.113.5", "edge"])
    (tmp_path / ".gpuctl/prod/ca.pem").unlink()
    (tmp_path / ".gpuctl/prod/ca-key.pem").unlink()
    assert store.server_cert("edge", ["203.0.113.5", "edge"]) != second


def test_rotation_replaces_the_key_and_a_dry_keystore_writes_nothing(tmp_path):
    store = Keystore.for_inventory(tmp_path / "prod.py")
    key = store.ensure_api_key("edge")
    assert store.rotate_api_key("edge") != key
    dry = Keystore.for_inventory(tmp_path / "other.py", write=False)
    made = dry.ensure_api_key("edge")
    dry.server_cert("edge", ["edge"])
    assert dry.ensure_api_key("edge") == made
    assert not (tmp_path / ".gpuctl" / "other").exists()


# -- nginx files --------------------------------------------------------------------------------


def test_key_pattern_matches_exactly_the_key_case_sensitively_and_the_scheme_in_any_case():
    key = "sk-gpuctl-Ab.c+d_e~f/g=h-0123456789"
    pattern = re.compile(f"^{BEARER_PATTERN} +{key_pattern(key)}$")
    for good in (f"Bearer {key}", f"bearer {key}", f"BEARER {key}", f"Bearer  {key}"):  # RFC 7235: scheme any case
        assert pattern.match(good), good
    for other in (
        f"Bearer {key.swapcase()}",
        f"Bearer {key}x",
        f"Bearer {key.replace('.', 'X')}",
        f"Basic {key}",
        f"Bearer{key}",
        key,
    ):
        assert not pattern.match(other), other
    for bad in ("short", "sk-" + "x" * 30 + '"', "sk-" + "x" * 30 + " y", "sk-" + "x" * 30 + "$"):
        with pytest.raises(Exception, match="gateway.api_key"):
            key_pattern(bad)


def test_gateway_files_hold_secrets_only_in_0600_files(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_KEY", "sk-engine-0123456789abcdef0123")
    host = edge_host()
    plan = prepare([host], tmp_path, Keystore.for_inventory(tmp_path / "inv.py"))
    files = by_path(plan.files["edge"])
    gateway_key = (tmp_path / ".gpuctl/inv/edge.api-key").read_text().strip()
    secrets = [gateway_key, "sk-engine-0123456789abcdef0123", "PRIVATE KEY"]
    holders = sorted(path for path, f in files.items() if any(s in f.content for s in secrets))
    assert holders == [
        "/etc/gpuctl/gateway/secrets.conf",
        "/etc/gpuctl/gateway/tls/key.pem",
        "/etc/gpuctl/vllm-a/vllm.env",
    ]
    assert all(files[p].mode == 0o600 and files[p].secret for p in holders)
    assert gateway_key in plan.secrets and plan.mask(f"x {gateway_key} y") == "x ******** y"
    secrets_conf = files["/etc/gpuctl/gateway/secrets.conf"].content
    assert f'"~^{BEARER_PATTERN} +{key_pattern(gateway_key)}$" 1;' in secrets_conf
    assert 'default "Bearer sk-engine-0123456789abcdef0123";' in secrets_conf  # engine a gets its own key
    assert 'map $gpuctl_key_ok $gpuctl_upstream_auth_vllm_b {\n    default "";' in secrets_conf


def test_nginx_site_routes_engines_and_blocks_ollama_admin_routes():
    site = by_path(render_host(edge_host(metrics_allow=["10.9.0.0/24"])))[
        "/etc/nginx/conf.d/gpuctl-gateway.conf"
    ].content
    assert "include /etc/gpuctl/gateway/secrets.conf;" in site
    assert (
        "    10.9.0.0/24 1;" in site and '"~^0:1:[01]:(/engines/[^/]+)?/(metrics|api/ps)$" 1;' in site
    )  # regex: plain map strings ignore case
    locations = re.findall(r"^    location (.+?) \{", site, re.M)
    assert locations == [
        "@gpuctl_unauthorized",
        "/engines/b/",
        "~ ^/engines/ollama/api/(pull|push|create|delete|copy|blobs)(/|$)",
        "/engines/ollama/",
        "/",
    ]
    assert "proxy_pass http://gpuctl_vllm_a/;" in site.split("location / {")[1]
    assert "proxy_buffering off;" in site and "listen 443 ssl;" in site
    allowed = by_path(render_host(edge_host(allow_ollama_admin=True)))["/etc/nginx/conf.d/gpuctl-gateway.conf"].content
    assert "/api/(pull" not in allowed


def test_the_gateway_reaches_each_engine_on_its_own_loopback_address():
    host = edge_host().model_copy(deep=True)
    host.vllm[1] = host.vllm[1].model_copy(update={"bind": "::1"})
    site = by_path(render_host(host))["/etc/nginx/conf.d/gpuctl-gateway.conf"].content
    assert "server [::1]:8001;" in site and "proxy_set_header Host [::1]:8001;" in site
    assert "server 127.0.0.1:11434;" in site and "proxy_set_header Host 127.0.0.1:11434;" in site


def test_ipv6_listeners_can_be_turned_off():
    site = "/etc/nginx/conf.d/gpuctl-gateway.conf"
    assert "listen [::]:443 ssl;" in by_path(render_host(edge_host()))[site].content
    without = by_path(render_host(edge_host(listen_ipv6=False, tls="acme", domain="a.example.com", acme_email="o@a")))
    assert "[::]" not in without[site].content and "listen 443 ssl;" in without[site].content


def test_render_without_secrets_shows_placeholders():
    files = by_path(render_host(edge_host()))
    assert "<secret gateway key: generated>" in files["/etc/gpuctl/gateway/secrets.conf"].content
    assert files["/etc/gpuctl/gateway/tls/key.pem"].content == "<secret certificate key (private-ca)>\n"


def test_acme_serves_challenges_on_port_80_and_opens_it():
    host = edge_host(tls="acme", domain="llm.example.com", acme_email="ops@example.com")
    files = by_path(render_host(host))
    site = files["/etc/nginx/conf.d/gpuctl-gateway.conf"].content
    assert "location /.well-known/acme-challenge/ {\n        root /var/lib/gpuctl/acme;" in site
    assert "server_name llm.example.com;" in site
    assert "/etc/gpuctl/gateway/tls/key.pem" not in files  # certbot's files, linked by deploy
    assert firewall_ports(host) == [22, 80, 443]


def test_gateway_url_and_prefixes():
    host = edge_host(port=8443)
    assert host.gateway_url(host.vllm[0]) == "https://203.0.113.5:8443"
    assert host.gateway_url(host.vllm[1]) == "https://203.0.113.5:8443/engines/b"
    assert host.gateway_url(host.ollama) == "https://203.0.113.5:8443/engines/ollama"
    named = edge_host(domain="llm.example.com")
    assert named.gateway_url(named.vllm[0]) == "https://llm.example.com"


# -- firewall -----------------------------------------------------------------------------------


def test_firewall_opens_ssh_gateway_listed_and_explicitly_public_ports_only():
    host = edge_host().model_copy(update={"ssh_port": 2222, "firewall": FirewallSpec(allow_tcp=[9100])})
    assert firewall_ports(host) == [443, 2222, 9100]
    public = HostSpec(
        name="p",
        address="10.0.0.1",
        ollama=OllamaSpec(version="0.13.0", cpu_fallback=True, bind="0.0.0.0", unsafe_public_bind=True),
        firewall=FirewallSpec(enabled=True),
    )
    assert firewall_ports(public) == [22, 11434]
    assert not HostSpec(
        name="q", address="10.0.0.2", ollama=OllamaSpec(version="0.13.0", cpu_fallback=True)
    ).firewall_enabled()
    assert edge_host().firewall_enabled()
    off = edge_host().model_copy(update={"firewall": FirewallSpec(enabled=False)})
    assert not any("firewall" in str(f.path) for f in render_host(off))


def nft_check(ruleset: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(ruleset)], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def nft() -> None:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("nft is not installed (CI installs nftables)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here (needs root)")


def test_rendered_ruleset_passes_nft_check_and_a_broken_one_does_not(nft, tmp_path):
    host = edge_host().model_copy(update={"firewall": FirewallSpec(allow_from=["10.8.0.0/16", "2001:db8::/32"])})
    ruleset = by_path(render_host(host))["/etc/gpuctl/firewall.nft"].content
    assert "ip saddr 10.8.0.0/16 accept" in ruleset and "ip6 saddr 2001:db8::/32 accept" in ruleset
    assert "elements = { 22, 443 }" in ruleset
    path = tmp_path / "firewall.nft"
    path.write_text(ruleset)
    result = nft_check(path)
    assert (result.returncode, result.stderr) == (0, "")
    public = edge_host().model_copy(deep=True)
    public.vllm[1] = public.vllm[1].model_copy(update={"bind": "0.0.0.0", "unsafe_public_bind": True})
    public_rules = by_path(render_host(public))["/etc/gpuctl/firewall.nft"].content
    assert "elements = { 22, 443, 8001 }" in public_rules
    assert (
        "meta l4proto tcp ct status dnat ct original proto-dst { 8001 } accept" in public_rules
    )  # Docker DNATs it: forward too
    path.write_text(public_rules)
    assert nft_check(path).returncode == 0
    path.write_text(ruleset.replace("policy drop;", "policy dorp;"))
    assert nft_check(path).returncode != 0


def test_material_for_provided_certificates(tmp_path, monkeypatch):
    source = Keystore.for_inventory(tmp_path / "ca-source.py").server_cert("edge", ["edge"])
    (tmp_path / "edge.pem").write_text(source.chain_pem)
    (tmp_path / "edge-key.pem").write_text(source.key_pem)
    host = edge_host(
        tls="provided", cert_file="edge.pem", key_file=SecretRef(file="edge-key.pem"), api_key=SecretRef(env="GW_KEY")
    )
    monkeypatch.setenv("GW_KEY", "sk-provided-key-0123456789")
    monkeypatch.setenv("ENGINE_KEY", "sk-engine-0123456789abcdef0123")
    plan = prepare([host], tmp_path)  # no keystore needed: nothing is generated
    files = by_path(plan.files["edge"])
    assert files["/etc/gpuctl/gateway/tls/fullchain.pem"].content == source.chain_pem
    assert files["/etc/gpuctl/gateway/tls/key.pem"].content.strip() == source.key_pem.strip()
    assert source.key_pem.strip() in plan.secrets
    (tmp_path / "edge.pem").write_text("not a certificate")
    with pytest.raises(Exception, match="edge: gateway.cert_file: .* holds no PEM certificate"):
        prepare([host], tmp_path)


def test_gateway_material_type_is_what_render_takes():
    material = GatewayMaterial(api_key="sk-gpuctl-" + "a" * 43, cert=None)
    files = by_path(render_host(edge_host(), lambda ref: "sk-engine-0123456789abcdef0123", material))
    assert files["/etc/gpuctl/gateway/tls/key.pem"].content == "<secret certificate key (private-ca)>\n"
    assert "a" * 43 in files["/etc/gpuctl/gateway/secrets.conf"].content


def test_check_shows_each_hosts_base_url_and_open_ports():
    from harness.cli import run_cli

    result = run_cli("check", "prod", "--json")
    assert result.exit_code == 0, result.output
    hosts = {h["name"]: h for h in json.loads(result.stdout)["hosts"]}
    assert hosts["gpu-01"]["gateway"]["base_url"] == "https://203.0.113.11/v1"
    assert hosts["gpu-h100-01"]["gateway"]["base_url"] == "https://llm.example.com/v1"
    assert hosts["gpu-h100-01"]["firewall"]["open_tcp"] == [22, 80, 443]
    table = run_cli("check", "prod").stdout
    assert "https://203.0.113.11/v1 (private-ca)" in table and "firewall: 22, 443" in table
