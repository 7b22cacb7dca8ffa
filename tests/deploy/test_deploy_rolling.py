"""Rolling, health-gated deploys on three real fleet hosts: batches, verify after each, automatic rollback.

Stand-in, named: the vLLM image is the container STAND-IN (harness/images.py) with `gpu_access="none"`, under
three tags: v1 (`v0.32.0`), a good v2 (`v0.32.0-build2`) and a broken v2 (`v0.32.0-broken`: the stand-in
with VLLM_STANDIN_FAULT=hang, so it starts, its healthcheck and /health pass, and it never gives a token).
Real: systemd, Docker, Compose, SSH, pyinfra, the release records on the hosts, verify's checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness import images
from harness.fleet import Fleet, Host

pytestmark = pytest.mark.fleet

V1 = "gpuctl-test/vllm-standin:v0.32.0"
V2 = "gpuctl-test/vllm-standin:v0.32.0-build2"
BROKEN = "gpuctl-test/vllm-standin:v0.32.0-broken"
ENV = {**os.environ, "GPUCTL_TEST_VLLM_KEY": "sk-rolling-1f3870be274f6c49b3e31a0c6728957f"}
PORT = 8000
FIGURES: dict[str, float] = {}


def write_inventory(path: Path, hosts: list[Host], image: str, rollout: str = "None") -> Path:
    entries = "".join(
        f"    Host({h.name!r}, address={h.address!r}, ssh_key={str(h.ssh_key)!r}, "
        f"ssh_known_hosts_file={str(h.known_hosts)!r}),\n"
        for h in hosts
    )
    defaults = textwrap.dedent(f"""
        fleet_defaults = Defaults(
            rollout={rollout},
            docker=dict(packages=["docker.io", "docker-compose-plugin"]),
            vllm=Vllm(image={image!r}, model="org/tiny-model", served_model_name="tiny", gpu_access="none",
                      bind="0.0.0.0", unsafe_public_bind=True, start_timeout_s=120,
                      api_key=Secret.env("GPUCTL_TEST_VLLM_KEY")),
        )
    """)
    imports = "from gpuctl.inventory import Defaults, Host, Rollout, Secret, Vllm"
    path.write_text(f"{imports}\nfleet = [\n{entries}]\n{defaults}")
    return path


def gpuctl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gpuctl", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def started_at(host: Host) -> str:
    return host.run("docker inspect -f '{{.State.StartedAt}}' gpuctl-vllm-main").stdout.strip()


def image_of(host: Host) -> str:
    return host.run("docker inspect -f '{{.Config.Image}}' gpuctl-vllm-main").stdout.strip()


def prepare(fleet: Fleet, host: Host) -> None:
    images.install_docker(host)
    images.load_vllm_standin(fleet, host, V1)
    host.run(f"docker tag {V1} {V2}")
    hang = "--change 'ENV VLLM_STANDIN_FAULT=hang'"
    host.run(f"docker create --name broken-base {V1} && docker commit {hang} broken-base {BROKEN}")
    host.run("docker rm broken-base")


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> Iterator[list[Host]]:
    """Destroyed at the module's end: each booted host holds inotify instances (a limit of 128 per user)."""
    three = [fleet.new_host(f"roll{i}") for i in (1, 2, 3)]
    try:
        images.vllm_standin_rootfs(fleet)  # built once, before the three imports
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda h: prepare(fleet, h), three))
        yield three
    finally:
        for host in three:
            host.destroy()


