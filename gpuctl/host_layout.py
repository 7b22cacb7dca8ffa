"""Every path on a host that gpuctl writes, reads or links, in one place.

Render, deploy and verify ask this module; nothing else spells a host path. Paths that belong to
other software (apt, Docker, nginx, certbot) are here too, so a newcomer finds in one hop which
files a host receives and where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

# -- gpuctl's own trees ---------------------------------------------------------------------------
PRIVATE_TREE = PurePosixPath("/etc/gpuctl")
"""gpuctl's configuration: its folders are 0700 root, so a secret uploaded there is never readable by others."""
STATE_DIR = PurePosixPath("/var/lib/gpuctl")
DOWNLOAD_DIR = PurePosixPath("/var/cache/gpuctl")
LIBEXEC_DIR = PurePosixPath("/usr/local/libexec/gpuctl")
SYSTEMD_DIR = PurePosixPath("/etc/systemd/system")

# -- vLLM -------------------------------------------------------------------------------------------
HF_CACHE_DIR = STATE_DIR / "huggingface"
"""Model weights, shared by every vLLM engine on the host (mounted as the container's HF cache)."""
WAIT_HEALTHY = LIBEXEC_DIR / "wait-healthy"
"""The unit's ExecStartPost: waits for the container's healthcheck (templates/vllm/wait-healthy.sh)."""
HEAL_ENGINES = LIBEXEC_DIR / "heal-engines"
"""Restarts an engine whose container is unhealthy, with backoff (templates/vllm/heal-engines.sh)."""
HEAL_SERVICE = SYSTEMD_DIR / "gpuctl-heal.service"
HEAL_TIMER = SYSTEMD_DIR / "gpuctl-heal.timer"
HEAL_STATE_DIR = PurePosixPath("/run/gpuctl/heal")
"""Restarts counted per engine while it stays unhealthy (cleared at boot and when it is healthy again)."""


def vllm_config_dir(engine: str) -> PurePosixPath:
    """Compose file and 0600 env file of vLLM engine ENGINE."""
    return PRIVATE_TREE / f"vllm-{engine}"


def vllm_cache_dir(engine: str) -> PurePosixPath:
    """vLLM's own compile cache of engine ENGINE (torch.compile, CUDA graphs)."""
    return STATE_DIR / f"vllm-{engine}"


RELEASES_DIR = STATE_DIR / "releases"
"""One 0700 folder per engine: the files of each release deployed (gpuctl.releases, templates/releases/release.sh)."""


def vllm_releases_dir(engine: str) -> PurePosixPath:
    """The recorded releases of vLLM engine ENGINE."""
    return RELEASES_DIR / f"vllm-{engine}"


def unit_path(unit: str) -> PurePosixPath:
    return SYSTEMD_DIR / unit


# -- Ollama -----------------------------------------------------------------------------------------
HOME = PurePosixPath("~")
"""The deploying user's home in a user-level install's paths: deploy resolves it from the host, and
scripts receive it as "$HOME" (gpuctl.deploy.scripts)."""


@dataclass(frozen=True)
class OllamaLayout:
    """Where Ollama lives on a host: system-wide (root, /usr/local, /etc/systemd/system) or, for a user-level
    install (Host(install="user")), in the user's home as a `systemctl --user` service."""

    unit: PurePosixPath
    dropin: PurePosixPath
    prefix: PurePosixPath
    """PREFIX/bin/ollama links the live release; PREFIX/lib/gpuctl-ollama/VERSION/{bin,lib/ollama} each release
    installed side by side (the live one and the two activated before it; templates/ollama/install-ollama.sh);
    PREFIX/lib/ollama links the live release's libraries."""
    download_dir: PurePosixPath
    releases_dir: PurePosixPath
    systemctl: str
    """The command that manages the unit (user-level: the user's own service manager)."""
    journalctl: str
    user_level: bool = False

    @property
    def binary(self) -> PurePosixPath:
        """A link to the live release's binary (Ollama finds its libraries beside the link's target)."""
        return self.prefix / "bin" / "ollama"

    @property
    def version_marker(self) -> PurePosixPath:
        return self.prefix / "lib" / "ollama" / ".gpuctl-version"

    def version_marker_of(self, version: str) -> PurePosixPath:
        """The version marker of release VERSION installed side by side (present once it is complete)."""
        return self.prefix / "lib" / "gpuctl-ollama" / version / "lib" / "ollama" / ".gpuctl-version"


OLLAMA_HOME = PurePosixPath("/usr/share/ollama")
OLLAMA_MODELS_DIR = OLLAMA_HOME / ".ollama" / "models"
SYSTEM_OLLAMA = OllamaLayout(
    unit=SYSTEMD_DIR / "ollama.service",
    dropin=SYSTEMD_DIR / "ollama.service.d" / "override.conf",
    prefix=PurePosixPath("/usr/local"),
    download_dir=DOWNLOAD_DIR / "ollama",
    releases_dir=RELEASES_DIR / "ollama",
    systemctl="systemctl",
    journalctl="journalctl",
)
USER_RUNTIME_DIR = '"${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"'
"""The user's service manager is found through XDG_RUNTIME_DIR, which a session without pam_systemd (su, cron,
some SSH setups) lacks: it is /run/user/UID whenever the manager runs (lingering)."""
USER_OLLAMA = OllamaLayout(
    unit=HOME / ".config" / "systemd" / "user" / "ollama.service",
    dropin=HOME / ".config" / "systemd" / "user" / "ollama.service.d" / "override.conf",
    prefix=HOME / ".local",
    download_dir=HOME / ".cache" / "gpuctl" / "ollama",
    releases_dir=HOME / ".local" / "state" / "gpuctl" / "releases" / "ollama",
    systemctl=f"XDG_RUNTIME_DIR={USER_RUNTIME_DIR} systemctl --user",
    journalctl="journalctl --user",
    user_level=True,
)
"""A user-level install: Ollama's files in the XDG folders of the user's home; models in ~/.ollama/models
(Ollama's own default for a user)."""


