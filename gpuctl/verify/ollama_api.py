"""Checks of an Ollama server: version, models, a streamed native chat, the OpenAI shim under the
same model name (the dev/prod parity gpuctl promises), and the keep-alive the spec asked for."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from gpuctl.verify.checks import ApiChecker, Check, Clock, run_check, unreachable

PROMPT = [{"role": "user", "content": "Say hello in five words."}]
FOREVER_AFTER_S = 100 * 365 * 24 * 3600  # a negative keep-alive shows as an expiry centuries away
KEEP_ALIVE_TOLERANCE_S = 30


@dataclass
class OllamaExpectations:
    base_url: str
    version: str | None = None
    models: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    """NAME: TAG, each NAME a second name of the pulled TAG (what applications send, as to vLLM)."""
    keep_alive: str | None = None
    max_tokens: int = 16
    request_timeout_s: float = 10.0
    generation_timeout_s: float = 60.0


def full_name(model: str) -> str:
    return model if ":" in model else f"{model}:latest"


def duration_seconds(text: str) -> float:
    """Go-style duration (5m, 1h30m, 45s, 0, -1) in seconds; plain numbers are seconds."""
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    sign = -1 if text.startswith("-") else 1
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    return sign * sum(float(n) * units[u] for n, u in parts)


class OllamaChecker(ApiChecker):
    expect: OllamaExpectations

    @property
    def model(self) -> str | None:
        """The model generation is checked with: the name applications send (the first alias), else the first."""
        if self.expect.aliases:
            return full_name(next(iter(self.expect.aliases)))
        return full_name(self.expect.models[0]) if self.expect.models else None

    def run(self) -> list[Check]:
        checks = [run_check("version", self.version)]
        if unreachable(checks[0]):
            return checks
        checks.append(run_check("models", self.models))
        if self.model is None:
            checks.append(Check("chat", True, "no model in the spec: generation not checked"))
            return checks
        for name, func in (("chat", self.chat), ("openai", self.openai_shim), ("keep_alive", self.keep_alive)):
            checks.append(run_check(name, func))
        return checks

    def version(self) -> Check:
        return self.version_check("/api/version", "Ollama", pinned="the spec pins")

    def models(self) -> Check:
        response = self.http.get(self.url("/api/tags"), timeout=self.expect.request_timeout_s)
        listed = {m.get("name") for m in response.json().get("models", [])}
        missing = [m for m in self.expect.models if full_name(m) not in listed]
        if missing:
            return Check(
                "models", False, f"not pulled: {', '.join(missing)} (the server has {sorted(listed) or 'none'})"
            )
        digests = {m.get("name"): m.get("digest") for m in response.json().get("models", [])}
        for alias, tag in self.expect.aliases.items():
            digest = digests.get(full_name(alias))
            if digest is None:
                return Check("models", False, f"{alias} is not a name of {tag}: not listed (gpuctl deploy names it)")
            if digest != digests.get(full_name(tag)):
                return Check("models", False, f"{alias} is another model than {tag} (its digest differs)")
        shim = self.http.get(self.url("/v1/models"), timeout=self.expect.request_timeout_s)
        ids = {m.get("id") for m in shim.json().get("data", [])} if shim.status_code == 200 else set()
        unlisted = [a for a in self.expect.aliases if full_name(a) not in ids and a not in ids]
        if unlisted:
            return Check("models", False, f"/v1/models does not list {', '.join(unlisted)}")
        named = f", {len(self.expect.aliases)} named as applications send them" if self.expect.aliases else ""
        return Check("models", True, f"{len(self.expect.models)} model(s) present{named}", {"models": len(listed)})

    def chat(self) -> Check:
        body = {
            "model": self.model,
            "messages": PROMPT,
            "stream": True,
            "options": {"num_predict": self.expect.max_tokens},
        }
        clock = Clock()
        final: dict = {}
        try:
            with self.post("/api/chat", body, stream=True) as response:
                if response.status_code != 200:
                    return Check(
                        "chat", False, f"POST /api/chat answered {response.status_code}: {response.text[:160]}"
                    )
                for line in response.iter_lines(decode_unicode=True):
                    if not line:
                        continue
                    chunk = json.loads(line)
                    if "error" in chunk:
                        return Check("chat", False, f"Ollama error: {chunk['error']}")
                    if (chunk.get("message") or {}).get("content"):
                        clock.content()
                    if chunk.get("done"):
                        final = chunk
        except (requests.Timeout, requests.ConnectionError):
            if clock.timing.chunks == 0:
                return Check(
                    "chat", False, f"engine not generating: no token within {self.expect.generation_timeout_s:g} s"
                )
            return self.stalled("chat", clock.timing.chunks)
        timing = clock.finish()
        timing.tokens = final.get("eval_count", timing.chunks)
        if timing.chunks == 0 or not final:
            return Check("chat", False, "the NDJSON stream ended without content or without its final line")
        numbers = timing.numbers()
        return Check("chat", True, f"TTFT {numbers['ttft_ms']} ms, {timing.tokens} tokens", numbers)

    def openai_shim(self) -> Check:
        body = {"model": self.model, "messages": PROMPT, "max_tokens": self.expect.max_tokens}
        response = self.post("/v1/chat/completions", body)
        if response.status_code != 200:
            return Check(
                "openai", False, f"POST /v1/chat/completions answered {response.status_code}: {response.text[:160]}"
            )
        content = (response.json()["choices"][0]["message"].get("content") or "").strip()
        return Check("openai", bool(content), f"/v1 answers as {self.model}" if content else "empty content from /v1")

    def keep_alive(self) -> Check:
        if self.expect.keep_alive is None:
            return Check("keep_alive", True, "no keep-alive in the spec: not checked")
        wanted = duration_seconds(self.expect.keep_alive)
        response = self.http.get(self.url("/api/ps"), timeout=self.expect.request_timeout_s)
        loaded = {m.get("name"): m for m in response.json().get("models", [])}
        if wanted == 0:
            ok = self.model not in loaded
            return Check(
                "keep_alive", ok, "unloaded right after use (keep-alive 0)" if ok else "still loaded with keep-alive 0"
            )
        if self.model not in loaded:
            return Check(
                "keep_alive",
                False,
                f"{self.model} is not loaded right after a chat (keep-alive {self.expect.keep_alive})",
            )
        expires = datetime.fromisoformat(loaded[self.model]["expires_at"].replace("Z", "+00:00"))
        left = (expires - datetime.now(UTC)).total_seconds()
        ok = left > FOREVER_AFTER_S if wanted < 0 else abs(left - wanted) <= KEEP_ALIVE_TOLERANCE_S
        when = "never expires" if left > FOREVER_AFTER_S else f"expires in {left:.0f} s"
        reason = f"{when} (spec keep-alive {self.expect.keep_alive})"
        return Check(
            "keep_alive",
            ok,
            reason if ok else f"{reason}: OLLAMA_KEEP_ALIVE did not reach the server",
            {"expires_in_s": round(left)},
        )
