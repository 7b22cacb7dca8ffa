"""The typed host description: the single source of truth for every later step.

Rendering, deploying and verifying are all functions of a `HostSpec`. Engine command lines and
environments are computed here, once (`VllmSpec.command_args`, `OllamaSpec.environment`); templates
only format them.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gpuctl import host_layout, outside
from gpuctl.catalog import find_gpu
from gpuctl.catalog import normalized as normalized_gpu_name
from gpuctl.errors import GpuctlError

HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ENGINE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DURATION_RE = re.compile(r"^(-1|0|-?\d+(\.\d+)?(ns|us|ms|s|m|h)(\d+(\.\d+)?(ns|us|ms|s|m|h))*)$")
ADDRESS_NAME_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$"
)
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(-rc\d+)?$")

Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    """Base for every spec model: unknown fields are errors, values are re-checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


class SecretRef(Strict):
    """Where a secret lives on the machine that runs gpuctl: an environment variable or a file.

    The inventory holds only the reference; the value is read at deploy time and written only into
    a 0600 file on the host. Written in an inventory as `Secret.env("NAME")`, `Secret.file("PATH")`
    or the strings `"env:NAME"` / `"file:PATH"`.
    """

    env: str | None = None
    file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            kind, sep, rest = value.partition(":")
            if sep and kind in ("env", "file") and rest:
                return {kind: rest}
            # Never echo the value: it may be the secret itself.
            raise ValueError(
                "is a literal secret; keep it out of the inventory and write "
                'Secret.env("VAR_NAME") or Secret.file("path/to/file") instead'
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env= or file=")
        if self.env is not None and not ENV_NAME_RE.match(self.env):
            raise ValueError(f"env: {self.env!r} is not an environment variable name")
        return self

    def describe(self) -> str:
        """A printable name for the reference (never the value)."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"

    def resolve(self, base_dir: Path | None = None) -> str:
        """Read the secret's value on this machine; raise a GpuctlError naming the reference."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise GpuctlError(f"secret {self.describe()}: environment variable is not set")
            return value
        path = Path(os.path.expanduser(self.file or ""))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise GpuctlError(f"secret {self.describe()}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise GpuctlError(f"secret {self.describe()}: file {path} is empty")
        return value


# ---------------------------------------------------------------------------------------------
# Hardware
# ---------------------------------------------------------------------------------------------


class GpuSpec(Strict):
    """The host's NVIDIA GPUs (all of one model)."""

    model: str = Field(min_length=1, description="e.g. 'RTX 4090', 'H100 80GB'")
    count: int = Field(ge=1, le=16)
    memory_gib: float = Field(gt=0, le=1024, description="memory of one GPU in GiB")
    nvswitch: bool = Field(False, description="HGX/NVSwitch system: needs nvidia-fabricmanager")

    @model_validator(mode="after")
    def _memory_of_a_known_model(self) -> GpuSpec:
        """A model the catalog names exactly must have the catalog's memory (the planner trusts it)."""
        known = find_gpu(self.model)
        named_exactly = known is not None and normalized_gpu_name(known.name) in normalized_gpu_name(self.model)
        if named_exactly and abs(self.memory_gib - known.memory_gib) > max(1.0, 0.05 * known.memory_gib):
            raise FieldError(
                "memory_gib",
                f"an {known.name} has {known.memory_gib:g} GiB, not {self.memory_gib:g}: "
                "fix memory_gib or model (a model the catalog does not know keeps any memory)",
            )
        return self


class DriverSpec(Strict):
    """The NVIDIA driver to install (Ubuntu packaging)."""

    branch: int = Field(ge=470, le=999, description="driver branch, e.g. 570 or 580")
    server: bool = Field(True, description="the -server (long-term support) packages")
    open_kernel_modules: bool = Field(True, description="the -open kernel modules (Turing or newer)")
    headless: bool = Field(True, description="nvidia-headless-* (no X/desktop pieces)")
    allow_reboot: bool = Field(False, description="may gpuctl reboot the host to load a new driver")

    def package(self) -> str:
        """The Ubuntu package that installs this driver, e.g. nvidia-headless-580-server-open."""
        name = f"nvidia-{'headless' if self.headless else 'driver'}-{self.branch}"
        if self.server:
            name += "-server"
        if self.open_kernel_modules:
            name += "-open"
        return name

    def utils_package(self) -> str:
        """The package that ships nvidia-smi for this branch."""
        return f"nvidia-utils-{self.branch}" + ("-server" if self.server else "")

    def fabricmanager_package(self) -> str:
        return f"nvidia-fabricmanager-{self.branch}"


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def bracketed(address: str) -> str:
    """ADDRESS as it stands before :PORT in a URL or HOST:PORT: IPv6 literals in brackets."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def on_host_address(bind: str, port: int) -> str:
    """HOST:PORT to reach an engine bound to BIND from the host itself (loopback when it listens everywhere)."""
    return f"{bracketed({'0.0.0.0': '127.0.0.1', '::': '::1'}.get(bind, bind))}:{port}"


def parse_image(ref: str) -> tuple[str, str | None, str | None]:
    """Split an image reference into (repository, tag, digest); raise ValueError if malformed."""
    if not ref or any(c.isspace() for c in ref) or ref != ref.strip():
        raise ValueError("is not an image reference")
    name, _, digest = ref.partition("@")
    if digest and not DIGEST_RE.match(digest):
        raise ValueError(f"digest {digest!r} is not sha256:<64 hex digits>")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
            raise ValueError(f"tag {tag!r} is not a valid image tag")
    if not re.fullmatch(r"[a-z0-9]+([._/:-][a-z0-9]+)*", name):
        raise ValueError(f"repository {name!r} is not a valid image name")
    return name, tag, digest or None


class ModelArchitecture(Strict):
    """A model the capacity planner's catalog lacks: the numbers that decide memory (from its config.json)."""

    params_b: float = Field(gt=0, le=10_000, description="parameters, in billions")
    layers: int = Field(ge=1, le=1000)
    kv_heads: int = Field(ge=1, le=1024)
    head_dim: int = Field(ge=1, le=4096)
    max_context: int = Field(ge=16, le=10_485_760)
    exact_kv: bool = Field(True, description="False for sliding-window or MLA attention")


MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ModelSpec(Strict):
    """One model under one name on every engine (Ollama on laptops, vLLM in production): vLLM serves the
    VLLM weights as NAME; Ollama pulls the OLLAMA tag and copies it to NAME (its /api/copy). Applications
    send NAME to either and need no change between them."""

    name: str = Field(description="what clients send as model=, on every engine (no ':tag')")
    vllm: str | None = Field(None, description="the weights vLLM serves: Hugging Face repo id or container path")
    ollama: str | None = Field(None, description="the Ollama tag pulled and copied to NAME, e.g. llama3.1:8b")

    @field_validator("name")
    @classmethod
    def _one_name_for_both(cls, value: str) -> str:
        if not MODEL_NAME_RE.match(value):
            raise ValueError(
                f"{value!r}: use lowercase letters, digits, '.', '_' and '-' (a name both vLLM and Ollama serve "
                "as is; Ollama would add ':latest' to a name without a tag and reads ':' as one)"
            )
        return value


def full_model_name(model: str) -> str:
    """Ollama's full name of MODEL: qwen2.5:0.5b as is, llama3.1 as llama3.1:latest."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def identity_of(value: object, field: str) -> ModelSpec | None:
    """The ModelSpec an inventory gave at FIELD (a Model(...) builder arrives as a dict), or None."""
    if isinstance(value, ModelSpec):
        return value
    if not (isinstance(value, dict) and "name" in value):
        return None
    try:
        return ModelSpec.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in (field, *error["loc"]))
        raise FieldError(where, error["msg"].removeprefix("Value error, ")) from None


class VllmSpec(Strict):
    """One vLLM server, run by Docker Compose and owned by a systemd unit."""

    name: str = Field("main", description="engine name: unit gpuctl-vllm-NAME, compose project")
    image: str = Field(description="pinned image, e.g. vllm/vllm-openai:v0.11.0 (or @sha256:…)")
    version: str | None = Field(None, description="vLLM version the image holds (default: from tag)")
    model: str = Field(
        min_length=1, description="Hugging Face repo id or a path inside the container (or a Model(...))"
    )
    served_model_name: str | None = Field(None, description="name clients use (default: model, or the Model's name)")
    port: Port = 8000
    bind: str = Field("127.0.0.1", description="host address the port is published on")
    unsafe_public_bind: bool = Field(
        False, description="accept a non-loopback bind: vLLM's key guards only /v1, /metrics and others stay open"
    )
    gpu_memory_utilization: float = Field(0.90, gt=0, le=0.98)
    max_model_len: int | None = Field(None, ge=16, le=10_485_760)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = Field(1, ge=1, le=16)
    max_num_seqs: int | None = Field(None, ge=1, le=65536)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    quantization: str | None = Field(None, pattern=r"^[a-z0-9_-]+$", description="e.g. awq, fp8, compressed-tensors")
    gpus: list[Annotated[int, Field(ge=0, le=15)]] | None = Field(
        None, description="GPU indices this engine uses (default: the first tensor_parallel_size)"
    )
    gpu_access: Literal["reservation", "cdi", "none"] = Field(
        "reservation",
        description="how the container gets its GPUs: a Compose device reservation, CDI device "
        "names, or none (GPU-less rehearsal hosts only: the engine cannot run on a GPU)",
    )
    device: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="gpu: NVIDIA GPUs (vllm/vllm-openai); cpu: vLLM's CPU backend (an image of vLLM's CPU "
        "build), no GPU and no NVIDIA runtime, the KV cache in host RAM (cpu_kv_cache_gib)",
    )
    cpu_kv_cache_gib: int = Field(
        4,
        ge=1,
        le=16384,
        description="device='cpu' only: GiB of RAM for the KV cache (VLLM_CPU_KVCACHE_SPACE, whole GiB)",
    )
    offline: bool = Field(
        False,
        description="HF_HUB_OFFLINE=1: never contact the Hugging Face Hub (the model is already on the host)",
    )
    api_key: SecretRef | None = None
    hf_token: SecretRef | None = None
    extra_args: list[str] = Field(default_factory=list)
    architecture: ModelArchitecture | None = Field(None, description="for planning a model the catalog lacks")
    config_json: str | None = Field(None, description="or the model's config.json, read for planning")
    shm_size: str | None = Field(None, pattern=r"^\d+[kmg]?$", description="only if ipc=host is unwanted")
    start_timeout_s: int = Field(900, ge=60, le=7200, description="cold start allowed before failing")

    @model_validator(mode="before")
    @classmethod
    def _model_identity(cls, data: object) -> object:
        """model=Model(NAME, vllm=WEIGHTS): serve WEIGHTS as NAME."""
        if not isinstance(data, dict):
            return data
        identity = identity_of(data.get("model"), "model")
        if identity is None:
            return data
        if identity.vllm is None:
            raise FieldError("model", f"Model({identity.name!r}) names no vllm= weights for this vLLM engine")
        served = data.get("served_model_name")
        if served not in (None, identity.name):
            raise FieldError(
                "served_model_name",
                f"{served!r} differs from the Model's name {identity.name!r}: the Model names it on every engine",
            )
        return {**data, "model": identity.vllm, "served_model_name": identity.name}

    @model_validator(mode="before")
    @classmethod
    def _cpu_engines_have_no_gpu_access(cls, data: object) -> object:
        """device='cpu' means gpu_access='none', the one switch every GPU step already honours."""
        if isinstance(data, dict) and data.get("device") == "cpu" and "gpu_access" not in data:
            return {**data, "gpu_access": "none"}
        return data

    @field_validator("name")
    @classmethod
    def _engine_name(cls, value: str) -> str:
        if not ENGINE_NAME_RE.match(value):
            raise ValueError("must be lowercase letters, digits and '-' (at most 32)")
        return value

    @field_validator("image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        _, tag, digest = parse_image(value)
        if digest is None and tag is None:
            raise ValueError("is not pinned: add a version tag (e.g. :v0.11.0) or a digest")
        if digest is None and tag == "latest":
            raise ValueError("uses the 'latest' tag: pin a version tag (e.g. :v0.11.0) or a digest")
        return value

    @field_validator("bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address, e.g. 127.0.0.1") from None
        return value

    @field_validator("gpus")
    @classmethod
    def _distinct_gpus(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("lists a GPU twice")
        return value

    @field_validator("extra_args")
    @classmethod
    def _no_managed_flags(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_VLLM_FLAGS:
                raise ValueError(f"{flag} is set by its own field ({MANAGED_VLLM_FLAGS[flag]}), not extra_args")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> VllmSpec:
        if not is_loopback(self.bind) and not self.unsafe_public_bind:
            raise FieldError(
                "bind",
                f"{self.bind} publishes vLLM beyond this host, where its API key guards only "
                "/v1 (/metrics and the rest stay open): keep 127.0.0.1 and add gateway=Gateway() to the host "
                "(TLS and a key on every route), or set unsafe_public_bind=True to accept that risk",
            )
        if self.gpus is not None and self.tensor_parallel_size > len(self.gpus):
            raise FieldError(
                "tensor_parallel_size",
                f"is {self.tensor_parallel_size} but gpus lists {len(self.gpus)} GPU(s)",
            )
        self._check_choices_of_the_pinned_vllm()
        if self.device == "cpu":
            self._check_cpu_engine()
        elif "cpu_kv_cache_gib" in self.model_fields_set:
            raise FieldError(
                "cpu_kv_cache_gib",
                "is for device='cpu' engines (a GPU engine sizes its KV cache with gpu_memory_utilization)",
            )
        return self

    def _check_cpu_engine(self) -> None:
        """What a CPU engine cannot have: GPUs, GPU access, a VRAM fraction (vLLM 0.32's CPU backend reads
        --gpu-memory-utilization as a fraction of host RAM: platforms/cpu.py, v1/worker/cpu_worker.py)."""
        given = self.model_fields_set
        if self.gpus is not None:
            raise FieldError("gpus", "a device='cpu' engine uses no GPU: remove gpus=")
        if self.gpu_access != "none":
            raise FieldError("gpu_access", f"{self.gpu_access!r} gives GPUs to a device='cpu' engine: remove it")
        if "gpu_memory_utilization" in given:
            raise FieldError(
                "gpu_memory_utilization",
                "is for GPU engines (on vLLM's CPU backend it would reserve that fraction of host RAM): "
                "size the CPU engine's KV cache with cpu_kv_cache_gib",
            )

    def _check_choices_of_the_pinned_vllm(self) -> None:
        """--quantization and --kv-cache-dtype against what the image's vLLM version accepts (gpuctl.outside);
        an image of a version the table lacks is left to the preflight, which asks the image itself."""
        choices = outside.vllm_choices(self.image)
        if choices is None:
            return
        version = self.image.rsplit(":", 1)[-1]
        for field, value in (("quantization", self.quantization), ("kv_cache_dtype", self.kv_cache_dtype)):
            if value is not None and value not in choices[field]:
                close = difflib.get_close_matches(value, sorted(choices[field]), n=3, cutoff=0.5)
                hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
                raise FieldError(field, f"vLLM {version} does not accept {value!r}{hint}")

    # -- derived values --------------------------------------------------------------------

    systemctl: ClassVar[str] = "systemctl"
    journalctl: ClassVar[str] = "journalctl"

    @property
    def unit_name(self) -> str:
        return f"gpuctl-vllm-{self.name}.service"

    @property
    def label(self) -> str:
        """How gpuctl names the engine in every table and message: vllm:NAME."""
        return f"vllm:{self.name}"

    @property
    def project(self) -> str:
        """Compose project name (also the container name)."""
        return f"gpuctl-vllm-{self.name}"

    @property
    def config_dir(self) -> PurePosixPath:
        return host_layout.vllm_config_dir(self.name)

    @property
    def cache_dir(self) -> PurePosixPath:
        return host_layout.vllm_cache_dir(self.name)

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model

    def gpu_indices(self) -> list[int]:
        """The GPUs this engine uses."""
        return list(self.gpus) if self.gpus is not None else list(range(self.tensor_parallel_size))

    def expected_version(self) -> str | None:
        """The vLLM version the pinned image should report at /version, if known."""
        if self.version:
            return self.version
        _, tag, _ = parse_image(self.image)
        match = re.match(r"^v?(\d+\.\d+\.\d+(?:\.post\d+|rc\d+)?)", tag or "")
        return match.group(1) if match else None

    def environment(self) -> dict[str, str]:
        """Plain (non-secret) environment variables of the container, beside vLLM's telemetry opt-outs."""
        env = {}
        if self.device == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kv_cache_gib)
        if self.offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def secret_env(self) -> dict[str, SecretRef]:
        """Environment variables the container gets from the 0600 env file."""
        env: dict[str, SecretRef] = {}
        if self.api_key is not None:
            env["VLLM_API_KEY"] = self.api_key
        if self.hf_token is not None:
            env["HF_TOKEN"] = self.hf_token
        return env

    def command_args(self) -> list[str]:
        """The vLLM server's arguments, computed once here and only formatted by templates.

        The API key is not among them: it reaches the server as VLLM_API_KEY from the env file,
        so it never shows in `ps`, `docker inspect`'s command or the compose file.
        """
        args = [
            self.model,  # positional: `vllm serve MODEL` (the image's entrypoint); --model is deprecated in 0.32
            "--served-model-name",
            self.served_name,
            "--host",
            "0.0.0.0",
            "--port",
            str(CONTAINER_PORT),
        ]
        if self.device == "gpu":
            args += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        args += [
            "--kv-cache-dtype",
            self.kv_cache_dtype,
            "--tensor-parallel-size",
            str(self.tensor_parallel_size),
        ]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_seqs is not None:
            args += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.dtype != "auto":
            args += ["--dtype", self.dtype]
        if self.quantization:
            args += ["--quantization", self.quantization]
        args.append("--enable-chunked-prefill" if self.enable_chunked_prefill else "--no-enable-chunked-prefill")
        args.append("--enable-prefix-caching" if self.enable_prefix_caching else "--no-enable-prefix-caching")
        return args + list(self.extra_args)


CONTAINER_PORT = 8000
"""The port vLLM listens on inside its container; the host port is VllmSpec.port."""

MANAGED_VLLM_FLAGS = {
    "--model": "model",
    "--served-model-name": "served_model_name",
    "--host": "bind",
    "--port": "port",
    "--api-key": "api_key",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--max-num-seqs": "max_num_seqs",
    "--dtype": "dtype",
    "--quantization": "quantization",
    "--enable-chunked-prefill": "enable_chunked_prefill",
    "--no-enable-chunked-prefill": "enable_chunked_prefill",
    "--enable-prefix-caching": "enable_prefix_caching",
    "--no-enable-prefix-caching": "enable_prefix_caching",
}


class OllamaSpec(Strict):
    """Ollama from a pinned release archive, configured by a systemd drop-in."""

    version: str = Field(description="pinned release, e.g. 0.12.6")
    bind: str = Field("127.0.0.1", description="address in OLLAMA_HOST")
    unsafe_public_bind: bool = Field(
        False, description="accept a non-loopback OLLAMA_HOST: Ollama has no authentication at all"
    )
    port: Port = 11434
    keep_alive: str = Field("5m", description="OLLAMA_KEEP_ALIVE: 5m, 1h, -1 (forever), 0")
    num_parallel: int = Field(1, ge=1, le=64)
    max_loaded_models: int | None = Field(None, ge=1, le=64)
    max_queue: int | None = Field(None, ge=1, le=100_000)
    context_length: int | None = Field(None, ge=256, le=1_048_576)
    models_dir: str | None = Field(
        None,
        description="OLLAMA_MODELS (default: /usr/share/ollama/.ollama/models; for a user-level install "
        "Ollama's own ~/.ollama/models)",
    )
    flash_attention: bool = False
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    models: list[str] = Field(default_factory=list, description="models to pre-pull (tags, or Model(...)s)")
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="NAME: TAG: the pulled TAG copied to NAME at deploy (Ollama's /api/copy), so clients send NAME",
    )
    gpus: list[Annotated[int, Field(ge=0, le=15)]] | None = Field(
        None, description="GPU indices Ollama may use (default: all)"
    )
    cpu_fallback: bool = Field(False, description="allow running on the CPU when no GPU is usable")
    release_url: str = Field(
        outside.OLLAMA_RELEASES,
        description="where the release archive and sha256sum.txt are (a mirror, or file:///dir)",
    )
    arch: Literal["auto", "amd64", "arm64"] = Field(
        "auto", description="release archive architecture; auto: from the host (uname -m)"
    )
    archive_format: Literal["auto", "tar.zst", "tgz"] = Field(
        "auto",
        description="auto: whichever archive the release's sha256sum.txt lists (.tar.zst from 0.14.0, "
        ".tgz before); set only for a mirror that repackages releases",
    )

    @field_validator("version")
    @classmethod
    def _pinned_version(cls, value: str) -> str:
        if not VERSION_RE.match(value.removeprefix("v")):
            raise ValueError("must be a pinned release like 0.12.6 (not 'latest')")
        return value.removeprefix("v")

    @field_validator("bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        return VllmSpec._ip_address(value)

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not DURATION_RE.match(value):
            raise ValueError("must be a duration like 5m, 1h30m, 0 or -1")
        return value

    @model_validator(mode="before")
    @classmethod
    def _models_by_identity(cls, data: object) -> object:
        """models=[Model(NAME, ollama=TAG), ...]: pull TAG and name it NAME too."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return data
        tags, aliases = [], dict(data.get("aliases") or {})
        for index, entry in enumerate(data["models"]):
            identity = identity_of(entry, f"models.{index}")
            if identity is None:
                tags.append(entry)
                continue
            if identity.ollama is None:
                raise FieldError("models", f"Model({identity.name!r}) names no ollama= tag for Ollama to pull")
            tags.append(identity.ollama)
            if aliases.get(identity.name, identity.ollama) != identity.ollama:
                raise FieldError(
                    f"models.{index}",
                    f"{identity.name!r} names both {aliases[identity.name]!r} and {identity.ollama!r}: "
                    "one name, one model",
                )
            aliases[identity.name] = identity.ollama
        return {**data, "models": list(dict.fromkeys(tags)), "aliases": aliases}

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not MODEL_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a model name both engines serve as is (lowercase, no ':tag')")
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        for model in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?", model):
                raise ValueError(f"{model!r} is not an Ollama model name (e.g. llama3.1:8b)")
        return value

    @field_validator("models_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OllamaSpec:
        if not is_loopback(self.bind) and not self.unsafe_public_bind:
            raise FieldError(
                "bind",
                f"{self.bind} exposes Ollama, which has no authentication (anyone could "
                "pull, delete and run models: CVE-2024-37032): keep 127.0.0.1 and add gateway=Gateway() to the "
                "host (TLS and a key on every route), or set unsafe_public_bind=True to accept that risk",
            )
        if self.kv_cache_type != "f16" and not self.flash_attention:
            raise FieldError("kv_cache_type", f"{self.kv_cache_type} needs flash_attention=True")
        pulled = {full_model_name(m) for m in self.models}
        for name, tag in self.aliases.items():
            if full_model_name(tag) not in pulled:
                raise FieldError("aliases", f"{name!r} copies {tag!r}, which models= does not pull: add it there")
            if full_model_name(name) in pulled:
                raise FieldError("aliases", f"{name!r} is also a model models= pulls: copying would replace it")
        genuine = outside.ollama_archive_format(self.version)
        if self.release_url == outside.OLLAMA_RELEASES and self.archive_format not in ("auto", genuine):
            raise FieldError(
                "archive_format",
                f"Ollama {self.version} is released as .{genuine} only (.tar.zst "
                "from 0.14.0, .tgz before): remove archive_format and gpuctl picks what the release lists",
            )
        return self

    unit_name: ClassVar[str] = "ollama.service"
    _layout: host_layout.OllamaLayout = PrivateAttr(host_layout.SYSTEM_OLLAMA)
    """Set by the host: system-wide, or in the user's home for Host(install="user")."""

    @property
    def layout(self) -> host_layout.OllamaLayout:
        return self._layout

    @property
    def systemctl(self) -> str:
        return self._layout.systemctl

    @property
    def journalctl(self) -> str:
        return self._layout.journalctl

    def models_path(self) -> str | None:
        """OLLAMA_MODELS: the inventory's, else the system default (None for a user: Ollama's own default)."""
        if self.models_dir is not None or self._layout.user_level:
            return self.models_dir
        return str(host_layout.OLLAMA_MODELS_DIR)

    label: ClassVar[str] = "ollama"
    """How gpuctl names the engine in every table and message (a host has at most one Ollama)."""

    def archive_candidates(self, host_arch: str) -> list[str]:
        """Acceptable release archives for a host whose `uname -m` is HOST_ARCH, best first."""
        arch = self.arch if self.arch != "auto" else outside.OLLAMA_ARCHES.get(host_arch.strip())
        if arch is None:
            raise GpuctlError(f"Ollama publishes Linux archives for amd64 and arm64 only; this host is {host_arch!r}")
        return outside.ollama_linux_archives(self.version, arch, self.archive_format)

    def source_url(self) -> str:
        return self.release_url.format(version=self.version).rstrip("/")

    def environment(self) -> dict[str, str]:
        """The OLLAMA_* environment for the systemd drop-in, computed once here."""
        env = {
            "OLLAMA_HOST": f"{self.bind}:{self.port}",
            "OLLAMA_KEEP_ALIVE": self.keep_alive,
            "OLLAMA_NUM_PARALLEL": str(self.num_parallel),
            "OLLAMA_FLASH_ATTENTION": "1" if self.flash_attention else "0",
            "OLLAMA_KV_CACHE_TYPE": self.kv_cache_type,
        }
        if self.models_path() is not None:
            env["OLLAMA_MODELS"] = str(self.models_path())
        if self.max_loaded_models is not None:
            env["OLLAMA_MAX_LOADED_MODELS"] = str(self.max_loaded_models)
        if self.max_queue is not None:
            env["OLLAMA_MAX_QUEUE"] = str(self.max_queue)
        if self.context_length is not None:
            env["OLLAMA_CONTEXT_LENGTH"] = str(self.context_length)
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in self.gpus)
        return env


