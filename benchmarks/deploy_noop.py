"""Print gpuctl deploy's costs on the systemd-nspawn test fleet beside raw pyinfra (and ansible-core when
installed) doing comparable idempotent work on the same hosts, in the same run (issue #20).

Each host serves Ollama (the test STAND-IN from a local mirror) behind gpuctl's gateway and firewall. The
fleet boots 20 hosts; the per-user inotify instance limit is raised for the run and restored after.

- first deploy of 1 host and of 10 fresh hosts;
- no-op redeploys of 1, 5, 10 and 20 hosts (`gpuctl deploy --yes`), interleaved with raw pyinfra's CLI
  (`pyinfra -y`, 10 idempotent operations of the kinds gpuctl runs: directories, files, a group, a
  package, a service, a link) and, if `ansible-playbook` is on PATH, ansible-core with the same 10 tasks;
  medians of --repeats runs. Printed per tool: wall time, controller CPU (user+system of the tool's
  process tree), the hosts' CPU (their processes, reaped children included), and for gpuctl the SSH
  channels per host of one no-op (counted in-process: harness/ssh_channels.py).

Run as root on a machine that can run the test fleet:
    python benchmarks/deploy_noop.py [--hosts 1,5,10,20] [--repeats 3]
Printed figures only; nothing here asserts a time. Goals: 20 hosts <= 1.5x one host; gpuctl <= 1.5x raw
pyinfra on 10 hosts; >= 3x faster than ansible-core. On the test fleet every host shares this machine's CPUs:
the hosts' CPU column bounds the wall time of many hosts (raw pyinfra's own 20-host/1-host ratio shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import mirror, ssh_channels  # noqa: E402
from harness.fleet import Fleet, Host, cgroup_pids  # noqa: E402

VERSION = "0.13.0"
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_FOR_RUN = 2048


def gpuctl_inventory(hosts: list[Host], folder: Path) -> Path:
    """One inventory of every host (one keystore: one CA and key per host); runs pick hosts with --limit."""
    entries = ", ".join(f"Host({h.name!r}, {h.reach})" for h in hosts)
    path = folder / "bench.py"
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Defaults, Gateway, Host, Ollama
        bench = [{entries}]
        bench_defaults = Defaults(gateway=Gateway(), ollama=Ollama(
            version={VERSION!r}, cpu_fallback=True, release_url={mirror.MIRROR_URL!r}, models=["qwen2.5:0.5b"]))
    """)
    )
    return path


PYINFRA_DEPLOY = """
from io import StringIO
from pyinfra.operations import apt, files, server, systemd

files.directory(name="dir a", path="/opt/bench/a", present=True, mode="0755")
files.directory(name="dir b", path="/opt/bench/b", present=True, mode="0755")
files.directory(name="dir c", path="/opt/bench/c", present=True, mode="0700")
files.put(name="file a", src=StringIO("a\\n"), dest="/opt/bench/a/conf", mode="0644")
files.put(name="file b", src=StringIO("b\\n"), dest="/opt/bench/b/conf", mode="0644")
files.put(name="file c", src=StringIO("c\\n"), dest="/opt/bench/c/conf", mode="0600")
server.group(name="group", group="bench", system=True)
apt.packages(name="package", packages=["curl"], no_recommends=True)
systemd.service(name="service", service="ssh.service", running=True, enabled=True)
files.link(name="link", path="/opt/bench/link", target="/opt/bench/a/conf")
"""

ANSIBLE_PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - {file: {path: /opt/ansible/a, state: directory, mode: "0755"}}
    - {file: {path: /opt/ansible/b, state: directory, mode: "0755"}}
    - {file: {path: /opt/ansible/c, state: directory, mode: "0700"}}
    - {copy: {content: "a\\n", dest: /opt/ansible/a/conf, mode: "0644"}}
    - {copy: {content: "b\\n", dest: /opt/ansible/b/conf, mode: "0644"}}
    - {copy: {content: "c\\n", dest: /opt/ansible/c/conf, mode: "0600"}}
    - {group: {name: bench, system: true}}
    - {apt: {name: curl, install_recommends: false}}
    - {systemd: {name: ssh.service, state: started, enabled: true}}
    - {file: {src: /opt/ansible/a/conf, dest: /opt/ansible/link, state: link}}
"""


def pyinfra_inventory(hosts: list[Host], folder: Path) -> Path:
    rows = ",\n    ".join(
        f"({h.address!r}, {{'ssh_user': 'root', 'ssh_key': {str(h.ssh_key)!r}, "
        f"'ssh_known_hosts_file': {str(h.known_hosts)!r}, 'ssh_strict_host_key_checking': 'yes'}})"
        for h in hosts
    )
    path = folder / f"pyinfra_inventory{len(hosts)}.py"
    path.write_text(f"hosts = [\n    {rows},\n]\n")
    return path


def ansible_inventory(hosts: list[Host], folder: Path) -> Path:
    path = folder / f"ansible{len(hosts)}.ini"
    lines = [
        f"{h.address} ansible_user=root ansible_ssh_private_key_file={h.ssh_key} "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={h.known_hosts} -o StrictHostKeyChecking=yes'"
        for h in hosts
    ]
    path.write_text("[all]\n" + "\n".join(lines) + "\n")
    return path


def hosts_cpu(hosts: list[Host]) -> float:
    """CPU seconds of every process of HOSTS, with the children they reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for host in hosts:
        for pid in cgroup_pids(host.cgroups[0]):
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(f) for f in fields[11:15])
    return total / tick


