"""How fast the systemd-nspawn test fleet comes up, and what an idle host costs.

Prints (no assertions): the first-build time of the base image and the local apt repository (if
they had to be built), boot-to-SSH time for each of 3 hosts, and idle memory (PSS) per host.

Run as root from the repository root::

    python benchmarks/fleet_boot.py [--hosts 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import aptrepo  # noqa: E402
from harness.fleet import Fleet, missing_prerequisites, reap_stale_runs  # noqa: E402


def describe_build(what: str, seconds: float | None) -> str:
    """One line about a cached artifact: built now (how long) or found in the cache."""
    return f"{what}: " + ("cached" if seconds is None else f"built in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3, help="hosts to boot (default 3)")
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds to let the hosts settle before measuring memory"
    )
    args = parser.parse_args(argv)
    missing = missing_prerequisites()
    if missing:
        print("cannot run:", "; ".join(missing))
        return 1
    reap_stale_runs()
    base = aptrepo.ensure_base_image()
    repo = aptrepo.ensure_apt_repo(base)
    print(describe_build("base image", base.build_seconds))
    print(describe_build("local apt repository", repo.build_seconds))
    with Fleet(base, repo) as fleet:
        hosts = []
        for i in range(args.hosts):
            started = time.monotonic()
            host = fleet.new_host(f"bench-{i + 1}")
            took = time.monotonic() - started
            hosts.append(host)
            print(f"{host.name} ({host.address}): boot to SSH {took:.2f} s")
        for host in hosts:
            host.run("timeout 60 systemctl is-system-running --wait", check=False)
        time.sleep(args.idle)
        for host in hosts:
            pss, rss = host.memory_bytes("Pss"), host.memory_bytes("Rss")
            print(f"{host.name}: idle memory {pss / 2**20:.0f} MiB PSS, {rss / 2**20:.0f} MiB RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