class ContainerToolkitSpec(Strict):
    """NVIDIA container toolkit from NVIDIA's apt repository, all four packages pinned to one version."""

    version: str = Field(
        outside.TOOLKIT_VERSION, pattern=r"^\d+\.\d+\.\d+(~rc\.\d+)?-\d+$", description="apt version, e.g. 1.18.0-1"
    )
    repository: str = Field(
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)", description="apt source (a mirror)"
    )
    gpgkey_url: str = "https://nvidia.github.io/libnvidia-container/gpgkey"

    packages: ClassVar[tuple[str, ...]] = (
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    )

    def pinned(self) -> list[str]:
        return [f"{package}={self.version}" for package in self.packages]


class DockerSpec(Strict):
    """Docker engine and the Compose v2 plugin.

    source "auto": Ubuntu's own docker.io + docker-compose-v2 on Ubuntu, Docker's apt repository
    (docker-ce, docker-compose-plugin) on Debian, whose own docker.io is 20.10 with no Compose v2.
    `packages` overrides the list, installed from whatever apt sources the host has.
    """

    source: Literal["auto", "distribution", "docker"] = "auto"
    packages: list[str] | None = Field(
        None, description="apt packages instead of the source's defaults (e.g. a local repository's)"
    )
    repository: str = Field(
        outside.DOCKER_REPOSITORY,
        description="Docker's apt repository or a mirror; {distribution} becomes ubuntu or debian",
    )
    versions: dict[str, str] = Field(
        default_factory=dict,
        description="apt versions to pin, per package, e.g. {'docker-ce': '5:29.1.3-1~debian.12~bookworm'}",
    )

    @field_validator("versions")
    @classmethod
    def _apt_versions(cls, value: dict[str, str]) -> dict[str, str]:
        for package, version in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", package) or not re.fullmatch(r"[0-9A-Za-z.+~:-]+", version):
                raise ValueError(
                    f"{package}={version} is not an apt package and version "
                    "(e.g. docker-ce: 5:29.1.3-1~debian.12~bookworm)"
                )
        return value


