"""`gpuctl bench TARGET`: the published throughput table, measured on a host, an inventory or a URL.

TARGET resolves as for `gpuctl verify`: engines of inventory hosts are reached through their gateway
as clients reach them (https, the gateway key, the inventory's CA), or else directly or through an SSH
tunnel when they listen on loopback, with the spec's API key; a URL takes --engine/--model/
--api-key-env (engine and model are asked from the server when not given). Heavy imports (aiohttp,
the inventory) happen only when the command runs, so `gpuctl --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from gpuctl.errors import GpuctlError
from gpuctl.options import api_key_env_option, inventory_option, json_option, limit_option

MAX_CONCURRENCY = 4096


def parse_concurrency(text: str) -> list[int]:
    """'1,8,32' → [1, 8, 32]; anything else is one clear GpuctlError."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.isdigit() and 1 <= int(part) <= MAX_CONCURRENCY for part in parts):
        raise GpuctlError(
            f"--concurrency {text!r}: give whole numbers from 1 to {MAX_CONCURRENCY} separated by commas, e.g. 1,8,32"
        )
    return [int(part) for part in parts]


@dataclass
class Target:
    """One engine to bench; `open()` yields its base URL (an SSH tunnel lives as long as the context)."""

    host: str
    engine_name: str | None  # vllm:NAME or ollama (hosts); the detected engine (URLs)
    engine: str | None  # vllm | ollama | openai; None: ask the server
    api: str | None  # openai | ollama; None: the engine's own
    model: str | None  # None: the server's first
    api_key: str | None
    gpu: str | None
    gpu_label: str
    weights: str | None
    open: Callable[[], AbstractContextManager[str]]
    url: str | None = None
    via: str = "direct"  # direct (a URL, a local host, a public bind), ssh tunnel, or gateway
    verify: str | bool = True  # TLS trust for https: a CA file, or the system's CAs
    context_tokens: int | None = None  # the model's max_model_len, when the spec or the server says it


