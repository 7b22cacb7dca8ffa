"""The load generator: closed-loop streaming requests with asyncio and one aiohttp session.

At concurrency C, C workers each send their next streamed request as soon as their last one ended,
until the level's request count or duration is reached. One session with a connection pool of the
largest concurrency serves every level; request bodies are encoded once each and streams are parsed
with byte searches (gpuctl.bench.streams), so the client stays far below what a GPU server produces.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from gpuctl.bench import prompts
from gpuctl.bench.stats import LevelStats, RequestResult, summarize
from gpuctl.bench.streams import OllamaStream, OpenAIStream, StreamParser, short

Api = Literal["openai", "ollama"]
Progress = Callable[[str], None]
MAX_REQUESTS = 1_000_000
PROGRESS_EVERY_S = 2.0
ERROR_BODY_BYTES = 400


@dataclass
class Endpoint:
    """Where and how to send requests. The API key is only ever put into a header."""

    base_url: str
    api: Api
    model: str
    api_key: str | None = None
    exact_output: bool = False  # vLLM: ignore_eos + min_tokens, so every reply is exactly max_tokens long
    verify: str | bool = True  # https: the CA file to trust, or True for the system's CAs

    @property
    def path(self) -> str:
        return "/api/chat" if self.api == "ollama" else "/v1/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def body(self, prompt: str, output_tokens: int) -> bytes:
        messages = [{"role": "user", "content": prompt}]
        data: dict[str, Any]
        if self.api == "ollama":
            data = {
                "model": self.model,
                "messages": messages,
                "stream": True,
                "options": {"num_predict": output_tokens},
            }
        else:
            data = {
                "model": self.model,
                "messages": messages,
                "max_tokens": output_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if self.exact_output:
                data.update(ignore_eos=True, min_tokens=output_tokens)
        return json.dumps(data, separators=(",", ":")).encode()

    def parser(self, result: RequestResult) -> StreamParser:
        return OllamaStream(result) if self.api == "ollama" else OpenAIStream(result)


@dataclass
class Settings:
    """What to run at every level."""

    concurrency: list[int]
    prompt_tokens: int = 180
    output_tokens: int = 220
    requests: int | None = None  # per level; default: 4 × concurrency, at least 8
    duration_s: float | None = None  # per level: no new request after this
    request_timeout_s: float = 300.0
    seed: int = 0
    calibrate: bool = True
    context_tokens: int | None = None
    """The model's context length (max_model_len) when the server or the spec says it."""

    def requests_for(self, concurrency: int) -> int:
        if self.requests is not None:
            return self.requests
        return MAX_REQUESTS if self.duration_s is not None else max(8, 4 * concurrency)


@dataclass
class BenchResult:
    calibration: prompts.Calibration
    levels: list[LevelStats] = field(default_factory=list)


LevelHook = Callable[[int], Any]