# ---------------------------------------------------------------------------------------------
# Exposure: gateway and firewall
# ---------------------------------------------------------------------------------------------

OLLAMA_ADMIN_ROUTES = ("pull", "push", "create", "delete", "copy", "blobs")
"""Ollama's /api/ routes that change the model store; the gateway refuses them unless allowed."""

API_KEY_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{20,512}$")
DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


class GatewaySpec(Strict):
    """nginx from the distribution in front of the host's loopback engines.

    It terminates TLS, requires `Authorization: Bearer KEY` on every route (/metrics included) and
    serves one OpenAI-compatible base URL, https://HOST[:port]/v1, whether vLLM or Ollama is behind
    it. Other engines of the host are at https://HOST/engines/NAME/v1.
    """

    port: Port = 443
    tls: Literal["private-ca", "provided", "acme"] = Field(
        "private-ca",
        description="private-ca: gpuctl's own CA (ca.pem beside the inventory, for clients to trust); "
        "provided: cert_file + key_file; acme: a certificate for domain= from an ACME CA (Let's Encrypt)",
    )
    domain: str | None = Field(None, description="public DNS name of the host (required for acme)")
    cert_file: str | None = Field(None, description="provided: PEM certificate chain, on the machine running gpuctl")
    key_file: SecretRef | None = Field(None, description="provided: the certificate's private key (a secret)")
    ca_file: str | None = Field(None, description="provided: the CA clients (and verify) trust, if not a public one")
    acme_email: str | None = Field(None, description="acme: contact address for the ACME account")
    acme_server: str = Field("https://acme-v02.api.letsencrypt.org/directory", description="acme: directory URL")
    acme_ca_bundle: str | None = Field(
        None, description="acme: CA bundle (path on the host) that certbot trusts for a private ACME server"
    )
    api_key: SecretRef | None = Field(
        None, description="the bearer key clients send; default: generated by gpuctl and kept 0600 beside the inventory"
    )
    engine: str | None = Field(
        None, description="engine behind /v1: a vllm engine name or 'ollama' (default: the only one)"
    )
    metrics_allow: list[str] = Field(
        default_factory=list,
        description="scraper addresses or networks that may read /metrics (and Ollama's /api/ps) without the key",
    )
    allow_ollama_admin: bool = Field(
        False, description="let key holders reach Ollama's /api/pull, push, create, delete and copy"
    )
    listen_ipv6: bool = Field(True, description="also listen on [::] (turn off where the kernel has no IPv6)")
    max_body: str = Field("16m", pattern=r"^\d+[km]?$", description="largest request body (nginx client_max_body_size)")

    @field_validator("domain")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and not DNS_NAME_RE.match(value):
            raise ValueError("must be a lowercase DNS name like gpu-01.example.com")
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySpec:
        if self.tls == "provided" and (self.cert_file is None or self.key_file is None):
            raise FieldError("cert_file", 'tls="provided" needs cert_file= and key_file=')
        if self.tls != "provided" and (self.cert_file or self.key_file or self.ca_file):
            raise FieldError("cert_file", f'cert_file/key_file/ca_file belong to tls="provided", not tls="{self.tls}"')
        if self.tls == "acme" and (self.domain is None or self.acme_email is None):
            raise FieldError("domain", 'tls="acme" needs domain= (a public DNS name for this host) and acme_email=')
        return self


