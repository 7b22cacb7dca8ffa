"""Bad inventories: each gives exit 2 and one line naming the file, the host and the field.

Every case is a small inventory with exactly one mistake. The test runs `gpuctl check` on it and
checks the exit code, that stderr is exactly one `error:` line, that the line names the inventory
file, the host and the field, and that no traceback leaks out.
"""

from __future__ import annotations

import textwrap

import pytest

from harness.cli import run_cli

HEADER = "from gpuctl.inventory import Defaults, Driver, Firewall, Gateway, Gpu, Host, Ollama, Secret, Vllm\n"
IMAGE = "vllm/vllm-openai:v0.32.0"


def vllm_host(vllm: str = "", host: str = "", gpus: int = 1, engines: str | None = None) -> str:
    """An inventory with host gpu-01 (GPUS × RTX 4090) serving one vLLM engine with extra args."""
    engines = engines or f'Vllm(image="{IMAGE}", model="m", {vllm})'
    return HEADER + textwrap.dedent(f"""
        gpus = [
            Host("gpu-01", address="10.0.0.1",
                 gpus=Gpu(model="RTX 4090", count={gpus}, memory_gib=24),
                 vllm={engines}, {host}),
        ]
    """)


def ollama_host(ollama: str = "", host: str = "") -> str:
    """An inventory with a CPU-only host laptop serving Ollama with extra args."""
    return HEADER + textwrap.dedent(f"""
        dev = [Host("laptop", local=True, ollama=Ollama(version="0.13.0", cpu_fallback=True, {ollama}), {host})]
    """)


TWO_ENGINES = (
    f'[Vllm(name="a", image="{IMAGE}", model="m", gpus=[0]), Vllm(name="b", image="{IMAGE}", model="m", {{}})]'
)

