"""The outside-facts table (gpuctl/outside.py) and everything that must agree with it.

What these tests cannot reach — a real Ollama release's files, a package name on a distribution —
is recorded in gpuctl.outside with its source and date. These tests keep the spec's defaults, the
example inventories and the README consistent with that table, and run Ollama's installer script
(templates/ollama/install-ollama.sh) for real, with sh and curl, against local folders laid out like
real releases (file:// mirrors; the archives' binary is the Ollama stand-in).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuctl import inventory, outside
from gpuctl.errors import GpuctlError
from gpuctl.render import templates_dir
from gpuctl.spec import HostSpec, OllamaSpec
from harness import mirror
from harness.cli import REPO

SCRIPT = templates_dir() / "ollama" / "install-ollama.sh"
EXAMPLES = ("prod", "dev-laptop", "vagrant", "cpu-server")


def test_every_fact_names_its_source_and_date():
    assert len(outside.FACTS) >= 4
    for fact in outside.FACTS:
        assert fact.topic and fact.statement and len(fact.source) > 20, fact
        assert re.fullmatch(r"20\d\d-\d\d-\d\d", fact.checked), fact


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.13.0", "tgz"),
        ("0.13.5", "tgz"),
        ("0.14.0", "tar.zst"),
        ("0.14.0-rc1", "tar.zst"),
        ("0.40.2", "tar.zst"),
    ],
)
def test_ollama_archive_format_by_release(version, expected):
    assert outside.ollama_archive_format(version) == expected


def test_archive_candidates_follow_the_host_architecture_and_prefer_what_the_release_ships():
    current = OllamaSpec(version="0.40.2")
    assert current.archive_candidates("x86_64") == ["ollama-linux-amd64.tar.zst", "ollama-linux-amd64.tgz"]
    assert current.archive_candidates("aarch64") == ["ollama-linux-arm64.tar.zst", "ollama-linux-arm64.tgz"]
    assert OllamaSpec(version="0.13.5").archive_candidates("x86_64") == [
        "ollama-linux-amd64.tgz",
        "ollama-linux-amd64.tar.zst",
    ]
    pinned = OllamaSpec(
        version="0.40.2", arch="arm64", archive_format="tar.zst", release_url="https://mirror.example/v{version}"
    )
    assert pinned.archive_candidates("x86_64") == ["ollama-linux-arm64.tar.zst"]
    with pytest.raises(GpuctlError, match="amd64 and arm64 only; this host is 'riscv64'"):
        current.archive_candidates("riscv64")


def test_forcing_a_format_the_real_release_lacks_is_refused_unless_a_mirror_repackages():
    with pytest.raises(ValueError, match=r"archive_format: Ollama 0.40.2 is released as .tar.zst only"):
        OllamaSpec(version="0.40.2", archive_format="tgz")
    with pytest.raises(ValueError, match=r"archive_format: Ollama 0.13.0 is released as .tgz only"):
        OllamaSpec(version="0.13.0", archive_format="tar.zst")
    assert OllamaSpec(version="0.40.2", archive_format="tgz", release_url="file:///srv/repackaged/v{version}")


@pytest.mark.parametrize("version", ["0.13.5", "0.14.0", "0.16.0", "0.40.2"])
def test_test_mirrors_list_what_the_real_release_lists(version):
    names = outside.ollama_release_files(version)
    linux = [n for n in names if n.startswith("ollama-linux-")]
    assert "ollama-darwin.tgz" in names and "OllamaSetup.exe" in names  # other platforms' files stay in the list
    suffix = ".tgz" if version == "0.13.5" else ".tar.zst"
    assert linux and all(n.endswith(suffix) for n in linux), linux
    assert ("install.sh" in names) == (version in ("0.16.0", "0.40.2"))
    listing = mirror.checksum_file(dict.fromkeys(names, b"x"))
    assert all(re.fullmatch(r"[0-9a-f]{64}  \./\S+", line) for line in listing.splitlines())


# ---- the installer script, run for real ----------------------------------------------------


def test_installer_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (CI installs it)")
    result = subprocess.run(["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def install(tmp_path: Path, version: str, source: str, *candidates: str) -> subprocess.CompletedProcess[str]:
    args = [version, source, str(tmp_path / "downloads"), str(tmp_path / "root/usr/local"), *candidates]
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def installed(tmp_path: Path) -> tuple[str, str]:
    lib = tmp_path / "root/usr/local/lib/ollama"
    return (lib / ".gpuctl-version").read_text().strip(), (lib / ".gpuctl-archive").read_text().strip()


@pytest.mark.parametrize(
    ("version", "arch", "archive"),
    [
        ("0.13.5", "x86_64", "ollama-linux-amd64.tgz"),
        ("0.40.2", "x86_64", "ollama-linux-amd64.tar.zst"),
        ("0.40.2", "aarch64", "ollama-linux-arm64.tar.zst"),
        ("0.13.0", "aarch64", "ollama-linux-arm64.tgz"),
    ],
)
def test_installer_takes_the_archive_the_release_lists(tmp_path, version, arch, archive):
    source = mirror.local_release(tmp_path, version)
    result = install(tmp_path, version, source, *OllamaSpec(version=version).archive_candidates(arch))
    assert result.returncode == 0, result.stderr
    assert installed(tmp_path) == (version, archive)
    ollama = tmp_path / "root/usr/local/bin/ollama"
    assert ollama.stat().st_mode & 0o111 and f'OLLAMA_STANDIN_VERSION="{version}"' in ollama.read_text()
    assert (tmp_path / "root/usr/local/lib/ollama/ollama_standin.py").is_file()


def test_installer_names_the_release_when_it_lists_no_acceptable_archive(tmp_path):
    source = mirror.local_release(tmp_path, "0.40.2")
    result = install(tmp_path, "0.40.2", source, "ollama-linux-amd64.tgz")  # forced, but this release has none
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"the release at {source} lists none of: ollama-linux-amd64.tgz (in its sha256sum.txt)"
    )
    assert not (tmp_path / "root/usr/local/bin/ollama").exists()


def test_installer_says_when_the_release_does_not_exist(tmp_path):
    result = install(tmp_path, "0.99.0", f"file://{tmp_path}/nowhere/v0.99.0", "ollama-linux-amd64.tar.zst")
    assert result.returncode == 1
    assert (
        f"cannot read file://{tmp_path}/nowhere/v0.99.0/sha256sum.txt: is the version or release_url wrong?"
        in result.stderr
    )


def test_installer_keeps_the_installed_version_on_a_checksum_mismatch(tmp_path):
    assert (
        install(tmp_path, "0.13.5", mirror.local_release(tmp_path, "0.13.5"), "ollama-linux-amd64.tgz").returncode == 0
    )
    bad = mirror.local_release(tmp_path, "0.40.2", corrupt=True)
    result = install(tmp_path, "0.40.2", bad, "ollama-linux-amd64.tar.zst", "ollama-linux-amd64.tgz")
    assert result.returncode == 1
    assert "checksum mismatch for ollama-linux-amd64.tar.zst: expected" in result.stderr
    assert installed(tmp_path) == ("0.13.5", "ollama-linux-amd64.tgz")


def versions_on(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "root/usr/local/lib/gpuctl-ollama").iterdir())


def live_binary(tmp_path: Path) -> Path:
    return (tmp_path / "root/usr/local/bin/ollama").resolve()


def test_releases_are_installed_side_by_side_and_a_switch_back_needs_no_download(tmp_path):
    old = install(tmp_path, "0.13.5", mirror.local_release(tmp_path, "0.13.5"), "ollama-linux-amd64.tgz")
    new = install(tmp_path, "0.40.2", mirror.local_release(tmp_path, "0.40.2"), "ollama-linux-amd64.tar.zst")
    assert (old.returncode, new.returncode) == (0, 0), old.stderr + new.stderr
    assert versions_on(tmp_path) == ["0.13.5", "0.40.2"]
    assert installed(tmp_path) == ("0.40.2", "ollama-linux-amd64.tar.zst")
    assert live_binary(tmp_path) == tmp_path / "root/usr/local/lib/gpuctl-ollama/0.40.2/bin/ollama"
    assert list((tmp_path / "downloads").iterdir()) == []  # each archive is removed once unpacked
    # The binary finds its own release's files beside its real path, as Ollama does (links resolved).
    ran = subprocess.run([str(tmp_path / "root/usr/local/bin/ollama"), "--help"], capture_output=True, text=True)
    assert ran.returncode == 0 and "STAND-IN" in ran.stdout, ran.stderr
    shutil.rmtree(tmp_path / "mirror")  # no release reachable: switching back must not download
    back = install(tmp_path, "0.13.5", f"file://{tmp_path}/mirror/v0.13.5", "ollama-linux-amd64.tgz")
    assert back.returncode == 0, back.stderr
    assert "Ollama 0.13.5 is installed side by side: switching to it" in back.stdout
    assert installed(tmp_path) == ("0.13.5", "ollama-linux-amd64.tgz")
    assert versions_on(tmp_path) == ["0.13.5", "0.40.2"]


def test_three_releases_are_kept_the_live_one_and_the_two_activated_before_it(tmp_path):
    for version in ("0.13.0", "0.13.5", "0.34.4", "0.40.2"):
        result = install(
            tmp_path,
            version,
            mirror.local_release(tmp_path, version),
            "ollama-linux-amd64.tar.zst",
            "ollama-linux-amd64.tgz",
        )
        assert result.returncode == 0, result.stderr
    assert versions_on(tmp_path) == ["0.13.5", "0.34.4", "0.40.2"]
    assert "removed Ollama 0.13.0 (older than 3 kept)" in result.stdout
    # Switching back to 0.13.5 makes it the newest activated: 0.34.4 goes when another release comes.
    assert install(tmp_path, "0.13.5", "file:///nowhere", "ollama-linux-amd64.tgz").returncode == 0
    assert install(tmp_path, "0.13.0", f"file://{tmp_path}/mirror/v0.13.0", "ollama-linux-amd64.tgz").returncode == 0
    assert versions_on(tmp_path) == ["0.13.0", "0.13.5", "0.40.2"]
    assert installed(tmp_path)[0] == "0.13.0"


def test_an_install_from_before_side_by_side_releases_is_kept_as_one(tmp_path):
    """gpuctl used to install into /usr/local/lib/ollama and /usr/local/bin/ollama themselves."""
    lib, binary = tmp_path / "root/usr/local/lib/ollama", tmp_path / "root/usr/local/bin/ollama"
    lib.mkdir(parents=True)
    binary.parent.mkdir(parents=True)
    (lib / ".gpuctl-version").write_text("0.12.6\n")
    binary.write_text("#!/bin/sh\necho old\n")
    binary.chmod(0o755)
    result = install(tmp_path, "0.40.2", mirror.local_release(tmp_path, "0.40.2"), "ollama-linux-amd64.tar.zst")
    assert result.returncode == 0, result.stderr
    assert "kept the installed Ollama 0.12.6 side by side" in result.stdout
    assert versions_on(tmp_path) == ["0.12.6", "0.40.2"]
    kept = tmp_path / "root/usr/local/lib/gpuctl-ollama/0.12.6"
    assert (kept / "bin/ollama").read_text() == "#!/bin/sh\necho old\n"
    assert (kept / "lib/ollama/.gpuctl-version").read_text() == "0.12.6\n"
    assert lib.is_symlink() and binary.is_symlink() and installed(tmp_path)[0] == "0.40.2"


# ---- consistency of pins with the table ------------------------------------------------------


def example_hosts() -> list[HostSpec]:
    return [h for name in EXAMPLES for h in inventory.load(name, cwd=REPO).hosts.values()]


def test_example_inventories_pin_the_current_ollama_and_force_no_archive():
    ollama = [h.ollama for h in example_hosts() if h.ollama is not None]
    assert len(ollama) == 2
    for spec in ollama:
        assert spec.version == outside.OLLAMA_VERSION
        assert (spec.archive_format, spec.arch, spec.release_url) == ("auto", "auto", outside.OLLAMA_RELEASES)


def test_readme_names_the_pinned_versions():
    readme = (REPO / "README.md").read_text()
    assert f"Ollama {outside.OLLAMA_VERSION}" in readme


def test_example_gpu_hosts_pin_the_tables_vllm_image_driver_branch_and_toolkit():
    gpu_hosts = [h for h in example_hosts() if h.gpus is not None]
    assert len(gpu_hosts) == 3
    for host in gpu_hosts:
        assert {engine.image for engine in host.vllm} == {outside.VLLM_IMAGE}
        assert host.driver is not None and host.driver.branch == outside.DRIVER_BRANCH
        assert host.container_toolkit.version == outside.TOOLKIT_VERSION
        assert outside.max_cuda_of_driver(f"{host.driver.branch}.0") == "13.0"  # what the CUDA 13 images need


def test_readme_pin_table_matches_the_outside_table():
    readme = (REPO / "README.md").read_text()
    pins = (f"`{outside.VLLM_IMAGE}`", f"branch {outside.DRIVER_BRANCH}", f"| {outside.TOOLKIT_VERSION} |")
    for text in (*pins, f"`{outside.DCGM_EXPORTER_IMAGE}`"):
        assert text in readme, text


def test_the_dcgm_exporter_is_pinned_to_the_release_whose_counters_the_rules_read():
    """The image tag is DCGM-EXPORTER-VARIANT of one release, never latest, and the default counters the
    alert rules and dashboard read were checked at that same tag."""
    tag = outside.DCGM_EXPORTER_IMAGE.rsplit(":", 1)[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+\.\d+\.\d+-(distroless|ubuntu22\.04|ubi9)", tag), tag
    release = tag.rsplit("-", 1)[0]
    assert f"tags {release}" in (outside.__doc__ or "") + outside_doc("DCGM_DEFAULT_COUNTERS")


def outside_doc(name: str) -> str:
    """The docstring written under a constant of gpuctl/outside.py (where each fact's source is)."""
    source = (REPO / "gpuctl" / "outside.py").read_text()
    return source.split(f"{name} = ", 1)[1].split('"""', 2)[1]


def test_example_cpu_hosts_pin_the_tables_cpu_image_and_use_no_gpu():
    cpu_engines = [e for h in example_hosts() for e in h.vllm if e.device == "cpu"]
    assert cpu_engines, "inventories/cpu-server.py has a CPU engine"
    assert {e.image for e in cpu_engines} == {outside.VLLM_CPU_IMAGE}
    assert {e.expected_version() for e in cpu_engines} == {outside.VLLM_IMAGE.rsplit(":v", 1)[1]}
    assert all(e.gpu_access == "none" and e.gpus is None for e in cpu_engines)
    assert f"`{outside.VLLM_CPU_IMAGE}`" in (REPO / "README.md").read_text()


def test_rendered_commands_rely_on_the_images_entrypoint():
    """The image's ENTRYPOINT is `vllm serve`: the compose command holds only its arguments."""
    assert outside.VLLM_ENTRYPOINT == ("vllm", "serve")
    for host in example_hosts():
        for engine in host.vllm:
            args = engine.command_args()
            assert args[0] not in outside.VLLM_ENTRYPOINT and "serve" not in args, args[:3]


def test_versions_compare_across_ollama_tags_and_apt_versions():
    assert outside.version_tuple("v0.14.0-rc1") == (0, 14, 0)
    assert outside.version_tuple("1.18.0~rc.1-1") == (1, 18, 0)
    assert outside.version_tuple(outside.TOOLKIT_VERSION) >= outside.TOOLKIT_CDI_REFRESH_SINCE
    assert outside.version_tuple("1.17.9-1") < outside.TOOLKIT_CDI_REFRESH_SINCE


def test_an_install_gpuctl_did_not_make_survives_a_failed_download_and_is_replaced_after_a_good_one(tmp_path):
    """Ollama's own installer leaves /usr/local/lib/ollama without gpuctl's version marker: it is replaced only
    once the new release is downloaded and verified."""
    lib, binary = tmp_path / "root/usr/local/lib/ollama", tmp_path / "root/usr/local/bin/ollama"
    (lib / "cuda_v12").mkdir(parents=True)
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\necho upstream\n")
    bad = mirror.local_release(tmp_path, "0.40.2", corrupt=True)
    assert install(tmp_path, "0.40.2", bad, "ollama-linux-amd64.tar.zst").returncode == 1
    assert (lib / "cuda_v12").is_dir() and not lib.is_symlink() and binary.read_text().endswith("upstream\n")
    good = mirror.local_release(tmp_path / "good", "0.40.2")
    assert install(tmp_path, "0.40.2", good, "ollama-linux-amd64.tar.zst").returncode == 0
    assert lib.is_symlink() and installed(tmp_path)[0] == "0.40.2" and versions_on(tmp_path) == ["0.40.2"]
