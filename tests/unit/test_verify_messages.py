"""What verify says when an endpoint cannot be reached: sentences a person can act on, not reprs.

Each case makes the failure for real on loopback (a closed port, a server that closes the connection,
a name that cannot resolve in the reserved .invalid domain, RFC 6761) and reads the reason's text.
"""

from __future__ import annotations

import socket
import threading

import requests

from gpuctl.verify.checks import Check, run_check, unreachable


def get(url: str) -> Check:
    def call() -> Check:
        requests.get(url, timeout=5)
        return Check("version", True, "answered")

    return run_check("version", call)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_said_with_the_address_and_the_cause():
    port = closed_port()
    check = get(f"http://127.0.0.1:{port}/api/version")
    assert (
        check.reason == f"nothing answers on 127.0.0.1:{port} (connection refused): is the engine deployed and running?"
    )
    assert unreachable(check)


def test_a_name_that_does_not_resolve_says_so():
    check = get("http://gpu-01.invalid:8000/health")
    assert check.reason == "cannot resolve gpu-01.invalid: check the host's address"
    assert unreachable(check)


def test_a_server_that_hangs_up_is_named():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(1024)
            conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        check = get(f"http://127.0.0.1:{port}/health")
        thread.join(timeout=5)
    assert (
        check.reason == f"127.0.0.1:{port} closed the connection without answering: is the engine starting or crashing?"
    )
    assert not unreachable(check)
    assert "Error(" not in check.reason and "HTTPConnection" not in check.reason


def test_a_host_without_engines_is_said_plainly(tmp_path):
    """This machine as a host with no engine: verify reaches it (no SSH for local=True) and says so."""
    import json
    import textwrap

    from harness.cli import run_cli

    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "bare.py").write_text(
        textwrap.dedent("""
        from gpuctl.inventory import Host
        g = [Host("bare", local=True)]
    """)
    )
    result = run_cli("verify", "bare", "--json", cwd=tmp_path)
    assert result.exit_code == 0
    [report] = json.loads(result.stdout)["engines"]
    assert [(c["name"], c["ok"], c["reason"]) for c in report["checks"]] == [("engines", True, "no engine in the spec")]