# (case id, inventory source, host named in the message, text the message must contain)
CASES = [
    (
        "gpu-mem-too-high",
        vllm_host("gpu_memory_utilization=0.99"),
        "gpu-01",
        "vllm.gpu_memory_utilization: Input should be less than or equal to 0.98",
    ),
    (
        "gpu-mem-zero",
        vllm_host("gpu_memory_utilization=0"),
        "gpu-01",
        "vllm.gpu_memory_utilization: Input should be greater than 0",
    ),
    (
        "image-latest",
        vllm_host().replace(IMAGE, "vllm/vllm-openai:latest"),
        "gpu-01",
        "vllm.image: uses the 'latest' tag",
    ),
    ("image-untagged", vllm_host().replace(IMAGE, "vllm/vllm-openai"), "gpu-01", "vllm.image: is not pinned"),
    (
        "image-bad-digest",
        vllm_host().replace(IMAGE, "vllm/vllm-openai@sha256:abc"),
        "gpu-01",
        "vllm.image: digest 'sha256:abc' is not sha256:<64 hex digits>",
    ),
    (
        "vllm-typo",
        vllm_host("gpu_mem_utilization=0.9"),
        "gpu-01",
        "vllm.gpu_mem_utilization: unknown field (did you mean 'gpu_memory_utilization'?)",
    ),
    ("host-typo", vllm_host(host='adress="10.0.0.2"'), "gpu-01", "adress: unknown field (did you mean 'address'?)"),
    (
        "tp-exceeds-gpus",
        vllm_host("tensor_parallel_size=2"),
        "gpu-01",
        "vllm.tensor_parallel_size: is 2 but the host has 1 GPU(s)",
    ),
    (
        "tp-exceeds-engine-gpus",
        vllm_host("tensor_parallel_size=2, gpus=[0]", gpus=2),
        "gpu-01",
        "vllm.tensor_parallel_size: is 2 but gpus lists 1 GPU(s)",
    ),
    ("gpu-index-missing", vllm_host("gpus=[3]", gpus=2), "gpu-01", "vllm.gpus: GPU 3 does not exist (the host has 2)"),
    (
        "overlapping-gpus",
        vllm_host(engines=TWO_ENGINES.format("gpus=[0], port=8001"), gpus=2),
        "gpu-01",
        "vllm[b].gpus: GPU 0 is already used by vllm engine 'a'",
    ),
    (
        "overlapping-ports",
        vllm_host(engines=TWO_ENGINES.format("gpus=[1]"), gpus=2),
        "gpu-01",
        "vllm[b].port: port 8000 is already used by vllm[a]",
    ),
    (
        "same-engine-name",
        vllm_host(engines=TWO_ENGINES.replace('name="b"', 'name="a"').format("gpus=[1]"), gpus=2),
        "gpu-01",
        "vllm: two engines share a name",
    ),
    (
        "ollama-port-clash",
        vllm_host(host='ollama=Ollama(version="0.13.0", port=8000)'),
        "gpu-01",
        "ollama.port: port 8000 is already used by vllm",
    ),
    ("literal-api-key", vllm_host('api_key="sk-live-0123456789"'), "gpu-01", "vllm.api_key: is a literal secret"),
    ("literal-hf-token", vllm_host('hf_token="hf_abcdefghijklmnop"'), "gpu-01", "vllm.hf_token: is a literal secret"),
    (
        "bad-secret-env-name",
        vllm_host('api_key=Secret.env("NOT VALID")'),
        "gpu-01",
        "vllm.api_key: env: 'NOT VALID' is not an environment variable name",
    ),
    ("kv-dtype", vllm_host('kv_cache_dtype="fp4"'), "gpu-01", "vllm.kv_cache_dtype: Input should be 'auto', 'fp8'"),
    ("port-range", vllm_host("port=70000"), "gpu-01", "vllm.port: Input should be less than or equal to 65535"),
    (
        "max-model-len",
        vllm_host("max_model_len=8"),
        "gpu-01",
        "vllm.max_model_len: Input should be greater than or equal to 16",
    ),
    (
        "max-num-seqs",
        vllm_host("max_num_seqs=0"),
        "gpu-01",
        "vllm.max_num_seqs: Input should be greater than or equal to 1",
    ),
    ("bind-hostname", vllm_host('bind="localhost"'), "gpu-01", "vllm.bind: must be an IP address"),
    (
        "vllm-public-bind",
        vllm_host('bind="0.0.0.0"'),
        "gpu-01",
        "vllm.bind: 0.0.0.0 publishes vLLM beyond this host, where its API key guards only /v1",
    ),
    (
        "ollama-public-bind",
        ollama_host('bind="0.0.0.0"'),
        "laptop",
        "ollama.bind: 0.0.0.0 exposes Ollama, which has no authentication (anyone could pull, delete and run models: "
        "CVE-2024-37032): keep 127.0.0.1 and add gateway=Gateway() to the host (TLS and a key on every route), or set "
        "unsafe_public_bind=True to accept that risk",
    ),
    (
        "gateway-which-engine",
        vllm_host(engines=TWO_ENGINES.format("gpus=[0]"), host="gateway=Gateway()", gpus=2)
        .replace("gpus=[0]), Vllm", "gpus=[0]), Vllm")
        .replace('model="m", gpus=[0])]', 'model="m", gpus=[1], port=8001)]'),
        "gpu-01",
        "gateway.engine: the host has several engines: name the one behind /v1 (a, b)",
    ),
    (
        "gateway-engine-named-ollama",
        vllm_host(
            'name="ollama"', host='ollama=Ollama(version="0.13.0", port=11435), gateway=Gateway(engine="ollama")'
        ),
        "gpu-01",
        "vllm: a vllm engine named 'ollama' would share the gateway's /engines/ollama with Ollama",
    ),
    (
        "gateway-unknown-engine",
        vllm_host(host='gateway=Gateway(engine="ollama")'),
        "gpu-01",
        "gateway.engine: 'ollama' is not an engine of this host (main)",
    ),
    (
        "gateway-provided-without-key",
        vllm_host(host='gateway=Gateway(tls="provided", cert_file="c.pem")'),
        "gpu-01",
        'gateway.cert_file: tls="provided" needs cert_file= and key_file=',
    ),
    (
        "gateway-acme-without-domain",
        vllm_host(host='gateway=Gateway(tls="acme", acme_email="a@b.c")'),
        "gpu-01",
        'gateway.domain: tls="acme" needs domain=',
    ),
    (
        "gateway-metrics-allow",
        ollama_host(host='gateway=Gateway(metrics_allow=["prometheus"])'),
        "laptop",
        "gateway.metrics_allow: 'prometheus' is not an IP address or network",
    ),
    (
        "gateway-port-clash",
        ollama_host("port=8443", host="gateway=Gateway(port=8443)"),
        "laptop",
        "gateway.port: port 8443 is already used by ollama",
    ),
    (
        "gateway-literal-key",
        ollama_host(host='gateway=Gateway(api_key="sk-123")'),
        "laptop",
        "gateway.api_key: is a literal secret",
    ),
    (
        "gateway-without-engine",
        'from gpuctl.inventory import Gateway, Host\nh = [Host("x", address="10.0.0.1", gateway=Gateway())]\n',
        "x",
        "gateway: the host has no engine to put behind the gateway",
    ),
    (
        "firewall-allow-from",
        ollama_host(host='firewall=Firewall(allow_from=["vpn"])'),
        "laptop",
        "firewall.allow_from: 'vpn' is not an IP address or network",
    ),
    (
        "managed-flag-in-extra-args",
        vllm_host('extra_args=["--max-model-len=4096"]'),
        "gpu-01",
        "vllm.extra_args: --max-model-len is set by its own field (max_model_len)",
    ),
    (
        "vllm-without-gpus",
        HEADER + f'g = [Host("cpu-01", address="10.0.0.1", vllm=Vllm(image="{IMAGE}", model="m"))]\n',
        "cpu-01",
        "vllm: vLLM needs GPUs but the host declares none",
    ),
    ("gpu-count-zero", vllm_host(gpus=0), "gpu-01", "gpus.count: Input should be greater than or equal to 1"),
    (
        "driver-without-gpus",
        ollama_host(host="driver=Driver(branch=580)"),
        "laptop",
        "driver: is set but the host declares no GPUs",
    ),
    (
        "driver-branch",
        vllm_host(host="driver=Driver(branch=300)"),
        "gpu-01",
        "driver.branch: Input should be greater than or equal to 470",
    ),
    (
        "fabricmanager-without-server-driver",
        vllm_host(host="driver=Driver(branch=580, server=False)").replace(
            "memory_gib=24)", "memory_gib=24, nvswitch=True)"
        ),
        "gpu-01",
        "driver.server: nvswitch=True needs nvidia-fabricmanager-580, which depends on the -server driver flavour",
    ),
    (
        "ollama-forces-tgz-for-a-zst-release",
        ollama_host('archive_format="tgz"').replace('"0.13.0"', '"0.40.2"'),
        "laptop",
        "ollama.archive_format: Ollama 0.40.2 is released as .tar.zst only",
    ),
    (
        "ollama-arch-unknown",
        ollama_host('arch="x86_64"'),
        "laptop",
        "ollama.arch: Input should be 'auto', 'amd64' or 'arm64'",
    ),
    ("address-and-local", vllm_host(host="local=True"), "gpu-01", "address: give either address="),
    ("ssh-port", vllm_host(host="ssh_port=0"), "gpu-01", "ssh_port: Input should be greater than or equal to 1"),
    ("host-name", vllm_host().replace('"gpu-01"', '"GPU_01"'), "GPU_01", "name: must be a lowercase host name"),
    (
        "ollama-latest",
        ollama_host().replace('"0.13.0"', '"latest"'),
        "laptop",
        "ollama.version: must be a pinned release",
    ),
    ("ollama-keep-alive", ollama_host('keep_alive="forever"'), "laptop", "ollama.keep_alive: must be a duration"),
    (
        "ollama-kv-without-flash",
        ollama_host('kv_cache_type="q8_0"'),
        "laptop",
        "ollama.kv_cache_type: q8_0 needs flash_attention=True",
    ),
    (
        "ollama-cpu-not-allowed",
        ollama_host().replace("cpu_fallback=True", "cpu_fallback=False"),
        "laptop",
        "ollama.cpu_fallback: the host declares no GPUs",
    ),
    (
        "ollama-num-parallel",
        ollama_host("num_parallel=0"),
        "laptop",
        "ollama.num_parallel: Input should be greater than or equal to 1",
    ),
    (
        "ollama-model-name",
        ollama_host('models=["Llama 3"]'),
        "laptop",
        "ollama.models: 'Llama 3' is not an Ollama model name",
    ),
    (
        "ollama-missing-version",
        ollama_host().replace('version="0.13.0", ', ""),
        "laptop",
        "ollama.version: is required",
    ),
    ("vllm-missing-model", vllm_host().replace('model="m", ', ""), "gpu-01", "vllm.model: is required"),
    # Addresses: an IPv4/IPv6 literal or an RFC 1123 DNS name, nothing else.
    (
        "address-url",
        vllm_host().replace('"10.0.0.1"', '"ssh://10.0.0.11"'),
        "gpu-01",
        "address: 'ssh://10.0.0.11' is not an address: give only the IP address or DNS name",
    ),
    (
        "address-trailing-space",
        vllm_host().replace('"10.0.0.1"', '"10.0.0.11 "'),
        "gpu-01",
        "address: '10.0.0.11 ' has spaces around it",
    ),
    (
        "address-bad-ipv4",
        vllm_host().replace('"10.0.0.1"', '"10.0.0.300"'),
        "gpu-01",
        "address: '10.0.0.300' is not a valid IPv4 address",
    ),
    (
        "address-with-port",
        vllm_host().replace('"10.0.0.1"', '"gpu-01.example.com:2222"'),
        "gpu-01",
        "address: 'gpu-01.example.com:2222' is not an address: give the SSH port as ssh_port=",
    ),
    (
        "address-with-user",
        vllm_host().replace('"10.0.0.1"', '"root@10.0.0.1"'),
        "gpu-01",
        "address: 'root@10.0.0.1' is not an address",
    ),
    (
        "address-bad-ipv6",
        vllm_host().replace('"10.0.0.1"', '"2001:db8::zz"'),
        "gpu-01",
        "address: '2001:db8::zz' is not a valid IPv6 address",
    ),
    (
        "address-underscore",
        vllm_host().replace('"10.0.0.1"', '"gpu_01.lab"'),
        "gpu-01",
        "address: 'gpu_01.lab' is neither an IPv4/IPv6 address nor a DNS name (RFC 1123",
    ),
    # The pinned vLLM's own choices (gpuctl/outside.py VLLM_CHOICES, read from vLLM 0.32 itself).
    (
        "quantization-unknown-to-the-pinned-vllm",
        vllm_host('quantization="bitsandbytes"'),
        "gpu-01",
        "vllm.quantization: vLLM v0.32.0 does not accept 'bitsandbytes'",
    ),
    (
        "quantization-typo",
        vllm_host('quantization="gptq_marln"'),
        "gpu-01",
        "vllm.quantization: vLLM v0.32.0 does not accept 'gptq_marln' (did you mean 'gptq_marlin'",
    ),
    # vLLM's CPU backend (device="cpu"): nothing GPU-shaped, and the KV space is the CPU engine's own field.
    (
        "cpu-engine-with-gpus",
        vllm_host('device="cpu", gpus=[0]'),
        "gpu-01",
        "vllm.gpus: a device='cpu' engine uses no GPU: remove gpus=",
    ),
    (
        "cpu-engine-with-gpu-access",
        vllm_host('device="cpu", gpu_access="cdi"'),
        "gpu-01",
        "vllm.gpu_access: 'cdi' gives GPUs to a device='cpu' engine: remove it",
    ),
    (
        "cpu-engine-with-gpu-memory-utilization",
        vllm_host('device="cpu", gpu_memory_utilization=0.5'),
        "gpu-01",
        "vllm.gpu_memory_utilization: is for GPU engines (on vLLM's CPU backend it would reserve that fraction",
    ),
    (
        "kv-space-on-a-gpu-engine",
        vllm_host("cpu_kv_cache_gib=8"),
        "gpu-01",
        "vllm.cpu_kv_cache_gib: is for device='cpu' engines",
    ),
    (
        "cpu-kv-space-in-fractions",
        vllm_host('device="cpu", cpu_kv_cache_gib=1.5'),
        "gpu-01",
        "vllm.cpu_kv_cache_gib: Input should be a valid integer, got a number with a fractional part",
    ),
    (
        "device-typo",
        vllm_host('device="cuda"'),
        "gpu-01",
        "vllm.device: Input should be 'gpu' or 'cpu'",
    ),
    # A GPU the catalog names exactly has the catalog's memory.
    (
        "gpu-memory-contradicts-catalog",
        vllm_host().replace("memory_gib=24", "memory_gib=80"),
        "gpu-01",
        "gpus.memory_gib: an RTX 4090 has 24 GiB, not 80: fix memory_gib or model",
    ),
]


