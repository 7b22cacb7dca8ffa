"""Commands on an inventory host over plain OpenSSH (or locally), and SSH tunnels to loopback ports."""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from gpuctl.access import Connection
from gpuctl.spec import HostSpec

CONNECT_TIMEOUT_S = 5


@dataclass
class Output:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Remote:
    """Run commands on HOST: `ssh` with the inventory's connection settings (sudo as deploy uses it), or locally."""

    def __init__(self, host: HostSpec) -> None:
        self.host = host
        self.connection = Connection.of(host)

    def ssh_base(self) -> list[str]:
        return [*self.connection.ssh_argv(CONNECT_TIMEOUT_S), self.connection.destination]

    def run(self, command: str, timeout: float = 30) -> Output:
        if self.connection.sudo:
            command = f"sudo -n sh -c {shlex.quote(command)}"
        argv = ["sh", "-c", command] if self.connection.local else [*self.ssh_base(), command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Output(124, "", f"timed out after {timeout:g} s")
        return Output(done.returncode, done.stdout, done.stderr)

    def reachable(self) -> Output:
        result = self.run("true", timeout=CONNECT_TIMEOUT_S + 10)
        if result.rc == 255:
            result.stderr = (result.stderr.strip().splitlines() or ["ssh failed"])[-1]
        return result

    @contextlib.contextmanager
    def tunnel(self, remote_host: str, remote_port: int, timeout: float = 15) -> Iterator[str]:
        """Forward a free local port to REMOTE_HOST:REMOTE_PORT as seen from the host; yield the base URL."""
        local = free_port()
        argv = [
            *self.ssh_base()[:-1],
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"127.0.0.1:{local}:{remote_host}:{remote_port}",
            self.ssh_base()[-1],
        ]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=0.5):
                    break
                time.sleep(0.1)
            if process.poll() is not None:
                raise ConnectionError(
                    f"ssh tunnel to {remote_host}:{remote_port} failed: {process.stderr.read().strip()}"
                )
            yield f"http://127.0.0.1:{local}"
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.poll() is None:
                process.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
