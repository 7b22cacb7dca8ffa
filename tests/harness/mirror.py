"""A local Ollama release mirror for fleet hosts (no internet), laid out like the real releases.

Each published version holds exactly the files gpuctl.outside.ollama_release_files says that release
has (darwin, windows, linux amd64/arm64, rocm, jetpack…), `.tgz` Linux archives before 0.14.0 and
`.tar.zst` after, and a sha256sum.txt shaped like the real one ('<sha256>  ./<file>', unsorted). The
Linux archives' `ollama` binary is the Ollama STAND-IN (harness/ollama_standin.py; the real server
cannot run here); every other file is a small placeholder with a correct checksum. Served over HTTP
on the host's loopback by python3 -m http.server.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

from gpuctl.outside import ollama_release_files
from harness.fleet import Host

STANDIN = Path(__file__).with_name("ollama_standin.py")
MIRROR_DIR = "/srv/ollama-mirror"
MIRROR_PORT = 8099
MIRROR_URL = f"http://127.0.0.1:{MIRROR_PORT}/v{{version}}"


def release_tar(version: str, *, broken: bool = False) -> bytes:
    """The uncompressed tar of a Linux archive, laid out like the real one: bin/ollama and lib/ollama/…
    Like Ollama, the binary finds its files in ../lib/ollama beside its real path (links resolved), so
    releases installed side by side each run their own. BROKEN: the server starts and answers, but every
    model load fails as a runner that cannot start does (a release that fails verify, with a good checksum)."""
    fault = "OLLAMA_STANDIN_FAULT=runner-exit " if broken else ""
    wrapper = (
        "#!/bin/sh\n# Ollama STAND-IN for tests (see harness/ollama_standin.py)\n"
        'here=$(dirname "$(readlink -f "$0")")\n'
        f'{fault}OLLAMA_STANDIN_VERSION="{version}" exec python3 "$here/../lib/ollama/ollama_standin.py" "$@"\n'
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in (
            ("bin/ollama", wrapper.encode(), 0o755),
            ("lib/ollama/ollama_standin.py", STANDIN.read_bytes(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def compress(data: bytes, name: str) -> bytes:
    """gzip for .tgz, the zstd program for .tar.zst (Python 3.11 has no zstd module)."""
    if name.endswith(".tgz"):
        return gzip.compress(data, mtime=0)
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


def release_files(version: str, *, broken: bool = False) -> dict[str, bytes]:
    """Every file of VERSION's release: real (stand-in) Linux archives, placeholders for the rest."""
    payload = release_tar(version, broken=broken)
    files = {}
    for name in ollama_release_files(version):
        if name.startswith("ollama-linux-") and ("-amd64." in name or "-arm64." in name):
            files[name] = compress(payload, name)
        else:
            files[name] = f"placeholder for {name} of Ollama {version} (test mirror)\n".encode()
    return files


def checksum_file(files: dict[str, bytes], corrupt: str | None = None) -> str:
    """sha256sum.txt as the release job writes it; CORRUPT names a file whose line is wrong."""
    lines = []
    for name, data in reversed(list(files.items())):  # `find` order, not sorted
        digest = hashlib.sha256(data + (b"x" if name == corrupt else b"")).hexdigest()
        lines.append(f"{digest}  ./{name}\n")
    return "".join(lines)


def publish(host: Host, version: str, *, corrupt: bool = False, broken: bool = False) -> None:
    """Put VERSION's release in the host's mirror (CORRUPT: a wrong checksum for the amd64 archive; BROKEN:
    a good checksum, but a server that never generates)."""
    files = release_files(version, broken=broken)
    folder = f"{MIRROR_DIR}/v{version}"
    amd64 = next(name for name in files if name.startswith("ollama-linux-amd64."))
    for name, data in files.items():
        host.write_file(f"{folder}/{name}", data)
    host.write_file(f"{folder}/sha256sum.txt", checksum_file(files, corrupt=amd64 if corrupt else None))


def serve(host: Host) -> None:
    """Start the mirror's HTTP server on the host's loopback (idempotent)."""
    host.run(f"mkdir -p {MIRROR_DIR}")
    if host.run("systemctl is-active gpuctl-test-mirror", check=False).stdout.strip() != "active":
        host.run(
            "systemd-run --unit=gpuctl-test-mirror python3 -m http.server "
            f"--bind 127.0.0.1 --directory {MIRROR_DIR} {MIRROR_PORT}"
        )
    probe = f'python3 -c "import urllib.request; urllib.request.urlopen(\\"http://127.0.0.1:{MIRROR_PORT}/\\")"'
    host.run(f"timeout 20 sh -c 'until {probe} 2>/dev/null; do sleep 0.2; done'")


def local_release(root: Path, version: str, *, corrupt: bool = False) -> str:
    """A file:// release folder for VERSION under ROOT/mirror, laid out like the real one; returns its URL."""
    folder = root / "mirror" / f"v{version}"
    folder.mkdir(parents=True)
    files = release_files(version)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    amd64 = next(n for n in files if n.startswith("ollama-linux-amd64."))
    (folder / "sha256sum.txt").write_text(checksum_file(files, corrupt=amd64 if corrupt else None))
    return f"file://{folder}"


def shipped_inventory(name: str, version: str) -> str:
    """The README's example inventories/NAME.py with only its Ollama release URL pointed at the host's mirror
    (no internet); it must pin VERSION once."""
    from harness.cli import REPO

    text = (REPO / "inventories" / f"{name}.py").read_text()
    pin = f'version="{version}",'
    assert text.count(pin) == 1, f"the test expects {name}.py to pin {version} once"
    return text.replace(pin, f"{pin} release_url={MIRROR_URL!r},")