@pytest.mark.parametrize(("source", "host", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_inventory_is_one_line_naming_file_host_and_field(tmp_path, source, host, expected):
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "bad.py").write_text(source)
    result = run_cli("check", "bad", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: inventories/bad.py: {host}: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_the_table_has_at_least_25_cases():
    assert len(CASES) >= 25


FILE_CASES = [
    (
        "syntax-error",
        HEADER + "gpus = [Host('a', address='10.0.0.1'\n",
        "error: inventories/bad.py:2: syntax error: '(' was never closed",
    ),
    (
        "name-error",
        HEADER + "gpus = [Host('a', address=ADDRESS)]\n",
        "error: inventories/bad.py:2: NameError: name 'ADDRESS' is not defined",
    ),
    ("import-error", "import not_a_module_anywhere\n", "error: inventories/bad.py:1: ModuleNotFoundError: "),
    ("no-hosts", HEADER + "x = 1\n", "error: inventories/bad.py: defines no hosts"),
    (
        "unknown-group-defaults",
        HEADER + "gpus = [Host('a', local=True)]\ngpu_defaults = Defaults()\n",
        "error: inventories/bad.py: gpu_defaults: there is no group named 'gpu'",
    ),
    (
        "defined-twice",
        HEADER + "a = [Host('x', local=True)]\nb = [Host('x', address='10.0.0.1')]\n",
        "error: inventories/bad.py: x: defined twice with different settings",
    ),
    (
        "mixed-group",
        HEADER + "g = [Host('x', local=True), 'y']\n",
        "error: inventories/bad.py: group g: every item must be Host(...)",
    ),
    (
        "host-in-no-group",
        HEADER + "gpu01 = Host('a', address='10.0.0.1')\ngpu02 = Host('b', address='10.0.0.2')\ng = [gpu01]\n",
        "error: inventories/bad.py: b: the variable gpu02 = Host(...) is in no group, so it would not be "
        "deployed: put it in a list (e.g. hosts = [gpu02, ...]) or remove it",
    ),
    (
        "same-address-and-port",
        HEADER + "g = [Host('a', address='10.0.0.1'), Host('b', address='10.0.0.1')]\n",
        "error: inventories/bad.py: b: address: 10.0.0.1 port 22 is also host a's (one machine deployed as two hosts "
        "fights itself): fix the address, or set shared_address=True on both",
    ),
    (
        "two-local-hosts",
        HEADER + "g = [Host('a', local=True), Host('b', local=True)]\n",
        "error: inventories/bad.py: b: address: local=True is also host a's",
    ),
]


@pytest.mark.parametrize(("source", "expected"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_broken_inventory_file_is_one_line_with_location(tmp_path, source, expected):
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "bad.py").write_text(source)
    result = run_cli("check", "bad", cwd=tmp_path)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert "Traceback" not in result.output


def test_missing_inventory_names_what_exists(tmp_path):
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "prod.py").write_text("")
    result = run_cli("check", "prodd", cwd=tmp_path, env={"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": ""})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: inventory prodd: not found as prodd.py in {tmp_path}/inventories, ~/.config/gpuctl/inventories "
        "(available: prod; examples shipped with gpuctl: example:cpu-server, example:dev-laptop, "
        "example:dev-workstation, example:prod, example:vagrant)"
    )


def test_same_address_on_another_port_or_declared_shared_is_accepted(tmp_path):
    source = HEADER + (
        "g = [Host('a', address='10.0.0.1'), Host('b', address='10.0.0.1', ssh_port=2222),\n"
        "     Host('c', address='10.0.0.5', shared_address=True), Host('d', address='10.0.0.5', shared_address=True)]\n"
    )
    (tmp_path / "ok.py").write_text(source)
    result = run_cli("check", str(tmp_path / "ok.py"), cwd=tmp_path)
    assert result.exit_code == 0, result.stderr


def test_an_inventory_that_is_not_a_python_file_says_what_is_expected(tmp_path):
    (tmp_path / "hosts.yaml").write_text("all:\n  hosts: {}\n")
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "prod.py").write_text("")
    yaml = run_cli("check", "hosts.yaml", cwd=tmp_path)
    assert (yaml.exit_code, yaml.stderr.strip()) == (
        2,
        "error: inventory hosts.yaml: gpuctl inventories are Python files "
        "(.py) holding Host(...) lists, not .yaml files (see inventories/prod.py)",
    )
    folder = run_cli("check", "fleet", cwd=tmp_path)
    assert (folder.exit_code, folder.stderr.strip()) == (
        2,
        "error: inventory fleet: is a folder; an inventory is one Python file (.py): give one of its files (prod.py)",
    )


def test_missing_inventory_path(tmp_path):
    result = run_cli("check", "nowhere/x.py", cwd=tmp_path)
    assert (result.exit_code, result.stderr.strip()) == (2, "error: inventory nowhere/x.py: no such file")


def test_unknown_limit_is_bad_input():
    result = run_cli("check", "prod", "--limit", "gpu-99")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: inventories/prod.py: --limit gpu-99: no such host or group")


def test_every_problem_of_several_hosts_is_reported(tmp_path):
    source = HEADER + textwrap.dedent(f"""
        g = [Host("a", address="10.0.0.1", gpus=Gpu(model="x", count=1, memory_gib=24),
                  vllm=Vllm(image="{IMAGE}", model="m", port=0)),
             Host("b", local=True, ollama=Ollama(version="latest", cpu_fallback=True))]
    """)
    (tmp_path / "bad.py").write_text(source)
    result = run_cli("check", str(tmp_path / "bad.py"), cwd=tmp_path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == ["a", "b"], lines