class LoadGenerator:
    """Runs the levels of one endpoint in one aiohttp session."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: Settings,
        progress: Progress | None = None,
        on_level_start: LevelHook | None = None,
        on_level_end: LevelHook | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.progress = progress or (lambda _message: None)
        self.on_level_start = on_level_start
        self.on_level_end = on_level_end
        self.url = endpoint.base_url.rstrip("/") + endpoint.path
        self.headers = endpoint.headers()
        self.prompts = prompts.PromptPool([], 0, pool=1)
        self.sent = 0

    async def run(self) -> BenchResult:
        largest = max(self.settings.concurrency)
        trust = (
            ssl.create_default_context(cafile=self.endpoint.verify) if isinstance(self.endpoint.verify, str) else True
        )
        connector = aiohttp.TCPConnector(limit=largest, limit_per_host=largest, ttl_dns_cache=300, ssl=trust)
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
            self.session = session
            calibration = await self.calibrate()
            result = BenchResult(calibration)
            for concurrency in self.settings.concurrency:
                level = await self.level(concurrency)
                result.levels.append(level)
                if level.requests == 0 and level.errors:
                    self.progress(f"c={concurrency}: every request failed; the remaining levels are skipped")
                    break
            return result

    async def calibrate(self) -> prompts.Calibration:
        """Find the word count for --prompt-tokens (also warms the server up: a model loads here)."""
        s = self.settings
        probe_index = -1

        async def probe(words: int) -> int:
            nonlocal probe_index
            probe_index -= 1
            text = prompts.prompt_text(prompts.word_list(words, s.seed), s.seed, probe_index)
            result = await self.request(self.endpoint.body(text, 1))
            if result.error or result.prompt_tokens is None:
                raise prompts.ProbeError(result.error or "no prompt token count in the answer")
            return result.prompt_tokens

        if not s.calibrate:
            cal = prompts.Calibration(s.prompt_tokens, max(1, s.prompt_tokens), [])
        else:
            self.progress(f"calibrating the prompt length to {s.prompt_tokens} tokens")
            cal = await prompts.calibrate(s.prompt_tokens, probe, context_tokens=s.context_tokens)
            if cal.error:
                self.progress(f"warning: prompt calibration failed ({cal.error}); using {cal.words} words")
        self.prompts = prompts.PromptPool(prompts.word_list(cal.words, s.seed), s.seed)
        return cal

    async def request(self, body: bytes) -> RequestResult:
        """One streamed request, timed; every failure becomes the result's error (never raised)."""
        result = RequestResult(start=time.perf_counter())
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as response:
                if response.status != 200:
                    text = (await response.content.read(ERROR_BODY_BYTES)).decode(errors="replace")
                    result.error = f"HTTP {response.status}: {short(text, 120)}"
                else:
                    parser = self.endpoint.parser(result)
                    clock, content = time.perf_counter, response.content
                    while data := await content.readany():
                        rest = content.read_nowait()  # readany() gives one HTTP chunk; take all that arrived
                        parser.feed(data + rest if rest else data, clock())
                    parser.finish()
        except TimeoutError:
            result.error = f"timed out after {self.settings.request_timeout_s:g} s"
        except aiohttp.ClientError as exc:
            result.error = f"{type(exc).__name__}: {short(str(exc), 120)}"
        except ValueError as exc:  # a malformed usage or error event
            result.error = f"unexpected answer: {short(str(exc), 120)}"
        result.end = time.perf_counter()
        return result

    async def level(self, concurrency: int) -> LevelStats:
        s = self.settings
        limit = s.requests_for(concurrency)
        results: list[RequestResult] = []
        state = {"issued": 0, "errors": 0, "tokens": 0}

        async def worker(deadline: float) -> None:
            while state["issued"] < limit and time.perf_counter() < deadline:
                state["issued"] += 1
                self.sent += 1  # numbers every prompt of the run: no two are the same shuffle
                text = self.prompts.text(self.sent)
                result = await self.request(self.endpoint.body(text, s.output_tokens))
                results.append(result)
                if result.error:
                    state["errors"] += 1
                    if state["errors"] >= max(10, concurrency) and len(results) == state["errors"]:
                        state["issued"] = limit  # nothing succeeds: stop sending
                else:
                    state["tokens"] += result.output_tokens or 0

        if self.on_level_start:
            self.on_level_start(concurrency)
        self.progress(
            f"c={concurrency}: {limit if limit < MAX_REQUESTS else 'unbounded'} request(s)"
            + (f", at most {s.duration_s:g} s" if s.duration_s else "")
        )
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + (s.duration_s if s.duration_s is not None else 365 * 86400)
        workers = asyncio.gather(*(worker(deadline) for _ in range(concurrency)))
        reporter = asyncio.ensure_future(self.report(concurrency, limit, t0, results, state))
        try:
            await workers
        finally:
            reporter.cancel()
        window = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        if self.on_level_end:
            self.on_level_end(concurrency)
        stats = summarize(concurrency, results, window, cpu)
        self.progress(
            f"c={concurrency}: done: {stats.requests} ok, {stats.errors} error(s), "
            f"{stats.aggregate_tok_s:,.1f} tok/s in {window:.1f} s"
        )
        return stats

    async def report(
        self, concurrency: int, limit: int, t0: float, results: list[RequestResult], state: dict[str, int]
    ) -> None:
        """Progress every few seconds while a level runs."""
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            total = f"/{limit}" if limit < MAX_REQUESTS else ""
            self.progress(
                f"c={concurrency}: {len(results)}{total} requests, {state['errors']} error(s), "
                f"{state['tokens']:,} tokens, {time.perf_counter() - t0:.0f} s"
            )


def run(endpoint: Endpoint, settings: Settings, progress: Progress | None = None, **hooks: LevelHook) -> BenchResult:
    """Run every level against ENDPOINT (blocking)."""
    return asyncio.run(LoadGenerator(endpoint, settings, progress, **hooks).run())
