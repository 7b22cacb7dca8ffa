"""`gpuctl deploy` of an Ollama host on a real fleet host: install, idempotence, restarts, checksum.

The Ollama server itself is the STAND-IN from harness/ollama_standin.py (the real server is not
installable here), shipped in a release archive served by a local mirror (harness/mirror.py).
Everything else is real: SSH, pyinfra, apt from the local repository, systemd, the drop-in.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import urllib.request
from pathlib import Path

import pytest

from harness import fault_times, mirror
from harness.fault_times import Stopwatch
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

VERSION = "0.13.0"


def write_inventory(path: Path, host: Host, **ollama: object) -> Path:
    settings = {
        "version": VERSION,
        "bind": "0.0.0.0",
        "unsafe_public_bind": True,
        "cpu_fallback": True,
        "release_url": mirror.MIRROR_URL,
        "models": ["qwen2.5:0.5b"],
        **ollama,
    }
    args = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Host, Ollama
        dev = [Host({host.name!r}, address={host.address!r}, ssh_key={str(host.ssh_key)!r},
                    ssh_known_hosts_file={str(host.known_hosts)!r}, ssh_strict_host_key_checking="yes",
                    ollama=Ollama({args}))]
    """)
    )
    return path


def gpuctl_deploy(inventory: Path, *extra: str) -> tuple[int, dict, str]:
    """Run the real CLI; return exit code, its --json report and stderr."""
    result = subprocess.run(
        ["gpuctl", "deploy", str(inventory), "--yes", "--json", *extra], capture_output=True, text=True, timeout=600
    )
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, report, result.stderr


def main_pid(host: Host) -> str:
    return host.run("systemctl show -p MainPID --value ollama.service").stdout.strip()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def ollama_host(fleet: Fleet) -> Host:
    host = fleet.new_host("ollama")
    mirror.serve(host)
    mirror.publish(host, VERSION)
    return host


@pytest.fixture(scope="module")
def deployed(ollama_host: Host, tmp_path_factory) -> Path:
    inventory = write_inventory(tmp_path_factory.mktemp("inv") / "dev.py", ollama_host)
    code, report, stderr = gpuctl_deploy(inventory)
    assert code == 0, stderr
    assert "RISK: ollama: ollama listens on 0.0.0.0:11434 without a gateway (unsafe_public_bind=True)" in stderr
    [outcome] = report["hosts"]
    assert outcome["status"] == "changed"
    assert any("Install Ollama 0.13.0 (was absent), sha256 verified" in c for c in outcome["changes"])
    return inventory


def test_first_deploy_reaches_an_enabled_service_answering_from_outside(ollama_host, deployed):
    assert ollama_host.run("systemctl is-active ollama.service").stdout.strip() == "active"
    assert ollama_host.run("systemctl is-enabled ollama.service").stdout.strip() == "enabled"
    base = f"http://{ollama_host.address}:11434"
    assert get_json(f"{base}/api/version") == {"version": VERSION}
    assert [m["name"] for m in get_json(f"{base}/api/tags")["models"]] == ["qwen2.5:0.5b"]
    # The settings reached the process through the drop-in, not a rewritten unit.
    config = get_json(f"{base}/api/standin/config")
    assert config["env"]["OLLAMA_KEEP_ALIVE"] == "5m"
    assert config["env"]["OLLAMA_HOST"] == "0.0.0.0:11434"
    assert "OLLAMA_" not in ollama_host.read_file("/etc/systemd/system/ollama.service").decode()
    # 0.13.0's release lists .tgz Linux archives only: gpuctl took that one without being told.
    listing = ollama_host.run(f"curl -fsS {mirror.MIRROR_URL.format(version=VERSION)}/sha256sum.txt").stdout
    assert "./ollama-linux-amd64.tgz" in listing and ".tar.zst" not in listing
    assert ollama_host.read_file("/usr/local/lib/ollama/.gpuctl-archive").decode().strip() == "ollama-linux-amd64.tgz"
    assert ollama_host.run("dpkg -s zstd", check=False).rc != 0, "a .tgz release needs no zstd"


def test_second_deploy_changes_nothing_and_restarts_nothing(ollama_host, deployed):
    pid = main_pid(ollama_host)
    code, report, stderr = gpuctl_deploy(deployed)
    assert code == 0, stderr
    assert report["hosts"] == [
        {"host": "ollama", "status": "unchanged", "changes": [], "failed_operation": None, "error": None}
    ]
    assert main_pid(ollama_host) == pid


