"""Fleet endpoints (gpuctl.endpoints): what an inventory may say, checked before any connection with one line
per problem, and what the front and the hosts behind it receive. nginx itself runs the rendered files in
the fleet test (tests/deploy/test_deploy_endpoint.py): this machine has no nginx."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpuctl import inventory
from gpuctl.drain import drainable
from gpuctl.errors import GpuctlError
from gpuctl.fleet import prepare
from gpuctl.keystore import Keystore
from gpuctl.render import endpoint_servers, firewall_ports
from harness.cli import run_cli

FLEET = """
from gpuctl.inventory import Endpoint, Gateway, Host, Model, Ollama
LLAMA = Model("llama-3.1-8b", ollama="qwen2.5:0.5b")
O = Ollama(version="0.13.0", cpu_fallback=True, models=[LLAMA])
gpu = [Host(f"gpu-0{i}", address=f"192.0.2.1{i}", ollama=O, gateway=Gateway()) for i in (1, 2, 3)]
ENDPOINT
"""


def write(tmp_path: Path, endpoint: str, extra: str = "") -> Path:
    path = tmp_path / "fleet.py"
    path.write_text(textwrap.dedent(FLEET).replace("ENDPOINT", endpoint) + textwrap.dedent(extra))
    return path


GOOD = 'llm = Endpoint("llm", hosts=gpu, model=LLAMA, on="gpu-01", port=8443)'


def test_an_endpoint_wires_its_front_and_its_hosts(tmp_path):
    inv = inventory.load(str(write(tmp_path, GOOD)))
    front, second = inv.hosts["gpu-01"], inv.hosts["gpu-02"]
    assert [e.name for e in front.endpoints] == ["llm"] and second.endpoints == []
    assert front.endpoint_members["llm"] == {
        "gpu-01": "192.0.2.11:443",
        "gpu-02": "192.0.2.12:443",
        "gpu-03": "192.0.2.13:443",
    }
    assert all([e.name for e in h.behind_endpoints] == ["llm"] for h in inv.hosts.values())
    assert firewall_ports(front) == [22, 443, 8443] and firewall_ports(second) == [22, 443]
    assert inv.endpoints["llm"].url(front) == "https://192.0.2.11:8443"
    shown = run_cli("check", str(tmp_path / "fleet.py"), cwd=tmp_path, env={"COLUMNS": "250"})
    assert "endpoint llm: https://192.0.2.11:8443/v1 for gpu-01, gpu-02, gpu-03 (private-ca)" in shown.stdout


@pytest.mark.parametrize(
    ("endpoint", "extra", "message"),
    [
        (
            'llm = Endpoint("llm", hosts=gpu, model=LLAMA, on="front")',
            "",
            "endpoint llm: 'front' is not a host of the inventory (hosts: gpu-01, gpu-02, gpu-03)",
        ),
        (
            'llm = Endpoint("llm", hosts=gpu, model=LLAMA, on="gpu-01")',
            "",
            "endpoint llm: port: 443 is taken on gpu-01 by its gateway",
        ),
        (
            'llm = Endpoint("llm", hosts=gpu, model="mistral", on="gpu-01", port=8443)',
            "",
            "endpoint llm: hosts: gpu-01's gateway /v1 does not serve 'mistral' (it serves llama-3.1-8b, qwen2.5:0.5b)",
        ),
        (
            'llm = Endpoint("llm", hosts=[*gpu, "bare"], model=LLAMA, on="gpu-01", port=8443)',
            'more = [Host("bare", address="192.0.2.20", ollama=O)]',
            "endpoint llm: hosts: bare has no gateway (the front reaches each host through its gateway)",
        ),
        (
            'llm = Endpoint("llm", hosts=gpu, model=LLAMA, on="gpu-01", port=8443, tls="acme", '
            'domain="llm.example.com", acme_email="ops@example.com")',
            "",
            "endpoint llm: port: ACME (tls='acme') certificates are for port 443, not 8443",
        ),
        (
            'llm = [Endpoint("llm", hosts=gpu, model=LLAMA, on="gpu-01", port=8443), '
            'Endpoint("llm", hosts=gpu, model=LLAMA, on="gpu-02", port=8443)]',
            "",
            "endpoint llm: defined twice (give each Endpoint its own name)",
        ),
        (
            'llm = Endpoint("llm", hosts=gpu, model=LLAMA, on="gpu-01", port=8443, tls="provided")',
            "",
            'endpoint llm: cert_file: tls="provided" needs cert_file= and key_file=',
        ),
    ],
)
def test_what_an_endpoint_cannot_be_is_one_line_before_any_connection(tmp_path, endpoint, extra, message):
    path = write(tmp_path, endpoint, extra)
    with pytest.raises(GpuctlError) as failed:
        inventory.load(str(path))
    assert message in str(failed.value)
    result = run_cli("check", str(path), cwd=tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert message in result.stderr


def test_the_front_sends_the_hosts_a_key_they_accept_and_clients_never_see(tmp_path):
    path = write(tmp_path, GOOD)
    inv = inventory.load(str(path))
    keystore = Keystore.for_inventory(path)
    plan = prepare(list(inv.hosts.values()), tmp_path, keystore)
    upstream = keystore.api_key("endpoint.llm.upstream")
    client_key = keystore.api_key("endpoint.llm")
    assert upstream and client_key and upstream != client_key
    front = plan.files["gpu-01"].endpoints["llm"]
    assert f'default "Bearer {upstream}";' in front.secrets.content
    assert front.secrets.mode == 0o600 and upstream not in front.site.content and client_key not in front.site.content
    for name in ("gpu-01", "gpu-02", "gpu-03"):
        gateway = plan.files[name].gateway
        assert gateway is not None
        secrets = gateway.secrets.content
        assert upstream in secrets  # (a generated key has no . or +, which the pattern would bracket)
        assert client_key not in secrets  # the clients' key opens only the endpoint
    assert upstream in plan.secrets and client_key in plan.secrets


def test_every_host_certificate_names_the_endpoint_the_front_checks(tmp_path):
    from cryptography import x509

    path = write(tmp_path, GOOD)
    inv = inventory.load(str(path))
    plan = prepare(list(inv.hosts.values()), tmp_path, Keystore.for_inventory(path))
    for name in ("gpu-02", "gpu-03"):
        gateway = plan.files[name].gateway
        assert gateway is not None and gateway.tls_cert is not None
        cert = x509.load_pem_x509_certificate(gateway.tls_cert.content.encode())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "gpuctl-endpoint-llm" in names.get_values_for_type(x509.DNSName)
    site = plan.files["gpu-01"].endpoints["llm"].site.content
    assert "proxy_ssl_name gpuctl-endpoint-llm;" in site and "proxy_ssl_verify on;" in site
    assert "least_conn;" in site and "proxy_next_upstream error timeout http_502 http_503;" in site
    assert "non_idempotent" not in site.replace("# which is not set", "").split("proxy_next_upstream error")[1][:80]
    assert '"id": "llama-3.1-8b"' in site


def test_verify_and_bench_find_an_endpoint_by_its_name(tmp_path, monkeypatch):
    (tmp_path / "inventories").mkdir()
    write(tmp_path / "inventories", GOOD)
    monkeypatch.chdir(tmp_path)  # an endpoint is looked for in ./inventories/*.py, as a host is
    found = inventory.find_endpoint("llm")
    assert found is not None and found[1].name == "llm" and found[0].name == "fleet"
    assert inventory.find_endpoint("gpu-01") is None  # a host's name is the host
    assert inventory.find_endpoint("nope") is None


def test_a_rolling_batch_drains_its_hosts_unless_it_holds_every_host_of_the_endpoint(tmp_path):
    inv = inventory.load(str(write(tmp_path, GOOD)))
    hosts = inv.hosts
    [(front, endpoint, down)] = drainable([hosts["gpu-02"]], hosts)
    assert (front.name, endpoint.name, down) == ("gpu-01", "llm", frozenset({"gpu-02"}))
    assert drainable(list(hosts.values()), hosts) == []  # all of them: the endpoint would have no host left
    servers = endpoint_servers(front, endpoint, down).content
    assert "server 192.0.2.12:443 max_fails=1 fail_timeout=10s down;  # gpu-02" in servers
    assert servers.count(" down;") == 1
    plain = prepare([front], tmp_path, Keystore.for_inventory(tmp_path / "fleet.py")).files["gpu-01"]
    by_endpoint = {"llm": down}
    drained_files = prepare([front], tmp_path, Keystore.for_inventory(tmp_path / "fleet.py"), by_endpoint)
    drained_files = drained_files.files["gpu-01"]
    assert drained_files.endpoints["llm"].servers.content == servers  # what a deploy during the batch writes
    assert " down;" not in plain.endpoints["llm"].servers.content
    assert f"include {plain.endpoints['llm'].servers.path};" in plain.endpoints["llm"].site.content


def test_gpuctl_env_gives_an_application_the_endpoint(tmp_path):
    (tmp_path / "inventories").mkdir()
    write(tmp_path / "inventories", GOOD)
    result = run_cli("env", "llm", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    keys = tmp_path / "inventories" / ".gpuctl" / "fleet"
    assert result.stdout.splitlines()[1:] == [
        "export OPENAI_BASE_URL=https://192.0.2.11:8443/v1",
        "export OPENAI_MODEL=llama-3.1-8b",
        f"export SSL_CERT_FILE={keys / 'ca.pem'}",
        f'export OPENAI_API_KEY="$(cat {keys / "endpoint.llm.api-key"})"',
    ]
    other = run_cli("env", "llm", "--model", "mistral", cwd=tmp_path)
    assert other.exit_code == 2 and "endpoint llm serves llama-3.1-8b, not mistral" in other.stderr


def test_an_acme_endpoint_serves_challenges_on_port_80_and_gets_no_rendered_certificate(tmp_path):
    acme = (
        'llm = Endpoint("llm", hosts=gpu[1:], model=LLAMA, on="front", tls="acme", domain="llm.example.com", '
        'acme_email="ops@example.com")'
    )
    front = 'edge = [Host("front", address="192.0.2.30")]'
    path = write(tmp_path, acme, front)
    inv = inventory.load(str(path))
    host = inv.hosts["front"]
    assert firewall_ports(host) == [22, 80, 443] and host.firewall_enabled()
    files = prepare([host], tmp_path, Keystore.for_inventory(path)).files["front"].endpoints["llm"]
    assert files.tls_cert is None and files.tls_key is None  # deploy links certbot's files there
    assert "location /.well-known/acme-challenge/" in files.site.content
    assert "server_name llm.example.com;" in files.site.content


def test_a_provided_certificate_is_what_the_endpoint_serves(tmp_path, monkeypatch):
    source = Keystore.for_inventory(tmp_path / "ca-source.py").server_cert("llm", ["llm.example.com"])
    (tmp_path / "llm.pem").write_text(source.chain_pem)
    (tmp_path / "llm-key.pem").write_text(source.key_pem)
    provided = (
        'llm = Endpoint("llm", hosts=gpu, model=LLAMA, on="gpu-01", port=8443, tls="provided", '
        'cert_file="llm.pem", key_file=Secret.file("llm-key.pem"), api_key=Secret.env("LLM_KEY"))'
    )
    path = write(tmp_path, provided)
    path.write_text("from gpuctl.inventory import Secret\n" + path.read_text())
    monkeypatch.setenv("LLM_KEY", "sk-endpoint-clients-0123456789")
    inv = inventory.load(str(path))
    plan = prepare(list(inv.hosts.values()), tmp_path, Keystore.for_inventory(path))
    files = plan.files["gpu-01"].endpoints["llm"]
    assert files.tls_cert is not None and files.tls_cert.content == source.chain_pem
    assert files.tls_key is not None and files.tls_key.mode == 0o600 and files.tls_key.secret
    assert "sk-endpoint-clients-0123456789" in files.secrets.content  # the clients' key, as a pattern
    assert "sk-endpoint-clients-0123456789" in plan.secrets  # masked in every output
    (tmp_path / "llm.pem").write_text("not a certificate")
    with pytest.raises(GpuctlError, match="endpoint llm.cert_file: .* holds no PEM certificate"):
        prepare(list(inv.hosts.values()), tmp_path, Keystore.for_inventory(path))


def test_two_endpoints_on_one_front_need_two_ports_and_a_model_name_is_checked(tmp_path):
    two = (
        'a = Endpoint("a", hosts=gpu, model=LLAMA, on="gpu-01", port=8443)\n'
        'b = Endpoint("b", hosts=gpu, model=LLAMA, on="gpu-01", port=8443)'
    )
    with pytest.raises(GpuctlError, match="endpoint b: port: 8443 is taken on gpu-01 by endpoint a"):
        inventory.load(str(write(tmp_path, two)))
    quoted = """llm = Endpoint("llm", hosts=gpu, model="it's", on="gpu-01", port=8443)"""
    with pytest.raises(GpuctlError, match="endpoint llm: model: .*is not a model name"):
        inventory.load(str(write(tmp_path, quoted)))


def test_a_drain_marks_hosts_down_only_in_the_endpoint_it_drains(tmp_path):
    """Endpoint public has three hosts; internal only gpu-01. A batch of gpu-01 drains public; internal, whose
    only host is in the batch, keeps it (draining it would leave internal nothing), even when the front's own
    deploy renders both during the batch."""
    both = (
        'public = Endpoint("public", hosts=gpu, model=LLAMA, on="gpu-01", port=8443)\n'
        'internal = Endpoint("internal", hosts=["gpu-01"], model=LLAMA, on="gpu-01", port=9443)'
    )
    path = write(tmp_path, both)
    hosts = inventory.load(str(path)).hosts
    [(front, endpoint, down)] = drainable([hosts["gpu-01"]], hosts)
    assert (endpoint.name, down) == ("public", frozenset({"gpu-01"}))
    files = prepare([front], tmp_path, Keystore.for_inventory(path), {"public": down}).files["gpu-01"]
    assert " down;" in files.endpoints["public"].servers.content
    assert " down;" not in files.endpoints["internal"].servers.content


def test_a_host_behind_an_endpoint_lets_the_front_reach_v1_only(tmp_path):
    path = write(tmp_path, GOOD)
    inv = inventory.load(str(path))
    keystore = Keystore.for_inventory(path)
    gateway = prepare([inv.hosts["gpu-02"]], tmp_path, keystore).files["gpu-02"].gateway
    assert gateway is not None
    upstream = keystore.api_key("endpoint.llm.upstream")
    key_ok, endpoint_ok = gateway.secrets.content.split("map $http_authorization $gpuctl_endpoint_key_ok")
    assert upstream not in key_ok and upstream in endpoint_ok
    assert '"~^0:[01]:1:/v1/" 1;' in gateway.site.content  # the front's key: /v1/ only (nginx's normalized $uri)
