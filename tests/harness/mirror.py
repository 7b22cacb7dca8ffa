"""A local Ollama release mirror for fleet hosts (no internet): a release archive whose `ollama`
binary is the Ollama STAND-IN (harness/ollama_standin.py; the real server cannot run here), with
the release's sha256sum.txt, served over HTTP on the host's loopback by python3 -m http.server."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from harness.fleet import Host

STANDIN = Path(__file__).with_name("ollama_standin.py")
MIRROR_DIR = "/srv/ollama-mirror"
MIRROR_PORT = 8099
MIRROR_URL = f"http://127.0.0.1:{MIRROR_PORT}/v{{version}}"


def release_archive(version: str) -> bytes:
    """ollama-linux-amd64.tgz laid out like the real one: bin/ollama and lib/ollama/…"""
    wrapper = (
        "#!/bin/sh\n# Ollama STAND-IN for tests (see harness/ollama_standin.py)\n"
        f'OLLAMA_STANDIN_VERSION="{version}" exec python3 /usr/local/lib/ollama/ollama_standin.py "$@"\n'
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, mode in (
            ("bin/ollama", wrapper.encode(), 0o755),
            ("lib/ollama/ollama_standin.py", STANDIN.read_bytes(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def publish(host: Host, version: str, *, corrupt: bool = False) -> None:
    """Put VERSION's archive and sha256sum.txt in the host's mirror (CORRUPT: a wrong checksum)."""
    archive = release_archive(version)
    digest = hashlib.sha256(archive + (b"x" if corrupt else b"")).hexdigest()
    folder = f"{MIRROR_DIR}/v{version}"
    host.write_file(f"{folder}/ollama-linux-amd64.tgz", archive)
    host.write_file(f"{folder}/sha256sum.txt", f"{digest}  ./ollama-linux-amd64.tgz\n{'0' * 64}  ./other.tgz\n")


def serve(host: Host) -> None:
    """Start the mirror's HTTP server on the host's loopback (idempotent)."""
    host.run(f"mkdir -p {MIRROR_DIR}")
    if host.run("systemctl is-active gpuctl-test-mirror", check=False).stdout.strip() != "active":
        host.run(
            "systemd-run --unit=gpuctl-test-mirror python3 -m http.server "
            f"--bind 127.0.0.1 --directory {MIRROR_DIR} {MIRROR_PORT}"
        )
    host.run(f"timeout 20 sh -c 'until python3 -c \"import urllib.request; urllib.request.urlopen(\\\"http://127.0.0.1:{MIRROR_PORT}/\\\")\" 2>/dev/null; do sleep 0.2; done'")
