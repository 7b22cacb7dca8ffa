"""Checks of an OpenAI-compatible vLLM server. Health endpoints can lie (the API server answers
while the engine core is hung), so a real completion, plain and streamed, is the proof."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import requests

from gpuctl.verify.checks import ApiChecker, Check, Clock, run_check, unreachable

PROMPT = [{"role": "user", "content": "Say hello in five words."}]
ENGINE_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:generation_tokens_total")
KV_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass
class VllmExpectations:
    """What the spec says the server must show (all derived from the host spec, or CLI flags)."""

    base_url: str
    model: str
    api_key: str | None = None
    version: str | None = None
    max_model_len: int | None = None
    key_required: bool = False
    max_tokens: int = 16
    request_timeout_s: float = 10.0
    generation_timeout_s: float = 30.0


class VllmChecker(ApiChecker):
    """Runs the vLLM checks against one base URL."""

    expect: VllmExpectations

    def headers(self, key: str | None = "spec") -> dict[str, str | None]:
        """Authorization for KEY ("spec": the expected key); None removes one the session would add."""
        key = self.expect.api_key if key == "spec" else key
        return {"Authorization": f"Bearer {key}" if key else None}

    def run(self) -> list[Check]:
        checks = [run_check("health", self.health)]
        if unreachable(checks[0]):
            return checks  # nothing listens: the other checks would only repeat it
        for name, func in (
            ("version", self.version),
            ("models", self.models),
            ("chat", self.chat),
            ("stream", self.stream),
            ("auth", self.auth),
            ("metrics", self.metrics),
        ):
            if name == "stream" and checks[-1].reason.startswith("engine not generating"):
                # The same hang again would only double the time to say so.
                checks.append(Check("stream", False, "engine not generating: not tried, the chat gave no token"))
                continue
            checks.append(run_check(name, func))
        return checks

    def health(self) -> Check:
        response = self.http.get(self.url("/health"), timeout=self.expect.request_timeout_s)
        return Check("health", response.status_code == 200, f"GET /health answered {response.status_code}")

    def version(self) -> Check:
        return self.version_check(
            "/version", "vLLM", pinned="the pinned image is", unpinned=" (no pinned version to compare)"
        )

    def models(self) -> Check:
        response = self.http.get(self.url("/v1/models"), headers=self.headers(), timeout=self.expect.request_timeout_s)
        if response.status_code != 200:
            return Check("models", False, f"GET /v1/models answered {response.status_code}: {response.text[:120]}")
        listed = {m.get("id"): m for m in response.json().get("data", [])}
        if self.expect.model not in listed:
            return Check("models", False, f"{self.expect.model!r} is not served; the server lists {sorted(listed)}")
        length = listed[self.expect.model].get("max_model_len")
        if self.expect.max_model_len is not None and length != self.expect.max_model_len:
            return Check(
                "models",
                False,
                f"{self.expect.model} has max_model_len {length}, the spec says {self.expect.max_model_len}",
                {"max_model_len": length or 0},
            )
        if length is None:
            return Check("models", True, f"{self.expect.model} listed (the server gives no max_model_len)")
        return Check("models", True, f"{self.expect.model} listed (max_model_len {length})", {"max_model_len": length})

    def _not_generating(self, what: str) -> Check:
        try:
            health = self.http.get(self.url("/health"), timeout=5).status_code
            shown = f"GET /health answered {health}"
        except requests.RequestException:
            shown = "GET /health did not answer"
        return Check(
            what, False, f"engine not generating: no token within {self.expect.generation_timeout_s:g} s ({shown})"
        )

    def chat(self) -> Check:
        body = {"model": self.expect.model, "messages": PROMPT, "max_tokens": self.expect.max_tokens}
        try:
            response = self.post("/v1/chat/completions", body, self.headers())
        except requests.Timeout:
            return self._not_generating("chat")
        if response.status_code != 200:
            return Check(
                "chat", False, f"POST /v1/chat/completions answered {response.status_code}: {response.text[:160]}"
            )
        data = response.json()
        content = (data["choices"][0]["message"].get("content") or "").strip()
        usage = data.get("usage") or {}
        ok = bool(content) and usage.get("completion_tokens", 0) > 0
        numbers = {
            "completion_tokens": usage.get("completion_tokens", 0),
            "prompt_tokens": usage.get("prompt_tokens", 0),
        }
        finish = data["choices"][0].get("finish_reason")
        reason = (
            f"{len(content)} characters, usage counted"
            if ok
            else f"the reply has {'no content' if not content else 'no usage count'} (finish_reason {finish}, "
            f"{usage.get('completion_tokens', 0)} completion tokens)"
        )
        return Check("chat", ok, reason, numbers)

    def stream(self) -> Check:
        body = {
            "model": self.expect.model,
            "messages": PROMPT,
            "max_tokens": self.expect.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        clock = Clock()
        usage: dict = {}
        try:
            with self.post("/v1/chat/completions", body, self.headers(), stream=True) as response:
                if response.status_code != 200:
                    return Check("stream", False, f"streamed chat answered {response.status_code}")
                for line in response.iter_lines(decode_unicode=True):
                    if (
                        clock.timing.chunks == 0
                        and clock.start + self.expect.generation_timeout_s < time.perf_counter()
                    ):
                        return self._not_generating("stream")
                    if not line or not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    usage = chunk.get("usage") or usage
                    if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                        clock.content()
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # A read timeout inside a stream surfaces as ConnectionError(ReadTimeoutError).
            if clock.timing.chunks == 0:
                return self._not_generating("stream")
            return self.stalled("stream", clock.timing.chunks)
        timing = clock.finish()
        timing.tokens = usage.get("completion_tokens", timing.chunks)
        if timing.chunks == 0:
            return Check("stream", False, "the stream ended without any content")
        numbers = timing.numbers()
        reason = f"TTFT {numbers['ttft_ms']} ms" + (
            f", {numbers['tokens_per_s']} tokens/s" if "tokens_per_s" in numbers else ""
        )
        return Check("stream", True, reason, numbers)

    def auth(self) -> Check:
        if not self.expect.key_required:
            return Check("auth", True, "no API key in the spec: not checked")
        response = self.http.get(
            self.url("/v1/models"), headers=self.headers(None), timeout=self.expect.request_timeout_s
        )
        ok = response.status_code == 401
        reason = (
            "a request without the key gets 401"
            if ok
            else (f"a request without the key got {response.status_code}: the API key is not enforced")
        )
        return Check("auth", ok, reason, {"status_without_key": response.status_code})

    def metrics(self) -> Check:
        response = self.http.get(self.url("/metrics"), timeout=self.expect.request_timeout_s)
        if response.status_code != 200:
            return Check("metrics", False, f"GET /metrics answered {response.status_code}")
        values = parse_metrics(response.text)
        missing = [g for g in ENGINE_GAUGES if g not in values]
        kv = next((g for g in KV_GAUGES if g in values), None)
        if kv is None:
            missing.append(KV_GAUGES[0])
        if missing:
            return Check("metrics", False, f"/metrics lacks {', '.join(missing)}")
        numbers = {
            "running": values["vllm:num_requests_running"],
            "waiting": values["vllm:num_requests_waiting"],
            "kv_cache_usage": round(values[kv], 4),
        }
        return Check("metrics", True, "engine gauges present", numbers)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {metric name: value summed over its label sets} (histogram parts skipped)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, rest = line.rpartition(" ")
        name = name_labels.split("{", 1)[0].strip()
        try:
            values[name] = values.get(name, 0.0) + float(rest)
        except ValueError:
            continue
    return values