class EndpointSpec(Strict):
    """One base URL for a fleet: https://DOMAIN[:PORT]/v1 on a front host, where nginx balances across the
    gateways of the hosts that serve MODEL (least_conn; a host that fails is left out for fail_timeout, then
    tried again). It has its own bearer key and TLS, as a host's gateway does; the hosts' keys stay unknown to
    clients (the front sends the hosts a key of its own, which their gateways accept)."""

    name: str = Field(description="the endpoint's name: gpuctl verify NAME, key file endpoint.NAME.api-key")
    hosts: list[str] = Field(min_length=1, description="the hosts behind it (names, or a group's Host(...)s)")
    model: str = Field(description="the model name clients send, which every host's gateway /v1 serves")
    on: str = Field(description="the front host that runs it (nginx; it may be one of the hosts)")
    port: Port = 443
    tls: Literal["private-ca", "provided", "acme"] = "private-ca"
    domain: str | None = Field(None, description="public DNS name of the endpoint (required for acme)")
    cert_file: str | None = None
    key_file: SecretRef | None = None
    ca_file: str | None = None
    acme_email: str | None = None
    acme_server: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_bundle: str | None = None
    api_key: SecretRef | None = Field(None, description="the bearer key clients send; default: generated by gpuctl")
    listen_ipv6: bool = True
    max_body: str = Field("16m", pattern=r"^\d+[km]?$")
    fail_timeout_s: int = Field(
        10, ge=1, le=3600, description="a host whose connection failed is left out this long, then tried again"
    )
    connect_timeout_s: int = Field(2, ge=1, le=60, description="how long the front waits to connect to a host")
    drain_timeout_s: int = Field(
        60, ge=0, le=3600, description="a rolling deploy waits this long for a drained host's open requests"
    )

    @field_validator("name")
    @classmethod
    def _endpoint_name(cls, value: str) -> str:
        if not HOSTNAME_RE.match(value):
            raise ValueError("must be a lowercase name (letters, digits, '-')")
        return value

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        """A model name as engines serve them (the front's /v1/models answers it verbatim)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}", value):
            raise ValueError(f"{value!r} is not a model name (letters, digits and . _ : / -)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EndpointSpec:
        self.listener()  # the TLS and key settings, checked as a gateway's are
        if len(set(self.hosts)) != len(self.hosts):
            raise FieldError("hosts", "names a host twice")
        return self

    def listener(self) -> GatewaySpec:
        """The endpoint's TLS and key settings as a gateway's: checked, issued and deployed the same way."""
        fields = ("port", "tls", "domain", "cert_file", "key_file", "ca_file", "acme_email", "acme_server")
        more = ("acme_ca_bundle", "api_key", "listen_ipv6", "max_body")
        return GatewaySpec(**{f: getattr(self, f) for f in (*fields, *more)})

    @property
    def upstream_name(self) -> str:
        """The TLS name the front checks on every host's gateway certificate (each lists it)."""
        return f"gpuctl-endpoint-{self.name}"

    def url(self, front: HostSpec) -> str:
        name = bracketed(self.domain or front.address or "127.0.0.1")
        return f"https://{name}{'' if self.port == 443 else f':{self.port}'}"