def at_home(path: PurePosixPath, home: str) -> PurePosixPath:
    """PATH with a leading ~ replaced by HOME (the user's home on the host)."""
    return PurePosixPath(home) / path.relative_to(HOME) if path.parts[:1] == ("~",) else path


# -- gateway (nginx) --------------------------------------------------------------------------------
GATEWAY_DIR = PRIVATE_TREE / "gateway"
GATEWAY_SECRETS = GATEWAY_DIR / "secrets.conf"
GATEWAY_TLS_CERT = GATEWAY_DIR / "tls" / "fullchain.pem"
GATEWAY_TLS_KEY = GATEWAY_DIR / "tls" / "key.pem"
NGINX_DIR = PurePosixPath("/etc/nginx")
NGINX_CONF = NGINX_DIR / "conf.d" / "gpuctl-gateway.conf"
NGINX_DEFAULT_SITE = PurePosixPath("/etc/nginx/sites-enabled/default")
ACME_WEBROOT = STATE_DIR / "acme"
LETSENCRYPT_LIVE = PurePosixPath("/etc/letsencrypt/live")

# -- fleet endpoints (nginx on the front host; gpuctl.endpoints) -------------------------------------
ENDPOINTS_DIR = PRIVATE_TREE / "endpoints"


def endpoint_dir(name: str) -> PurePosixPath:
    """Endpoint NAME's secrets (0600): its keys file, TLS key; and the CA it checks the hosts' gateways by."""
    return ENDPOINTS_DIR / name


def endpoint_tls(name: str) -> tuple[PurePosixPath, PurePosixPath]:
    """Endpoint NAME's certificate chain and key (with ACME: links to certbot's files)."""
    return endpoint_dir(name) / "tls" / "fullchain.pem", endpoint_dir(name) / "tls" / "key.pem"


def endpoint_site(name: str) -> PurePosixPath:
    return NGINX_DIR / "conf.d" / f"gpuctl-endpoint-{name}.conf"


# -- monitoring (the distribution's Prometheus and node exporter) -----------------------------------------
PROMETHEUS_DIR = PurePosixPath("/etc/prometheus")
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
PROMETHEUS_RULES = PROMETHEUS_DIR / "gpuctl-alerts.yml"
PROMETHEUS_TRUST = PROMETHEUS_DIR / "gpuctl-gateways-ca.pem"
"""The CAs of the gateways Prometheus scrapes (the inventory's private CA, provided ca_files)."""
PROMETHEUS_DEFAULTS = PurePosixPath("/etc/default/prometheus")
"""ARGS of the packaged prometheus.service: listen address, retention."""
BLACKBOX_CONFIG = PROMETHEUS_DIR / "blackbox.yml"
"""The blackbox exporter's module that probes the gateways (TLS up, certificate expiry)."""
BLACKBOX_DEFAULTS = PurePosixPath("/etc/default/prometheus-blackbox-exporter")
BLACKBOX_LISTEN = "127.0.0.1:9115"
NODE_EXPORTER_DEFAULTS = PurePosixPath("/etc/default/prometheus-node-exporter")
"""ARGS of the packaged prometheus-node-exporter.service: its listen port."""
DCGM_EXPORTER_UNIT_NAME = "gpuctl-dcgm-exporter.service"
DCGM_EXPORTER_CONTAINER = "gpuctl-dcgm-exporter"

# -- firewall (nftables) ----------------------------------------------------------------------------
FIREWALL_RULES = PRIVATE_TREE / "firewall.nft"
FIREWALL_UNIT = SYSTEMD_DIR / "gpuctl-firewall.service"

# -- packages: apt sources and keyrings, driver and toolkit settings ---------------------------------
APT_KEYRINGS_DIR = PurePosixPath("/etc/apt/keyrings")
DOCKER_KEYRING = APT_KEYRINGS_DIR / "docker.asc"
DOCKER_SOURCES = PurePosixPath("/etc/apt/sources.list.d/docker.list")
DOCKER_DAEMON_JSON = PurePosixPath("/etc/docker/daemon.json")
DOCKER_BIN = PurePosixPath("/usr/bin/docker")
"""Where Ubuntu's docker.io and Docker's docker-ce both install the client (the units call it by path)."""
TOOLKIT_KEYRING = PurePosixPath("/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg")
TOOLKIT_SOURCES = PurePosixPath("/etc/apt/sources.list.d/nvidia-container-toolkit.list")
NVIDIA_DEV_CHAR_RULE = PurePosixPath("/etc/udev/rules.d/71-nvidia-dev-char.rules")
NOUVEAU_BLACKLIST = PurePosixPath("/etc/modprobe.d/gpuctl-blacklist-nouveau.conf")
DRIVER_VERSION_FILE = PurePosixPath("/proc/driver/nvidia/version")
NVIDIA_MODULE_VERSION = PurePosixPath("/sys/module/nvidia/version")
"""The version of the loaded nvidia kernel module (absent when none is loaded)."""
PCI_DEVICES_DIR = PurePosixPath("/sys/bus/pci/devices")
"""The kernel's PCI devices (vendor, class and device of each), read where lspci is not installed."""


def folder_mode(folder: PurePosixPath) -> str:
    """0700 inside gpuctl's private tree, 0755 elsewhere."""
    return "0700" if folder == PRIVATE_TREE or PRIVATE_TREE in folder.parents else "0755"