@pytest.fixture(scope="module")
def inventories(hosts: list[Host], tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inv")
    tags = {"v1": V1, "v2": V2, "broken": BROKEN}
    paths = {name: write_inventory(folder / f"{name}.py", hosts, image) for name, image in tags.items()}
    paths["broken-setting"] = write_inventory(folder / "setting.py", hosts, BROKEN, "Rollout(batch=1, max_failed=1)")
    first = gpuctl("deploy", str(paths["v1"]), "--verify", "--yes", "--json")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    return paths


class HealthWatch:
    """Polls every host's /health from outside (this machine), bounded, recording which fail at each round."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts, self.rounds, self.stop = hosts, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def ok(self, host: Host) -> bool:
        try:
            with urllib.request.urlopen(f"http://{host.address}:{PORT}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def run(self) -> None:
        for _ in range(3000):  # at most ~10 minutes
            if self.stop.is_set():
                return
            self.rounds.append([h.name for h in self.hosts if not self.ok(h)])
            time.sleep(0.2)

    def __enter__(self) -> HealthWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_a_broken_release_stops_the_rollout_at_the_first_host_which_is_rolled_back(hosts, inventories):
    before = {h.name: started_at(h) for h in hosts}
    result = gpuctl("deploy", str(inventories["broken"]), "--rolling", "1", "--gen-timeout", "5", "--yes", "--json")
    assert result.returncode == 1, result.stdout[-3000:]
    rollout = json.loads(result.stdout)
    assert rollout["planned"] == [["roll1"], ["roll2"], ["roll3"]] and rollout["untouched"] == ["roll2", "roll3"]
    [batch] = rollout["batches"]
    assert batch["failed_hosts"] == ["roll1"]
    failed = [c for r in batch["verify"] for c in r["checks"] if not c["ok"]]
    assert failed[0]["name"] == "chat" and failed[0]["reason"].startswith("engine not generating")
    assert failed[0]["details"], "the engine's last log lines come with the failed check"
    [back] = batch["rollbacks"]
    assert (back["host"], back["restored"], back["ok"]) == ("roll1", True, True)
    assert image_of(hosts[0]) == V1
    assert {h.name: started_at(h) for h in hosts[1:]} == {h: before[h] for h in ("roll2", "roll3")}


def test_a_groups_rollout_setting_rolls_a_plain_deploy_and_goes_past_max_failed_hosts_only(hosts, inventories):
    """`Rollout(batch=1, max_failed=1)` on the group, a plain `gpuctl deploy` (no flags), the broken release:
    roll1 fails and is rolled back, the rollout goes on (one failure allowed), roll2 fails and is rolled
    back, and that second failure stops it: roll3 is not touched. The human summary says each step."""
    before = started_at(hosts[2])
    result = gpuctl("deploy", str(inventories["broken-setting"]), "--gen-timeout", "5", "--yes")
    assert result.returncode == 1, result.stderr[-3000:]
    err = result.stderr
    assert "Rollout(batch=1, max_failed=1): 3 batch(es), each verified: roll1 | roll2 | roll3" in err
    for name in ("roll1", "roll2"):
        assert f"FAILED {name}: vllm:main: chat: engine not generating" in err
        assert f"{name}: vllm:main: rolled back to " in err
    assert err.count("verify passed") == 2
    assert "the rollout stopped: 2 failed host(s) in Rollout(batch=1, max_failed=1): more than max_failed=1" in err
    assert "not touched (the rollout stopped): roll3" in err
    assert [image_of(h) for h in hosts] == [V1, V1, V1] and started_at(hosts[2]) == before


def test_a_good_release_rolls_one_host_at_a_time_and_the_others_keep_serving(hosts, inventories):
    started = time.monotonic()
    with HealthWatch(hosts) as watch:
        result = gpuctl("deploy", str(inventories["v2"]), "--rolling", "1", "--yes", "--json")
    FIGURES["rolling_3_hosts_batch_1_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-3000:]
    rollout = json.loads(result.stdout)
    assert [b["hosts"] for b in rollout["batches"]] == [["roll1"], ["roll2"], ["roll3"]]
    assert all(not b["rollbacks"] and all(r["ok"] for r in b["verify"]) for b in rollout["batches"])
    assert [image_of(h) for h in hosts] == [V2, V2, V2]
    starts = [started_at(h) for h in hosts]
    assert starts == sorted(starts), "each host started after the one before it"
    assert watch.rounds and all(len(down) <= 1 for down in watch.rounds), [d for d in watch.rounds if len(d) > 1]
    assert any(watch.rounds), "a restart was seen at all (the watch would have noticed an outage)"


def test_an_unchanged_rollout_records_nothing_and_restarts_nothing(hosts, inventories):
    before = {h.name: started_at(h) for h in hosts}
    history = gpuctl("history", str(inventories["v2"]), "--json").stdout
    result = gpuctl("deploy", str(inventories["v2"]), "--rolling", "1", "--yes", "--json")
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(o["changes"] == [] for b in json.loads(result.stdout)["batches"] for o in b["deploy"])
    assert {h.name: started_at(h) for h in hosts} == before
    assert gpuctl("history", str(inventories["v2"]), "--json").stdout == history


def test_rollback_of_one_host_skips_the_failed_releases_and_history_shows_them_all(hosts, inventories):
    result = gpuctl("rollback", str(inventories["v2"]), "--limit", "roll1", "--yes", "--json")
    assert result.returncode == 0, result.stdout[-3000:]
    assert image_of(hosts[0]) == V1 and image_of(hosts[1]) == V2
    [row] = json.loads(gpuctl("history", str(inventories["v2"]), "--limit", "roll1", "--json").stdout)["engines"]
    # v1, the broken release twice (the first test tried it twice, rolled back both times), v2.
    assert [(r["image"], r["verify"]) for r in row["releases"]] == [
        (V1, "passed"),
        (BROKEN, "failed"),
        (BROKEN, "failed"),
        (V2, "passed"),
    ]
    assert [r["current"] for r in row["releases"]] == [True, False, False, False]


def test_releases_hold_no_secret_and_a_named_or_unknown_release_is_handled(hosts, inventories):
    root = "/var/lib/gpuctl/releases/vllm-main"
    key = ENV["GPUCTL_TEST_VLLM_KEY"]
    assert hosts[0].run(f"stat -c '%a %U' {root}").stdout.strip() == "700 root"
    assert hosts[0].run(f"ls {root}/*/vllm.env 2>/dev/null || true").stdout == ""  # the env file is not copied
    assert hosts[0].run(f"grep -rl {key} {root} || true").stdout == ""
    [row] = json.loads(gpuctl("history", str(inventories["v2"]), "--limit", "roll1", "--json").stdout)["engines"]
    newest_v2 = row["releases"][-1]["id"]
    named = gpuctl("rollback", str(inventories["v2"]), "--limit", "roll1", "--to", newest_v2, "--yes", "--json")
    assert named.returncode == 0, named.stdout[-2000:]
    assert image_of(hosts[0]) == V2
    missing = gpuctl("rollback", str(inventories["v2"]), "--limit", "roll1", "--to", "20000101T000000Z", "--yes")
    assert missing.returncode == 1 and "no release 20000101T000000Z (recorded: " in missing.stdout
    assert image_of(hosts[0]) == V2
    human = gpuctl("history", str(inventories["v2"]), "--limit", "roll1")
    assert human.returncode == 0 and newest_v2 in human.stdout and "live" in human.stdout
    back = gpuctl("rollback", str(inventories["v2"]), "--limit", "roll1", "--yes", "--json")  # to v1 again
    assert back.returncode == 0 and image_of(hosts[0]) == V1


def test_a_dry_rolling_run_shows_the_batches_and_what_each_host_would_change(hosts, inventories):
    result = gpuctl("deploy", str(inventories["v1"]), "--dry", "--rolling", "2", "--json")
    assert result.returncode == 0, result.stdout[-3000:]
    planned = json.loads(result.stdout)
    assert planned["dry"] and planned["batches"] == [["roll1", "roll2"], ["roll3"]]
    changes = {o["host"]: o["changes"] for o in planned["hosts"]}
    assert changes["roll1"] == [] and changes["roll2"] and changes["roll3"]  # roll1 already runs v1
    assert "--rolling 2: 2 batch(es), each verified: roll1, roll2 | roll3" in result.stderr
    assert [image_of(h) for h in hosts] == [V1, V2, V2], "a dry run changes nothing"


def test_a_host_that_goes_silent_stops_the_rollout_and_a_rerun_converges(hosts, inventories):
    """Fault: roll2 stops answering (every packet dropped) after roll1's batch is planned."""
    before = started_at(hosts[2])
    hosts[1].silence()
    try:
        result = gpuctl("deploy", str(inventories["v1"]), "--rolling", "1", "--yes", "--json")
    finally:
        hosts[1].unsilence()
    assert result.returncode == 1, result.stdout[-3000:]
    rollout = json.loads(result.stdout)
    assert [b["failed_hosts"] for b in rollout["batches"]] == [[], ["roll2"]]
    assert rollout["untouched"] == ["roll3"] and started_at(hosts[2]) == before
    [back] = rollout["batches"][1]["rollbacks"]
    assert back["host"] == "roll2" and "cannot list releases" in back["error"]
    rerun = gpuctl("deploy", str(inventories["v1"]), "--rolling", "1", "--yes", "--json")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert [image_of(h) for h in hosts] == [V1, V1, V1]


def test_verify_without_rolling_changes_every_host_at_once_and_verifies_them(hosts, inventories):
    started = time.monotonic()
    result = gpuctl("deploy", str(inventories["v2"]), "--verify", "--yes", "--json")
    FIGURES["parallel_3_hosts_verify_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-3000:]
    [batch] = json.loads(result.stdout)["batches"]
    assert batch["hosts"] == ["roll1", "roll2", "roll3"] and batch["failed_hosts"] == []
    assert [image_of(h) for h in hosts] == [V2, V2, V2]
    print(f"\nrolling vs parallel (3 stand-in hosts): {json.dumps(FIGURES)}")