@click.command()
@click.argument("target")
@inventory_option
@limit_option
@click.option(
    "--concurrency",
    "-c",
    default="1,8,32",
    show_default=True,
    metavar="LIST",
    help="Concurrency levels, comma-separated; each level keeps this many streams busy.",
)
@click.option(
    "--requests",
    "-n",
    type=click.IntRange(1, 1_000_000),
    metavar="N",
    help="Requests per level (default: 4 × concurrency, at least 8; unbounded with --duration).",
)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(0.1, 86400),
    metavar="SECONDS",
    help="Per level: send no new request after SECONDS (requests in flight finish).",
)
@click.option(
    "--prompt-tokens",
    type=click.IntRange(1, 1_000_000),
    default=180,
    show_default=True,
    help="Prompt length in tokens (chat template included), calibrated against the server.",
)
@click.option(
    "--output-tokens",
    type=click.IntRange(1, 1_000_000),
    default=220,
    show_default=True,
    help="Tokens each reply must have (vLLM: ignore_eos; Ollama: num_predict).",
)
@click.option(
    "--api",
    type=click.Choice(["openai", "ollama"]),
    help="openai: /v1/chat/completions (vLLM, Ollama's shim); ollama: Ollama's /api/chat. Default: the engine's own.",
)
@click.option(
    "--engine",
    type=click.Choice(["vllm", "ollama"]),
    help="Hosts: only this engine. URLs: which server it is (asked from the server if not given).",
)
@click.option(
    "--model",
    help="The model to generate with (URLs: default the server's first; Ollama hosts: default the spec's first).",
)
@api_key_env_option
@click.option(
    "--gpu",
    metavar="MODEL",
    help="URL targets: the GPU behind the URL (e.g. 'RTX 4090'), to compare with published figures.",
)
@click.option(
    "--seed", type=click.IntRange(0, 2**31), default=0, show_default=True, help="Seed of the synthetic prompts."
)
@click.option(
    "--timeout",
    "request_timeout_s",
    type=click.FloatRange(1, 3600),
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="Give up on a request after SECONDS (counted as an error).",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also write one row per level to FILE.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also draw tokens/s against concurrency beside the published rows: FILE.png, .svg or .html "
    "(needs pip install 'gpuctl[plot]').",
)
@click.option(
    "--direct",
    is_flag=True,
    help="Hosts with a gateway: bench the engine itself (through an SSH tunnel), "
    "not the gateway's https URL that clients use.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@json_option
def bench(
    target: str,
    inventory_ref: str | None,
    limit: tuple[str, ...],
    concurrency: str,
    requests: int | None,
    duration_s: float | None,
    prompt_tokens: int,
    output_tokens: int,
    api: str | None,
    engine: str | None,
    model: str | None,
    api_key_env: str | None,
    gpu: str | None,
    seed: int,
    request_timeout_s: float,
    csv_path: Path | None,
    plot_path: Path | None,
    direct: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Tokens/s and latency per concurrency level.

    TARGET is a host name, an inventory, or a URL. Closed loop: at each level that many streams send
    their next request as soon as the last one ended. Where the host's GPU and model have published
    figures, they stand beside the measurement."""
    from gpuctl.bench.client import Settings
    from gpuctl.output import console, finish

    settings = Settings(
        concurrency=parse_concurrency(concurrency),
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        requests=requests,
        duration_s=duration_s,
        request_timeout_s=request_timeout_s,
        seed=seed,
    )
    check_outputs(csv_path, plot_path)
    if target.startswith(("http://", "https://")):
        targets = [url_target(target, engine, api, model, api_key_env, gpu)]
    else:
        targets = host_targets(target, inventory_ref, limit, engine, api, model, direct)
    err = console(stderr=True)
    runs = [bench_target(t, settings, None if quiet else err.print) for t in targets]

    write_outputs(runs, settings, target, as_json=as_json, csv_path=csv_path, plot_path=plot_path)
    finish(all(run.ok for run in runs))


def check_outputs(csv_path: Path | None, plot_path: Path | None) -> None:
    """Before a long run: the files asked for can be written."""
    if csv_path is not None:
        check_writable(csv_path)
    if plot_path is not None:
        from gpuctl.bench.plot import check_plot_path

        check_plot_path(plot_path)


def write_outputs(
    runs: list[Any], settings: Any, target: str, *, as_json: bool, csv_path: Path | None, plot_path: Path | None
) -> None:
    """The table (or JSON) on stdout, then the CSV and the plot when asked for."""
    from gpuctl.bench import report
    from gpuctl.output import console

    if as_json:
        click.echo(json.dumps(report.as_json(runs, settings), indent=2))
    else:
        report.print_table(console(), runs, settings)
    if csv_path is not None:
        report.write_csv(csv_path, runs)
    if plot_path is not None:
        from gpuctl.bench.plot import write_plot

        title = f"gpuctl bench {target}: {settings.prompt_tokens} prompt + {settings.output_tokens} output tokens"
        write_plot(plot_path, runs, title + " per request")
        console(stderr=True).print(f"plot: {plot_path}")


def check_writable(path: Path) -> None:
    """Fail before a long run, not after it, when --csv cannot be written."""
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise GpuctlError(f"--csv {path}: cannot write: {exc.strerror}") from None


def bench_target(target: Target, settings: Any, say: Callable[[str], Any] | None) -> Any:
    """Complete what the target left open, run the levels, and return the report.Run (errors inside it)."""
    from gpuctl.bench import client

    def progress(message: str) -> None:
        if say is not None:
            via = "" if target.via == "direct" else f" via {target.via}"
            say(f"[{target.host} {target.engine_name or target.engine or 'engine'}{via}] {message}")

    try:
        with target.open() as base_url:
            complete(target, base_url)
            run_settings = fitted(settings, target)
            endpoint = client.Endpoint(
                base_url,
                target.api,
                target.model,
                target.api_key,  # type: ignore[arg-type]
                exact_output=target.engine == "vllm",
                verify=target.verify,
            )
            result = client.run(endpoint, run_settings, progress)
    except (ConnectionError, OSError, GpuctlError) as exc:
        run = new_run(target)
        run.error = str(exc)
        return run
    run = new_run(target)
    run.calibration, run.levels = result.calibration, result.levels
    return run


def complete(target: Target, base_url: str) -> None:
    """Ask the server what the command line and the spec left open: engine, API, model (gpuctl.detect), and
    the model's context length; then the weights."""
    from gpuctl.bench.reference import weight_format
    from gpuctl.detect import detect

    served = detect(base_url, target.api_key, target.engine, target.verify)  # type: ignore[arg-type]
    target.engine = target.engine or served.engine
    target.engine_name = target.engine_name or target.engine
    if target.api is None:
        target.api = "ollama" if target.engine == "ollama" else "openai"
    if target.api == "ollama" and target.engine != "ollama":
        raise ConnectionError(f"--api ollama: {base_url} is not an Ollama server")
    if target.model is None:
        target.model = served.pick(None, target.url or base_url)
    target.context_tokens = served.max_model_len.get(target.model, target.context_tokens)
    if target.weights is None:
        target.weights = weight_format(target.engine, target.model)


def fitted(settings: Any, target: Target) -> Any:
    """SETTINGS for TARGET's model: its context length for the calibration; a prompt and output that cannot
    fit in it are refused before any load is sent."""
    import dataclasses

    context = target.context_tokens
    if context is None:
        return settings
    wanted = settings.prompt_tokens + settings.output_tokens
    if wanted > context:
        output = min(settings.output_tokens, context // 2)
        raise GpuctlError(
            f"{target.model} has a context of {context} tokens: --prompt-tokens {settings.prompt_tokens} + "
            f"--output-tokens {settings.output_tokens} = {wanted} does not fit (e.g. --prompt-tokens "
            f"{context - output - 8} --output-tokens {output})"
        )
    return dataclasses.replace(settings, context_tokens=context)


def new_run(target: Target) -> Any:
    """A report.Run for TARGET as far as it is known."""
    from gpuctl.bench.reference import Subject
    from gpuctl.bench.report import Run

    engine = target.engine or "?"
    return Run(
        host=target.host,
        engine_name=target.engine_name or engine,
        engine_label=engine_label(target),
        api=target.api or "?",
        model=target.model or "?",
        gpu_label=target.gpu_label,
        url=target.url,
        via=target.via,
        subject=Subject(target.gpu, engine, target.model or "", target.weights or ""),
    )


def engine_label(target: Target) -> str:
    """'vLLM FP16', 'Ollama Q4_K_M', 'Ollama Q4_K_M (/v1)': the published table's engine column."""
    from gpuctl.bench.reference import weights_label

    name = {"vllm": "vLLM", "ollama": "Ollama", None: "?"}.get(target.engine, "OpenAI-compatible")
    label = (
        f"{name} {weights_label(target.weights)}" if target.weights and target.engine in ("vllm", "ollama") else name
    )
    if target.engine == "ollama" and target.api == "openai":
        label += " (/v1)"
    return label


def url_target(
    url: str, engine: str | None, api: str | None, model: str | None, api_key_env: str | None, gpu: str | None
) -> Target:
    from urllib.parse import urlsplit

    from gpuctl.access import key_from_env

    api_key = key_from_env(api_key_env)
    if api == "ollama" and engine == "vllm":
        raise GpuctlError("--api ollama: vLLM has no Ollama API (use --api openai)")

    @contextlib.contextmanager
    def direct() -> Iterator[str]:
        yield url.rstrip("/")

    return Target(
        host=urlsplit(url).netloc or url,
        engine_name=engine,
        engine=engine,
        api=api,
        model=model,
        api_key=api_key,
        gpu=gpu,
        gpu_label=gpu or "?",
        weights=None,
        open=direct,
        url=url,
    )


@contextlib.contextmanager
def failing(message: str) -> Iterator[str]:
    """An endpoint that cannot be opened (the run reports MESSAGE)."""
    raise ConnectionError(message)
    yield ""  # unreachable: makes this a generator


def host_targets(
    target: str,
    inventory_ref: str | None,
    limit: tuple[str, ...],
    engine: str | None,
    api: str | None,
    model: str | None,
    direct: bool = False,
) -> list[Target]:
    """Every engine (or only --engine's) of the hosts TARGET names, with the spec's key, model and GPU;
    behind a gateway, as its clients reach it (https, the gateway key, the CA gpuctl handed out)
    unless DIRECT."""
    from gpuctl import inventory
    from gpuctl.keystore import Keystore

    found = inventory.find_endpoint(target, inventory_ref)
    if found is not None:
        return [endpoint_target(*found, model)]
    inv, hosts = inventory.find_hosts(target, inventory_ref, limit)
    keystore = Keystore.for_inventory(inv.path, write=False)
    targets = [
        host_target(host, spec, inv.base_dir, keystore, api, model, direct)
        for host in hosts
        for spec in host.engines()
        if engine is None or spec.label.split(":")[0] == engine
    ]
    if not targets:
        raise GpuctlError(f"{target}: no {engine + ' ' if engine else ''}engine to bench in the spec")
    return targets


def endpoint_target(inv: Any, endpoint: Any, model: str | None) -> Target:
    """A fleet endpoint, as its clients reach it: its URL, its key, the CA gpuctl handed out. The figures are
    the aggregate of the hosts behind it."""
    from gpuctl.access import endpoint_access
    from gpuctl.keystore import Keystore

    front = inv.hosts[endpoint.on]
    access = endpoint_access(front, endpoint, Keystore.for_inventory(inv.path, write=False), inv.base_dir)

    @contextlib.contextmanager
    def opened() -> Iterator[str]:
        yield access.base_url

    return Target(
        host=f"endpoint {endpoint.name} ({len(endpoint.hosts)} hosts)",
        engine_name=f"endpoint:{endpoint.name}",
        engine="openai",
        api="openai",
        model=model or endpoint.model,
        api_key=access.api_key,
        gpu=None,
        gpu_label="?",
        weights=None,
        open=opened,
        url=access.base_url,
        via="endpoint",
        verify=access.verify,
    )


def host_target(
    host: Any, spec: Any, base_dir: Path, keystore: Any, api: str | None, model: str | None, direct: bool
) -> Target:
    """One engine of an inventory host, reached as gpuctl.access says (gateway, tunnel or direct)."""
    from gpuctl.access import client_access
    from gpuctl.bench.reference import weight_format
    from gpuctl.spec import VllmSpec

    if isinstance(spec, VllmSpec):
        if api == "ollama":
            raise GpuctlError(f"--api ollama: {host.name} {spec.label} is vLLM (use --api openai)")
        kind, name = "vllm", model or spec.served_name
        weights = weight_format("vllm", spec.model, spec.quantization, spec.dtype)
    else:
        kind, name = "ollama", model or (spec.models[0] if spec.models else None)
        weights = weight_format("ollama", name) if name else None
    try:
        client = client_access(host, spec, keystore=keystore, base_dir=base_dir, direct=direct)
        via, api_key, verify, url, opener = client.via, client.api_key, client.verify, client.url, client.open
    except GpuctlError as exc:
        if host.gateway is None or direct:  # the engine's own key reference is bad input
            raise
        # this host's gateway key is missing: the others are still benched
        via, api_key, verify, url = "gateway", None, True, None
        opener = lambda message=str(exc): failing(message)  # noqa: E731
    return Target(
        host=host.name,
        engine_name=spec.label,
        engine=kind,
        api=api or ("openai" if kind == "vllm" else "ollama"),
        model=name,
        api_key=api_key,
        gpu=host.gpus.model if host.gpus else None,
        gpu_label=f"{host.gpus.count}× {host.gpus.model}" if host.gpus else "none (CPU)",
        weights=weights,
        open=opener,
        url=url,
        via=via,
        verify=verify,
    )