class MonitoringSpec(Strict):
    """Prometheus (the distribution's package) on this host, scraping every engine of the inventory through
    its gateway and every host's node exporter, with gpuctl's alert rules (gpuctl.monitoring)."""

    port: Port = Field(9090, description="Prometheus' own web UI and API")
    bind: str = Field("127.0.0.1", description="where its UI/API listens (reach it over an SSH tunnel)")
    scrape_interval: str = Field("15s", description="how often targets are scraped and rules evaluated")
    retention: str = Field("15d", description="how long samples are kept (--storage.tsdb.retention.time)")
    node_exporter_port: Port = Field(9100, description="the node exporter's port on every host")
    engine_down_for: str = Field("1m", description="an engine target down this long fires EngineDown")
    kv_cache_full_for: str = Field("5m", description="KV-cache usage above 90 % this long fires KvCacheFull")
    queue_for: str = Field("5m", description="requests waiting this long fires RequestsQueued")
    ttft_p95_alert_s: float = Field(2.0, gt=0, le=3600, description="TTFT p95 (5 min) above this fires TtftHigh")
    dcgm_exporter_port: Port = Field(9400, description="NVIDIA's DCGM exporter (GPU metrics) on every GPU host")
    gpu_memory_margin: float = Field(
        0.05, ge=0, le=0.5, description="GPU memory share above the engines' budget that fires GpuMemoryUsedByOthers"
    )
    gpu_memory_other_for: str = Field("5m", description="GPU memory above budget this long fires GpuMemoryUsedByOthers")
    scrape_from: str | None = Field(
        None, description="the address its scrapes come from, as the other hosts see it (default: the host's address)"
    )

    @field_validator(
        "scrape_interval", "retention", "engine_down_for", "kv_cache_full_for", "queue_for", "gpu_memory_other_for"
    )
    @classmethod
    def _prometheus_duration(cls, value: str) -> str:
        if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", value):
            raise ValueError(f"{value!r} is not a Prometheus duration (e.g. 15s, 5m, 1h30m, 15d)")
        return value

    @field_validator("bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        return VllmSpec._ip_address(value)

    @field_validator("scrape_from")
    @classmethod
    def _source_address(cls, value: str | None) -> str | None:
        return None if value is None else VllmSpec._ip_address(value)


BATCH_RE = re.compile(r"(\d+(\.\d+)?)%")


def batch_hosts(batch: int | str, hosts: int) -> int:
    """Hosts per batch: BATCH hosts, or BATCH% of HOSTS rounded up; at least one, at most HOSTS."""
    if isinstance(batch, str):
        share = float(BATCH_RE.fullmatch(batch).group(1))  # type: ignore[union-attr]  # validated
        size = math.ceil(hosts * share / 100)
    else:
        size = batch
    return max(1, min(size, hosts))


class RolloutSpec(Strict):
    """How `gpuctl deploy` changes a group's hosts (set on the group's defaults): BATCH hosts at a time, each
    batch verified as `gpuctl verify` does; a host that fails is rolled back to the release it ran before;
    more failed hosts than MAX_FAILED stop the rollout. `deploy --rolling` overrides it for one run."""

    batch: int | str = Field(1, description="hosts per batch (2) or a share of the group's hosts ('25%')")
    max_failed: int = Field(0, ge=0, le=10_000, description="failed hosts (each rolled back) the rollout goes past")

    @field_validator("batch", mode="before")
    @classmethod
    def _batch(cls, value: object) -> int | str:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("must be at least 1 host")
            return value
        match = BATCH_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None or not 0 < float(match.group(1)) <= 100:
            raise ValueError(
                f"{value!r} is neither a number of hosts (2) nor a share of them ('25%', above 0 and at most 100%)"
            )
        return value.strip()

    def size(self, hosts: int) -> int:
        return batch_hosts(self.batch, hosts)

    def describe(self) -> str:
        return f"Rollout(batch={self.batch!r}, max_failed={self.max_failed})"


class FirewallSpec(Strict):
    """An nftables table (inet gpuctl) that admits only SSH, the gateway and listed ports, and keeps
    Docker-published ports from being reached from outside (Docker's own rules bypass ufw)."""

    enabled: bool | None = Field(None, description="default: on when the host has a gateway")
    allow_tcp: list[Port] = Field(default_factory=list, description="more TCP ports open to everyone")
    allow_from: list[str] = Field(
        default_factory=list, description="addresses or networks allowed to reach every port (e.g. an admin VPN)"
    )

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return GatewaySpec._networks(value)


# ---------------------------------------------------------------------------------------------
# Host
# ---------------------------------------------------------------------------------------------


class HostSpec(Strict):
    """One machine: how to reach it, its GPUs and driver, and the engines it serves."""

    name: str
    address: str | None = Field(None, description="IP or DNS name to SSH to")
    local: bool = Field(False, description="this machine itself (no SSH)")
    shared_address: bool = Field(
        False, description="another host of the inventory has the same address and SSH port, on purpose"
    )
    ssh_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]*$")
    ssh_port: Port = 22
    ssh_key: str | None = None
    ssh_known_hosts_file: str | None = None
    ssh_strict_host_key_checking: Literal["yes", "no", "accept-new"] = "accept-new"
    sudo: bool | None = Field(None, description="use sudo (default: when ssh_user is not root)")
    install: Literal["system", "user"] = Field(
        "system",
        description="user: Ollama in the user's home as a `systemctl --user` service, no root, no sudo (a "
        "developer on a shared workstation; an admin enables lingering once)",
    )
    gpus: GpuSpec | None = None
    driver: DriverSpec | None = None
    docker: DockerSpec = Field(default_factory=DockerSpec)
    container_toolkit: ContainerToolkitSpec = Field(default_factory=ContainerToolkitSpec)
    vllm: list[VllmSpec] = Field(default_factory=list)
    ollama: OllamaSpec | None = None
    gateway: GatewaySpec | None = Field(None, description="TLS + bearer-key reverse proxy in front of the engines")
    firewall: FirewallSpec = Field(default_factory=FirewallSpec)
    rollout: RolloutSpec | None = Field(
        None, description="change this host's group in verified batches (deploy without --rolling uses it)"
    )
    monitoring: MonitoringSpec | None = Field(
        None, description="run Prometheus here for the whole inventory (one host per inventory)"
    )
    _scraper: str | None = PrivateAttr(None)
    """The monitoring host's address when the inventory has one (set by gpuctl.monitoring when it loads)."""
    _node_exporter_port: int = PrivateAttr(9100)
    _dcgm_exporter_port: int | None = PrivateAttr(None)
    """On a GPU host of an inventory with a monitoring host: where NVIDIA's DCGM exporter listens."""
    _scrape_targets: list[Any] = PrivateAttr(default_factory=list)
    _endpoints: list[EndpointSpec] = PrivateAttr(default_factory=list)
    """The fleet endpoints this host fronts (set by gpuctl.endpoints when the inventory loads)."""
    _behind_endpoints: list[EndpointSpec] = PrivateAttr(default_factory=list)
    """The fleet endpoints this host serves behind (its gateway accepts their front's key)."""
    _endpoint_members: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)
    """On a front host, by endpoint: each host behind it and its gateway's ADDRESS:PORT."""
    """On the monitoring host: what its Prometheus scrapes (gpuctl.monitoring.ScrapeTarget)."""

    @property
    def scraper(self) -> str | None:
        return self._scraper

    @property
    def node_exporter_port(self) -> int:
        return self._node_exporter_port

    @property
    def dcgm_exporter_port(self) -> int | None:
        return self._dcgm_exporter_port

    @property
    def scrape_targets(self) -> list[Any]:
        return self._scrape_targets

    @property
    def endpoints(self) -> list[EndpointSpec]:
        return self._endpoints

    @property
    def behind_endpoints(self) -> list[EndpointSpec]:
        return self._behind_endpoints

    @property
    def endpoint_members(self) -> dict[str, dict[str, str]]:
        return self._endpoint_members

    @field_validator("name")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not HOSTNAME_RE.match(value):
            raise ValueError("must be a lowercase host name (letters, digits, '-')")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        """An IPv4/IPv6 literal or a DNS name (RFC 1123), nothing else: no URL, port, user or spaces."""
        if value is None:
            return None
        if value != value.strip() or not value:
            raise ValueError(f"{value!r} has spaces around it")
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            pass
        if "://" in value or "@" in value or "/" in value:
            raise ValueError(
                f"{value!r} is not an address: give only the IP address or DNS name "
                "(ssh_user= and ssh_port= hold the rest)"
            )
        if re.fullmatch(r"[0-9.]+", value):
            raise ValueError(f"{value!r} is not a valid IPv4 address")
        if re.fullmatch(r"[^:\[\]]+:\d{1,5}", value):
            raise ValueError(f"{value!r} is not an address: give the SSH port as ssh_port=")
        if ":" in value:
            raise ValueError(f"{value!r} is not a valid IPv6 address")
        if not ADDRESS_NAME_RE.match(value.lower()):
            raise ValueError(
                f"{value!r} is neither an IPv4/IPv6 address nor a DNS name (RFC 1123: letters, "
                "digits and '-' in dot-separated labels of at most 63)"
            )
        return value

    @field_validator("vllm", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [] if value is None else value if isinstance(value, list | tuple) else [value]

    @model_validator(mode="after")
    def _consistent(self) -> HostSpec:
        if self.local == (self.address is not None):
            raise FieldError("address", "give either address= (a remote host) or local=True (this machine)")
        gpu_count = self.gpus.count if self.gpus else 0
        if self.driver is not None and self.gpus is None:
            raise FieldError("driver", "is set but the host declares no GPUs (set gpus=Gpu(...))")
        if self.gpus is not None and self.gpus.nvswitch and self.driver is not None and not self.driver.server:
            raise FieldError(
                "driver.server",
                f"nvswitch=True needs nvidia-fabricmanager-{self.driver.branch}, which "
                "depends on the -server driver flavour (nvidia-kernel-common-N-server): keep server=True",
            )
        names = [e.name for e in self.vllm]
        if len(names) != len(set(names)):
            raise FieldError("vllm", "two engines share a name: give each vllm engine its own name=")
        self._check_vllm_gpus(gpu_count)
        self._check_ports()
        if self.ollama is not None:
            self._check_ollama(gpu_count)
        if self.gateway is not None:
            self._check_gateway(self.gateway)
        if self.install == "user":
            self._check_user_install()
        return self

    def _check_user_install(self) -> None:
        """A user-level install holds only what a user can run: Ollama, in the home, without root."""
        if self.ollama is None:
            raise FieldError("install", 'install="user" installs Ollama in the user\'s home: add ollama=Ollama(...)')
        root_only = {
            "vllm": bool(self.vllm),
            "gateway": self.gateway is not None,
            "driver": self.driver is not None,
            "monitoring": self.monitoring is not None,
            "firewall.enabled": bool(self.firewall.enabled),
            "sudo": bool(self.sudo),
        }
        for field, present in root_only.items():
            if present:
                raise FieldError(
                    field, 'needs root, and install="user" runs without it: remove it, or use install="system"'
                )
        own = self.ollama.model_copy()  # an Ollama(...) a group shares stays system-wide for its other hosts
        own._layout = host_layout.USER_OLLAMA
        object.__setattr__(self, "ollama", own)

    def _check_gateway(self, gateway: GatewaySpec) -> None:
        names = [e.name for e in self.vllm] + (["ollama"] if self.ollama else [])
        if self.ollama is not None and "ollama" in names[:-1]:
            raise FieldError(
                "vllm", "a vllm engine named 'ollama' would share the gateway's /engines/ollama with Ollama"
            )
        if not names:
            raise FieldError("gateway", "the host has no engine to put behind the gateway")
        if gateway.engine is None and len(names) > 1:
            raise FieldError(
                "gateway.engine", f"the host has several engines: name the one behind /v1 ({', '.join(names)})"
            )
        if gateway.engine is not None and gateway.engine not in names:
            raise FieldError("gateway.engine", f"{gateway.engine!r} is not an engine of this host ({', '.join(names)})")
        if gateway.tls == "acme" and gateway.port != 443:
            raise FieldError("gateway.port", 'ACME (tls="acme") certificates are for port 443')

    def _check_vllm_gpus(self, gpu_count: int) -> None:
        used: dict[int, str] = {}
        for i, engine in enumerate(self.vllm):
            where = self._vllm_loc(i)
            if engine.gpu_access == "none":
                continue
            if gpu_count == 0:
                raise FieldError(where, "vLLM needs GPUs but the host declares none (set gpus=Gpu(...))")
            if engine.tensor_parallel_size > gpu_count:
                raise FieldError(
                    f"{where}.tensor_parallel_size",
                    f"is {engine.tensor_parallel_size} but the host has {gpu_count} GPU(s)",
                )
            for gpu in engine.gpu_indices():
                if gpu >= gpu_count:
                    raise FieldError(f"{where}.gpus", f"GPU {gpu} does not exist (the host has {gpu_count})")
                if gpu in used:
                    raise FieldError(f"{where}.gpus", f"GPU {gpu} is already used by vllm engine {used[gpu]!r}")
                used[gpu] = engine.name

    def _check_ports(self) -> None:
        seen: dict[int, str] = {22: "ssh"} if self.ssh_port == 22 else {self.ssh_port: "ssh"}
        engines: list[tuple[str, int]] = [(self._vllm_loc(i), e.port) for i, e in enumerate(self.vllm)]
        if self.ollama is not None:
            engines.append(("ollama", self.ollama.port))
        if self.gateway is not None:
            engines.append(("gateway", self.gateway.port))
            if self.gateway.tls == "acme":
                engines.append(("gateway (ACME http-01)", 80))
        for where, port in engines:
            if port in seen:
                raise FieldError(f"{where}.port", f"port {port} is already used by {seen[port]}")
            seen[port] = where

    def _check_ollama(self, gpu_count: int) -> None:
        assert self.ollama is not None
        if gpu_count == 0 and not self.ollama.cpu_fallback:
            raise FieldError(
                "ollama.cpu_fallback", "the host declares no GPUs: set cpu_fallback=True to run on the CPU"
            )
        for gpu in self.ollama.gpus or []:
            if gpu >= gpu_count:
                raise FieldError("ollama.gpus", f"GPU {gpu} does not exist (the host has {gpu_count})")

    def _vllm_loc(self, index: int) -> str:
        return "vllm" if len(self.vllm) == 1 else f"vllm[{self.vllm[index].name}]"

    # -- derived values --------------------------------------------------------------------

    def public_engines(self) -> list[VllmSpec | OllamaSpec]:
        """Engines bound beyond loopback by an explicit unsafe_public_bind."""
        return [e for e in self.engines() if not is_loopback(e.bind)]

    def engines(self) -> list[VllmSpec | OllamaSpec]:
        return [*self.vllm, *([self.ollama] if self.ollama else [])]

    def needs_nvidia(self) -> bool:
        """Whether the NVIDIA driver and container toolkit belong on this host."""
        return self.gpus is not None

    def needs_docker(self) -> bool:
        """vLLM engines and NVIDIA's DCGM exporter run in containers."""
        return bool(self.vllm) or self.dcgm_exporter_port is not None

    def firewall_enabled(self) -> bool:
        """Whether the nftables firewall belongs on this host (default: with a gateway)."""
        if self.firewall.enabled is not None:
            return self.firewall.enabled
        return self.gateway is not None or bool(self.endpoints)

    def gateway_default_engine(self) -> VllmSpec | OllamaSpec | None:
        """The engine behind the gateway's /v1."""
        if self.gateway is None:
            return None
        wanted = self.gateway.engine
        for engine in self.engines():
            name = engine.name if isinstance(engine, VllmSpec) else "ollama"
            if wanted is None or name == wanted:
                return engine
        return None

    def gateway_prefix(self, engine: VllmSpec | OllamaSpec) -> str:
        """The gateway path an engine is served under: "" for the default, else /engines/NAME."""
        if engine is self.gateway_default_engine():
            return ""
        return f"/engines/{engine.name if isinstance(engine, VllmSpec) else engine.label}"

    def gateway_url(self, engine: VllmSpec | OllamaSpec) -> str:
        """https://HOST[:port][/engines/NAME]: the base that clients append /v1 to."""
        assert self.gateway is not None
        name = bracketed(self.gateway.domain or self.address or "127.0.0.1")
        port = "" if self.gateway.port == 443 else f":{self.gateway.port}"
        return f"https://{name}{port}{self.gateway_prefix(engine)}"

    def connection_label(self) -> str:
        if self.local:
            return "@local"
        port = f":{self.ssh_port}" if self.ssh_port != 22 else ""
        return f"{self.ssh_user}@{self.address}{port}"


class FieldError(ValueError):
    """A cross-field error that belongs to one field path (e.g. 'vllm.tensor_parallel_size')."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"@{field}: {message}")
