"""The CLI: check and render of the example inventories, --json, --limit, exit codes, secrets."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

from gpuctl import __version__, inventory
from gpuctl.render import render_host
from harness.cli import REPO, run_cli

SECRET_VALUES = {"VLLM_API_KEY": "sk-test-7f3a9c1e55d04b2a", "HF_TOKEN": "hf_QwErTy0123456789secret"}


def test_version():
    result = run_cli("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, f"gpuctl, version {__version__}")


def test_check_lists_every_example_host_and_engine():
    result = run_cli("check", "prod")
    assert result.exit_code == 0, result.output
    for expected in ("gpu-01", "gpu-02", "gpu-h100-01", "llama-3.1-8b", "llama-3.3-70b", "tp 2", "kv fp8"):
        assert expected in result.stdout
    laptop = run_cli("check", "dev-laptop")
    assert laptop.exit_code == 0
    assert "ollama 0.40.2 on 127.0.0.1:11434" in laptop.stdout


def test_check_json_is_the_spec_with_derived_names():
    result = run_cli("check", "prod", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True
    hosts = {h["name"]: h for h in data["hosts"]}
    assert set(hosts) == {"gpu-01", "gpu-02", "gpu-h100-01"}
    engine = hosts["gpu-02"]["vllm"][0]
    assert engine["gpu_memory_utilization"] == 0.88
    assert engine["unit"] == "gpuctl-vllm-main.service"
    assert engine["api_key"] == {"env": "VLLM_API_KEY", "file": None}
    spec = inventory.load("prod", cwd=REPO).hosts["gpu-02"].vllm[0]
    assert engine["command"] == spec.command_args()


def test_limit_selects_hosts_by_name_group_and_glob():
    def names(*limit: str) -> list[str]:
        args = [a for name in limit for a in ("--limit", name)]
        return [h["name"] for h in json.loads(run_cli("check", "prod", "--json", *args).stdout)["hosts"]]

    assert names("gpu-02") == ["gpu-02"]
    assert names("h100") == ["gpu-h100-01"]
    assert names("gpu-0*") == ["gpu-01", "gpu-02"]
    assert names("rtx4090", "gpu-01") == ["gpu-01", "gpu-02"]


def test_render_writes_every_file_with_modes_and_a_manifest(tmp_path):
    result = run_cli("render", "prod", "--limit", "gpu-01", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["gpu-01"]
    root = tmp_path / "gpu-01"
    env_file = root / "etc/gpuctl/vllm-main/vllm.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "usr/local/libexec/gpuctl/wait-healthy").stat().st_mode) == 0o755
    manifest = json.loads((root / "gpuctl-files.json").read_text())
    assert {m["path"]: m["mode"] for m in manifest} == {
        "/etc/gpuctl/vllm-main/compose.yaml": "0644",
        "/etc/gpuctl/vllm-main/vllm.env": "0600",
        "/etc/systemd/system/gpuctl-vllm-main.service": "0644",
        "/usr/local/libexec/gpuctl/wait-healthy": "0755",
        "/usr/local/libexec/gpuctl/heal-engines": "0755",
        "/etc/systemd/system/gpuctl-heal.service": "0644",
        "/etc/systemd/system/gpuctl-heal.timer": "0644",
        "/etc/nginx/conf.d/gpuctl-gateway.conf": "0644",
        "/etc/gpuctl/gateway/secrets.conf": "0600",
        "/etc/gpuctl/gateway/tls/fullchain.pem": "0644",
        "/etc/gpuctl/gateway/tls/key.pem": "0600",
        "/etc/gpuctl/firewall.nft": "0644",
        "/etc/systemd/system/gpuctl-firewall.service": "0644",
    }
    assert "VLLM_API_KEY='<secret env:VLLM_API_KEY>'" in env_file.read_text()


def test_render_to_an_unwritable_place_is_bad_input(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("render", "prod", "--out", str(blocker / "sub"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --out ")


def test_no_secret_value_appears_in_any_output_of_check_or_render(tmp_path):
    """With the secrets set in the environment (as at deploy time), nothing shown contains them."""
    secret_file = tmp_path / "hf.token"
    secret_file.write_text(SECRET_VALUES["HF_TOKEN"] + "\n")
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "s.py").write_text(
        textwrap.dedent("""
        from gpuctl.inventory import Gpu, Host, Secret, Vllm
        g = [Host("gpu-01", address="10.0.0.1", gpus=Gpu(model="L4", count=1, memory_gib=24),
                  vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model="m",
                            api_key=Secret.env("VLLM_API_KEY"), hf_token=Secret.file("../hf.token")))]
    """)
    )
    env = {"VLLM_API_KEY": SECRET_VALUES["VLLM_API_KEY"]}
    outputs = [
        run_cli("check", "s", cwd=tmp_path, env=env).output,
        run_cli("check", "s", "--json", cwd=tmp_path, env=env).output,
        run_cli("render", "s", "--out", str(tmp_path / "out"), cwd=tmp_path, env=env).output,
        run_cli("render", "s", "--json", "--out", str(tmp_path / "out2"), cwd=tmp_path, env=env).output,
    ]
    rendered = [p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(rendered) == 8  # compose, env, unit, wait-healthy, heal script/service/timer, manifest
    for text in outputs + rendered:
        for value in SECRET_VALUES.values():
            assert value not in text
    # The literal-secret error does not echo the literal either.
    (tmp_path / "inventories" / "lit.py").write_text(
        "from gpuctl.inventory import Gpu, Host, Vllm\n"
        f"g = [Host('a', address='10.0.0.1', gpus=Gpu(model='L4', count=1, memory_gib=24),"
        f" vllm=Vllm(image='vllm/vllm-openai:v0.32.0', model='m', api_key='{SECRET_VALUES['VLLM_API_KEY']}'))]\n"
    )
    literal = run_cli("check", "lit", cwd=tmp_path)
    assert literal.exit_code == 2
    assert SECRET_VALUES["VLLM_API_KEY"] not in literal.output


def test_resolved_secrets_go_only_into_the_0600_env_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", SECRET_VALUES["VLLM_API_KEY"])
    monkeypatch.setenv("HF_TOKEN", SECRET_VALUES["HF_TOKEN"])
    host = inventory.load("prod", cwd=REPO).hosts["gpu-01"]
    files = render_host(host, resolve=lambda ref: ref.resolve())
    holders = [f for f in files if any(v in f.content for v in SECRET_VALUES.values())]
    assert [(str(f.path), f.mode, f.secret) for f in holders] == [
        ("/etc/gpuctl/gateway/secrets.conf", 0o600, True),  # the gateway sends the engine its own key
        ("/etc/gpuctl/vllm-main/vllm.env", 0o600, True),
    ]
    assert f"VLLM_API_KEY='{SECRET_VALUES['VLLM_API_KEY']}'" in holders[1].content


def test_real_entry_point_reports_bad_input_without_traceback(tmp_path):
    """The installed console script, not just the in-process runner."""
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "bad.py").write_text("from gpuctl.inventory import Host\ng = [Host('a')]\n")
    gpuctl = [sys.executable, "-c", "from gpuctl.cli import main; main()"]
    result = subprocess.run(
        [*gpuctl, "check", "bad"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == "error: inventories/bad.py: a: address: give either address= (a remote host) or local=True (this machine)\n"
    )
    ok = subprocess.run([*gpuctl, "check", "prod"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    usage = subprocess.run([*gpuctl, "check"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "Missing argument 'INVENTORY'" in usage.stderr


def test_verify_bad_input_is_exit_2_without_touching_anything(tmp_path):
    cases = [
        (["verify", "http://127.0.0.1:9"], "error: http://127.0.0.1:9/api/version: no answer (ConnectionError)"),
        (
            ["verify", "http://127.0.0.1:9", "--engine", "vllm"],
            "error: http://127.0.0.1:9/v1/models: no answer (ConnectionError)",
        ),
        (
            ["verify", "http://127.0.0.1:9", "--engine", "ollama", "--api-key-env", "GPUCTL_UNSET_VAR"],
            "error: --api-key-env GPUCTL_UNSET_VAR: environment variable is not set",
        ),
        (
            ["verify", "no-such-host"],
            "error: no-such-host: not a URL, an inventory, or a host in inventories/*.py (use -i INVENTORY)",
        ),
        (["verify", "gpu-99", "-i", "prod"], "error: inventories/prod.py: --limit gpu-99: no such host or group"),
        (["status", "nowhere"], f"error: inventory nowhere: not found as nowhere.py in {REPO}/inventories, "),
    ]
    for args, expected in cases:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(expected), (args, result.stderr)


def test_an_explicit_unsafe_public_bind_is_accepted_and_named(tmp_path):
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "open.py").write_text(
        "from gpuctl.inventory import Host, Ollama\n"
        "g = [Host('box', local=True, ollama=Ollama(version='0.13.0', cpu_fallback=True, bind='0.0.0.0', "
        "unsafe_public_bind=True))]\n"
    )
    result = run_cli("check", "open", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["hosts"][0]["ollama"]["unsafe_public_bind"] is True