NOOP_CHANNELS_MAX = 13
"""SSH channels a no-op deploy of this Ollama host opens (benchmarks/deploy_noop.py measured it): a
regression test on the count, not on time."""


def test_a_noop_with_an_hours_old_package_index_is_a_noop_in_few_ssh_channels(ollama_host, deployed):
    """Issue #20: with apt's index stamp three hours old and every package installed, a deploy refreshes
    nothing and reports the host unchanged; its channels stay within NOOP_CHANNELS_MAX. In this process
    (gpuctl.fleet, not the CLI) so the channels can be counted."""
    from gpuctl import fleet, inventory
    from gpuctl.keystore import Keystore
    from harness import ssh_channels

    stamp = "/var/lib/apt/periodic/update-success-stamp"
    ollama_host.run(f"mkdir -p /var/lib/apt/periodic && touch -d '3 hours ago' {stamp}")
    before = ollama_host.run(f"stat -c %Y {stamp}").stdout
    inv = inventory.load(str(deployed))
    with ssh_channels.counting() as channels:
        outcomes = fleet.deploy(inv.select(), inv.base_dir, keystore=Keystore.for_inventory(inv.path, write=False))
    assert [(o.status, o.changes, o.error) for o in outcomes] == [("unchanged", [], None)]
    assert ollama_host.run(f"stat -c %Y {stamp}").stdout == before  # no apt-get update ran
    print(f"\nno-op deploy of one Ollama host: {channels[ollama_host.address]} SSH channels")
    assert 0 < channels[ollama_host.address] <= NOOP_CHANNELS_MAX


def test_dry_run_of_an_unchanged_host_plans_nothing(deployed):
    code, report, _ = gpuctl_deploy(deployed, "--dry")
    assert code == 0
    assert report["dry"] is True
    assert [(h["status"], h["changes"]) for h in report["hosts"]] == [("unchanged", [])]


def test_changing_one_setting_restarts_ollama_and_dry_diff_shows_it(ollama_host, deployed, tmp_path):
    changed = write_inventory(tmp_path / "dev.py", ollama_host, keep_alive="-1")
    dry = subprocess.run(
        ["gpuctl", "deploy", str(changed), "--dry", "--diff"], capture_output=True, text=True, timeout=300
    )
    assert dry.returncode == 0, dry.stderr
    assert '-Environment="OLLAMA_KEEP_ALIVE=5m"' in dry.stdout
    assert '+Environment="OLLAMA_KEEP_ALIVE=-1"' in dry.stdout
    pid = main_pid(ollama_host)
    code, report, stderr = gpuctl_deploy(changed)
    assert code == 0, stderr
    changes = report["hosts"][0]["changes"]
    assert "Ollama | File /etc/systemd/system/ollama.service.d/override.conf" in changes
    assert "Ollama | Restart ollama.service (its files or binary changed)" in changes
    assert main_pid(ollama_host) != pid
    assert get_json(f"http://{ollama_host.address}:11434/api/standin/config")["env"]["OLLAMA_KEEP_ALIVE"] == "-1"


def test_wrong_checksum_aborts_and_leaves_the_previous_version_running(ollama_host, deployed, tmp_path):
    mirror.publish(ollama_host, "0.13.1", corrupt=True)
    pid = main_pid(ollama_host)
    upgrade = write_inventory(tmp_path / "dev.py", ollama_host, version="0.13.1", keep_alive="-1")
    code, report, _ = gpuctl_deploy(upgrade)
    assert code == 1
    [outcome] = report["hosts"]
    assert outcome["status"] == "failed"
    assert outcome["failed_operation"] == "Ollama | Install Ollama 0.13.1 (was 0.13.0), sha256 verified"
    assert "checksum mismatch for ollama-linux-amd64.tgz" in outcome["error"]
    assert main_pid(ollama_host) == pid
    assert get_json(f"http://{ollama_host.address}:11434/api/version") == {"version": VERSION}
    assert ollama_host.read_file("/usr/local/lib/ollama/.gpuctl-version").decode().strip() == VERSION


