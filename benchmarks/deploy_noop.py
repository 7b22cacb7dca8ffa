"""Print gpuctl deploy's costs on the systemd-nspawn test fleet: first deploy, then no-op redeploys,
for 1 and for 10 hosts (Ollama engine; its server is the test STAND-IN from a local mirror).

Run as root on a machine that can run the test fleet:  python benchmarks/deploy_noop.py [--hosts 1,10]
Printed figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import mirror  # noqa: E402
from harness.fleet import Fleet  # noqa: E402

VERSION = "0.13.0"


def inventory_for(hosts, folder: Path) -> Path:
    entries = ", ".join(
        f"Host({h.name!r}, address={h.address!r}, ssh_key={str(h.ssh_key)!r}, "
        f"ssh_known_hosts_file={str(h.known_hosts)!r}, ssh_strict_host_key_checking='yes')"
        for h in hosts
    )
    path = folder / f"bench{len(hosts)}.py"
    path.write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Defaults, Host, Ollama
        bench = [{entries}]
        bench_defaults = Defaults(ollama=Ollama(version={VERSION!r}, cpu_fallback=True, archive_format="tgz",
                                                release_url={mirror.MIRROR_URL!r}, models=["tinyllama"]))
    """)
    )
    return path


def timed_deploy(inventory: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(["gpuctl", "deploy", str(inventory), "--yes", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"deploy failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", default="1,10")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.hosts.split(",")]
    with Fleet.open() as fleet, tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            hosts = [fleet.new_host(f"bench{count}-{i}") for i in range(count)]
            for host in hosts:
                mirror.serve(host)
                mirror.publish(host, VERSION)
            inventory = inventory_for(hosts, Path(tmp))
            first = timed_deploy(inventory)
            noop = [timed_deploy(inventory) for _ in range(args.repeats)]
            print(
                f"{count:>3} host(s): first deploy {first:6.2f} s; "
                f"no-op redeploy median {statistics.median(noop):5.2f} s "
                f"(min {min(noop):.2f}, max {max(noop):.2f}, {args.repeats} runs)"
            )
            for host in hosts:
                host.destroy()


if __name__ == "__main__":
    main()