def measured(command: list[str], hosts: list[Host], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall s, controller CPU s, hosts' CPU s) of COMMAND, which must succeed."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    host_cpu = hosts_cpu(hosts)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return wall, controller, hosts_cpu(hosts) - host_cpu


def median_row(label: str, runs: list[tuple[float, float, float]], count: int) -> str:
    wall, ctl, hcpu = (statistics.median(r[i] for r in runs) for i in range(3))
    return (
        f"  {label:<13} {count:>3} host(s): wall {wall:6.2f} s  controller CPU {ctl:5.2f} s  "
        f"hosts' CPU {hcpu:5.2f} s ({hcpu / count:.2f} s/host)  [{len(runs)} runs, min wall "
        f"{min(r[0] for r in runs):.2f}]"
    )


def limit(hosts: list[Host]) -> list[str]:
    return [arg for h in hosts for arg in ("--limit", h.name)]


def gpuctl_deploy(inventory: Path, hosts: list[Host]) -> list[str]:
    return ["gpuctl", "deploy", str(inventory), *limit(hosts), "--yes"]


def channels_of_noop(inventory: Path, hosts: list[Host]) -> list[int]:
    """SSH channels per host of one no-op deploy, gpuctl.fleet in this process."""
    from gpuctl import fleet
    from gpuctl import inventory as inventories
    from gpuctl.keystore import Keystore

    inv = inventories.load(str(inventory))
    for _ in range(2):  # a deploy right after a first one may still settle something: then once more
        with ssh_channels.counting() as counts:
            chosen = inv.select([h.name for h in hosts])
            outcomes = fleet.deploy(chosen, inv.base_dir, keystore=Keystore.for_inventory(inv.path))
        changed = {o.name: o.changes or o.error for o in outcomes if o.status != "unchanged"}
        if not changed:
            return [counts[h.address] for h in hosts]
        print(f"  (not a no-op yet: {changed})", flush=True)
    raise SystemExit("the deploy is not a no-op")


@contextlib.contextmanager
def inotify_raised() -> Iterator[None]:
    before = INOTIFY.read_text().strip()
    INOTIFY.write_text(str(max(int(before), INOTIFY_FOR_RUN)))
    try:
        yield
    finally:
        INOTIFY.write_text(before)


def first_deploys(hosts: list[Host], inventory: Path) -> None:
    """First deploy of 1 host, of 10 fresh hosts, then (untimed) of the rest."""
    start = 0
    for size, timed in ((1, True), (10, True), (len(hosts) - 11, False)):
        group = hosts[start : start + size]
        start += size
        if not group:
            continue
        wall, ctl, hcpu = measured(gpuctl_deploy(inventory, group), group)
        if timed:
            print(f"first deploy {size:>2} host(s): wall {wall:6.2f} s  controller CPU {ctl:5.2f} s", flush=True)


def compare(counts: list[int], hosts: list[Host], inventory: Path, folder: Path, repeats: int) -> None:
    ansible = shutil.which("ansible-playbook")
    playbook = folder / "bench.yml"
    playbook.write_text(ANSIBLE_PLAYBOOK)
    deploy_file = folder / "bench_deploy.py"
    deploy_file.write_text(PYINFRA_DEPLOY)
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_FORKS": "50"}
    for count in counts:
        group = hosts[:count]
        tools: dict[str, Callable[[], tuple[float, float, float]]] = {
            "gpuctl no-op": lambda g=group: measured(gpuctl_deploy(inventory, g), g),
            "raw pyinfra": lambda g=group: measured(
                ["pyinfra", str(pyinfra_inventory(g, folder)), str(deploy_file), "-y", "--parallel", "50"], g
            ),
        }
        if ansible:
            tools["ansible-core"] = lambda g=group: measured(
                [ansible, "-i", str(ansible_inventory(g, folder)), str(playbook)], g, env
            )
        for tool in tools.values():  # warm-up: the raw tools' first run changes their hosts
            tool()
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in tools}
        for _ in range(repeats):  # interleaved
            for name, tool in tools.items():
                runs[name].append(tool())
        print(f"no-op, {count} host(s):", flush=True)
        for name, rows in runs.items():
            print(median_row(name, rows, count), flush=True)
        ratio = statistics.median(r[0] for r in runs["gpuctl no-op"]) / statistics.median(
            r[0] for r in runs["raw pyinfra"]
        )
        print(f"  gpuctl / raw pyinfra: {ratio:.2f}x", flush=True)
        if "ansible-core" in runs:
            speedup = statistics.median(r[0] for r in runs["ansible-core"]) / statistics.median(
                r[0] for r in runs["gpuctl no-op"]
            )
            print(f"  ansible-core / gpuctl: {speedup:.2f}x", flush=True)
    if not ansible:
        print("ansible-core: not measured (ansible-playbook is not on PATH: pip install ansible-core)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", default="1,5,10,20")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.hosts.split(",")]
    total = max(counts + [11])
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {total} fleet hosts", flush=True)
    with inotify_raised(), Fleet.open() as fleet, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hosts = [fleet.new_host(f"nb{i}") for i in range(total)]
        try:
            for host in hosts:
                mirror.serve(host)
                mirror.publish(host, VERSION)
            inventory = gpuctl_inventory(hosts, folder)
            first_deploys(hosts, inventory)
            for count in (1, 10):
                channels = channels_of_noop(inventory, hosts[:count])
                print(f"SSH channels per host, one no-op of {count} host(s): {sorted(set(channels))}", flush=True)
            compare(counts, hosts, inventory, folder, args.repeats)
        finally:
            for host in hosts:
                host.destroy()


if __name__ == "__main__":
    main()