def gpuctl_verify(inventory: Path, *extra: str) -> tuple[int, dict]:
    result = subprocess.run(
        ["gpuctl", "verify", str(inventory), "--json", *extra], capture_output=True, text=True, timeout=300
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def checks_of(report: dict) -> dict[str, dict]:
    [engine] = report["engines"]
    return {c["name"]: c for c in engine["checks"]}


def test_verify_of_the_deployed_host_passes_including_host_checks(ollama_host, tmp_path):
    inventory = write_inventory(tmp_path / "dev.py", ollama_host, keep_alive="-1")
    code, report = gpuctl_verify(inventory)
    checks = checks_of(report)
    assert code == 0, {n: c["reason"] for n, c in checks.items() if not c["ok"]}
    assert list(checks) == ["unit", "bind", "version", "models", "chat", "openai", "keep_alive"]
    assert checks["unit"]["reason"] == "ollama.service is active and enabled"
    assert checks["bind"]["reason"] == "port 11434 listens on 0.0.0.0"
    assert checks["chat"]["numbers"]["tokens"] > 0


def test_verify_reports_an_engine_bound_wider_than_the_spec_allows(ollama_host, tmp_path):
    """The host listens on 0.0.0.0 but this spec says loopback: the API is reached through an SSH tunnel
    to 127.0.0.1, and the bind check fails with the reason."""
    inventory = write_inventory(tmp_path / "dev.py", ollama_host, keep_alive="-1", bind="127.0.0.1")
    with Stopwatch() as detect:
        code, report = gpuctl_verify(inventory)
    checks = checks_of(report)
    assert code == 1
    assert (checks["bind"]["ok"], checks["bind"]["reason"]) == (
        False,
        "port 11434 listens on 0.0.0.0, the spec allows 127.0.0.1 only",
    )
    assert report["engines"][0]["url"].startswith("http://127.0.0.1:")
    assert checks["version"]["ok"] and checks["chat"]["ok"]
    assert any("ollama" in line.lower() for line in checks["bind"]["details"]), "a failure carries the journal"
    # The repair: deploying this spec binds the engine to loopback only.
    with Stopwatch() as repair:
        code, deploy_report, stderr = gpuctl_deploy(inventory)
    assert code == 0, stderr
    assert "Ollama | Restart ollama.service (its files or binary changed)" in deploy_report["hosts"][0]["changes"]
    fault_times.record("engine bound wider than the spec", detect.seconds, repair.seconds, "gpuctl deploy")
    code, report = gpuctl_verify(inventory)
    assert code == 0 and checks_of(report)["bind"]["reason"] == "port 11434 listens on 127.0.0.1 only"


def test_verify_of_a_stopped_unit_fails_with_its_journal(ollama_host, tmp_path):
    inventory = write_inventory(tmp_path / "dev.py", ollama_host, keep_alive="-1")
    ollama_host.run("systemctl stop ollama.service")
    try:
        code, report = gpuctl_verify(inventory)
        checks = checks_of(report)
        assert code == 1
        assert checks["unit"]["reason"] == "ollama.service is inactive and enabled"
        assert any(
            "Stopped ollama.service" in line or "Stopping ollama.service" in line for line in checks["unit"]["details"]
        )
        assert checks["bind"]["reason"] == "nothing listens on port 11434"
        assert checks["unit"]["details"] and not checks["version"]["details"], "the journal is shown once, by the unit"
        assert (
            checks["version"]["reason"] == f"nothing answers on {ollama_host.address}:11434 (connection refused): "
            "is the engine deployed and running?"
        )
    finally:
        ollama_host.run("systemctl start ollama.service")


def test_upgrade_from_a_tgz_release_to_current_tar_zst_releases_and_forward_again(ollama_host, deployed, tmp_path):
    """0.13.0 (.tgz only) → 0.34.4 → 0.40.2 (.tar.zst only; sha256sum.txt lists every platform's files,
    install.sh and the -mlx archives): no archive_format in the inventory, each step verified by the
    checksum, the service restarted onto the new binary, and a redeploy after it changes nothing."""
    previous = ollama_host.read_file("/usr/local/lib/ollama/.gpuctl-version").decode().strip()
    for version in ("0.34.4", "0.40.2"):
        mirror.publish(ollama_host, version)
        listing = ollama_host.run(f"curl -fsS {mirror.MIRROR_URL.format(version=version)}/sha256sum.txt").stdout
        assert "./ollama-linux-amd64.tar.zst" in listing and "ollama-linux-amd64.tgz" not in listing
        inventory = write_inventory(tmp_path / f"dev-{version}.py", ollama_host, version=version, keep_alive="-1")
        pid = main_pid(ollama_host)
        code, report, stderr = gpuctl_deploy(inventory)
        assert code == 0, stderr
        changes = report["hosts"][0]["changes"]
        assert f"Ollama | Install Ollama {version} (was {previous}), sha256 verified" in changes
        if previous == VERSION:  # zstd arrives with the first .tar.zst release, not before
            assert "Ollama | Ollama's tools (curl, ca-certificates, tar, zstd)" in changes
        assert main_pid(ollama_host) != pid
        assert get_json(f"http://{ollama_host.address}:11434/api/version") == {"version": version}
        archive = ollama_host.read_file("/usr/local/lib/ollama/.gpuctl-archive").decode().strip()
        assert archive == "ollama-linux-amd64.tar.zst"
        previous = version
    code, report, _ = gpuctl_deploy(inventory)
    assert (code, report["hosts"][0]["status"]) == (0, "unchanged")


@pytest.fixture
def steady(ollama_host: Host, deployed: Path, tmp_path: Path) -> Path:
    """The host deployed from an inventory with keep-alive -1 (so verify checks it), verified passing."""
    inventory = write_inventory(tmp_path / "dev.py", ollama_host, keep_alive="-1")
    code, _, stderr = gpuctl_deploy(inventory)
    assert code == 0, stderr
    code, report = gpuctl_verify(inventory)
    assert code == 0, {n: c["reason"] for n, c in checks_of(report).items() if not c["ok"]}
    return inventory


def named_then_repaired(inventory: Path, fault: str, check: str) -> tuple[dict, list[str]]:
    """Verify (must fail CHECK), deploy (the repair), verify again (must pass); record the times.
    Returns the failed check and the deploy's changes."""
    with Stopwatch() as detect:
        code, report = gpuctl_verify(inventory)
    failed = checks_of(report)[check]
    assert code == 1 and not failed["ok"], failed
    with Stopwatch() as repair:
        code, deploy_report, stderr = gpuctl_deploy(inventory)
    assert code == 0, stderr
    code, report = gpuctl_verify(inventory)
    assert code == 0, {n: c["reason"] for n, c in checks_of(report).items() if not c["ok"]}
    fault_times.record(fault, detect.seconds, repair.seconds, "gpuctl deploy")
    return failed, deploy_report["hosts"][0]["changes"]


def test_a_stopped_unit_is_started_by_deploy(ollama_host, steady):
    ollama_host.run("systemctl stop ollama.service")
    failed, changes = named_then_repaired(steady, "Ollama unit stopped", "unit")
    assert failed["reason"] == "ollama.service is inactive and enabled"
    # With the server down when the deploy is planned, its model list cannot be read: the pull is planned
    # too, and finds the model already there.
    assert changes == ["Ollama | Start ollama.service (was inactive)", "Ollama | Pull model qwen2.5:0.5b"]


def test_a_deleted_model_is_pulled_again_by_deploy(ollama_host, steady):
    ollama_host.run('curl -fsS -X DELETE 127.0.0.1:11434/api/delete -d \'{"model": "qwen2.5:0.5b"}\'')
    failed, changes = named_then_repaired(steady, "Ollama model deleted", "models")
    assert failed["reason"].startswith("not pulled: qwen2.5:0.5b (the server has ")
    assert changes == ["Ollama | Pull model qwen2.5:0.5b"]


def test_a_keep_alive_edited_on_the_host_is_restored_by_deploy(ollama_host, steady):
    dropin = "/etc/systemd/system/ollama.service.d/override.conf"
    ollama_host.run(
        f"sed -i 's/OLLAMA_KEEP_ALIVE=-1/OLLAMA_KEEP_ALIVE=5m/' {dropin} && grep -q OLLAMA_KEEP_ALIVE=5m {dropin} && "
        "systemctl daemon-reload && systemctl restart ollama.service"
    )
    failed, changes = named_then_repaired(steady, "Ollama keep-alive edited on the host", "keep_alive")
    assert failed["reason"].endswith("OLLAMA_KEEP_ALIVE did not reach the server"), failed["reason"]
    # The edited drop-in (5m) equals the first release's, so it is a recorded release already: none is kept.
    assert changes == [
        f"Ollama | File {dropin}",
        "Ollama | systemd daemon-reload",
        "Ollama | Restart ollama.service (its files or binary changed)",
        "Ollama | Record the release of ollama (gpuctl history)",
    ]


# ---- releases side by side: a failed upgrade rolled back, gpuctl rollback, history -----------------

BROKEN = "0.13.2"


def gpuctl_json(*args: str) -> tuple[int, dict, str]:
    result = subprocess.run(["gpuctl", *args, "--json"], capture_output=True, text=True, timeout=600)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def ollama_releases(inventory: Path) -> list[dict]:
    code, report, stderr = gpuctl_json("history", str(inventory))
    assert code == 0, stderr
    [row] = report["engines"]
    assert row["engine"] == "ollama"
    return row["releases"]


def test_an_upgrade_that_fails_verify_is_rolled_back_by_switching_to_the_release_beside_it(
    ollama_host, steady, tmp_path
):
    """Ollama 0.13.2, with a good checksum, whose runner dies on every model load (real upgrades have done
    that on some machines: ollama/ollama#8770, #11447; the stand-in's runner-exit fault). `deploy --verify`
    installs it beside 0.13.0, verify names the failure, and the host goes back to 0.13.0 by switching
    links: 0.13.0's folder is taken off the mirror first, so going back cannot download."""
    before = ollama_releases(steady)
    mirror.publish(ollama_host, BROKEN, broken=True)
    ollama_host.run(f"mv {mirror.MIRROR_DIR}/v{VERSION} {mirror.MIRROR_DIR}/hidden-v{VERSION}")
    try:
        upgrade = write_inventory(tmp_path / "broken.py", ollama_host, version=BROKEN, keep_alive="-1")
        code, report, stderr = gpuctl_deploy(upgrade, "--verify")
    finally:
        ollama_host.run(f"mv {mirror.MIRROR_DIR}/hidden-v{VERSION} {mirror.MIRROR_DIR}/v{VERSION}")
    assert code == 1, stderr
    [batch] = report["batches"]
    assert batch["failed_hosts"] == ["ollama"]
    assert f"Ollama | Install Ollama {BROKEN} (was {VERSION}), sha256 verified" in batch["deploy"][0]["changes"]
    failed = [c for r in batch["verify"] for c in r["checks"] if not c["ok"]]
    assert failed[0]["name"] == "chat", failed
    assert "llama runner process has terminated: exit status 2" in failed[0]["reason"]
    [back] = batch["rollbacks"]
    assert back["ok"], json.dumps(back)
    assert (back["engine"], back["restored"], back["ok"], back["to_release"]) == (
        "ollama",
        True,
        True,
        next(r["id"] for r in before if r["current"]),
    )
    assert get_json(f"http://{ollama_host.address}:11434/api/version") == {"version": VERSION}
    assert {VERSION, BROKEN} <= set(ollama_host.run("ls /usr/local/lib/gpuctl-ollama").stdout.split())
    assert ollama_host.run("readlink /usr/local/bin/ollama").stdout.strip() == (
        f"../lib/gpuctl-ollama/{VERSION}/bin/ollama"
    )
    human = subprocess.run(["gpuctl", "history", str(upgrade)], capture_output=True, text=True, timeout=120)
    assert f"ollama {BROKEN}" in human.stdout and "failed" in human.stdout, human.stdout
    after = ollama_releases(steady)
    assert [(r["ollama_version"], r["verify"], r["current"]) for r in after[-2:]] == [
        (VERSION, "passed", True),
        (BROKEN, "failed", False),
    ]


def test_gpuctl_rollback_returns_ollama_to_the_verified_release_before_the_live_one(ollama_host, steady, tmp_path):
    """0.40.2 deployed and verified (switched to: it is installed beside the others), then `gpuctl rollback
    --engine ollama` returns to the last verified release before it, 0.13.0 with its keep-alive, skipping
    the failed 0.13.2; a deploy of the same inventory then records nothing and restarts nothing."""
    mirror.publish(ollama_host, "0.40.2")
    newer = write_inventory(tmp_path / "newer.py", ollama_host, version="0.40.2", keep_alive="1h")
    code, report, stderr = gpuctl_deploy(newer, "--verify")
    assert code == 0, stderr
    assert get_json(f"http://{ollama_host.address}:11434/api/version") == {"version": "0.40.2"}
    code, report, stderr = gpuctl_json("rollback", str(newer), "--engine", "ollama", "--yes")
    assert code == 0, stderr
    [back] = report["engines"]
    assert (back["engine"], back["restored"], back["ok"]) == ("ollama", True, True)
    assert get_json(f"http://{ollama_host.address}:11434/api/version") == {"version": VERSION}
    config = get_json(f"http://{ollama_host.address}:11434/api/standin/config")
    assert config["env"]["OLLAMA_KEEP_ALIVE"] == "-1"
    listed = ollama_releases(steady)
    live = next(r for r in listed if r["current"])
    assert (live["id"], live["ollama_version"], live["verify"]) == (back["to_release"], VERSION, "passed")
    pid = main_pid(ollama_host)
    code, report, stderr = gpuctl_deploy(steady, "--verify")
    assert code == 0, stderr
    assert report["batches"][0]["deploy"][0]["changes"] == [] and main_pid(ollama_host) == pid
    assert len(ollama_releases(steady)) == len(listed)
