"""A check's result: name, pass/fail, a one-line reason, numbers, and the lines that explain a failure."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests


@dataclass
class Check:
    """One verified fact about an endpoint or a host."""

    name: str
    ok: bool
    reason: str
    numbers: dict[str, float | int | str] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "reason": self.reason,
            "numbers": self.numbers,
            "details": self.details,
        }


def run_check(name: str, func: Callable[[], Check]) -> Check:
    """Run FUNC; a network error or an answer of the wrong shape becomes a failed check saying what happened."""
    try:
        return func()
    except requests.Timeout as exc:
        return Check(name, False, timeout_reason(exc))
    except requests.exceptions.SSLError as exc:
        return Check(name, False, tls_reason(exc))
    except requests.ConnectionError as exc:
        return Check(name, False, connection_reason(exc))
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        return Check(name, False, f"{UNUSABLE_URL}{str(exc).strip(chr(39))}")
    except (
        json.JSONDecodeError,
        requests.exceptions.JSONDecodeError,
    ) as exc:  # requests' own, with simplejson: the body is not the JSON the API promises
        return Check(name, False, f"answered with something that is not JSON: {exc.doc[:80]!r}")
    except requests.RequestException as exc:
        return Check(name, False, f"request failed: {_short(exc)}")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:  # JSON of the wrong shape
        return Check(
            name, False, f"unexpected answer: a field the API promises is missing or of the wrong type ({exc!r})"
        )
    except ValueError as exc:
        return Check(name, False, f"unexpected answer: {exc}")


def _where(exc: requests.RequestException) -> str:
    """HOST:PORT the request went to, the scheme's default port spelled out ('10.0.0.5:443')."""
    url = urlsplit(getattr(exc.request, "url", None) or "")
    if not url.netloc:
        return "the endpoint"
    if url.port is not None or url.scheme not in ("http", "https"):
        return url.netloc
    return f"{url.netloc}:{443 if url.scheme == 'https' else 80}"


def timeout_reason(exc: requests.Timeout) -> str:
    """'127.0.0.1:8000 did not answer within 5 s (read timeout)', without the library's repr."""
    limit = re.search(r"timeout=([0-9.]+)", str(exc))
    within = f" within {float(limit.group(1)):g} s" if limit else ""
    kind = (
        "connect timeout: nothing accepted the connection"
        if isinstance(exc, requests.ConnectTimeout)
        else "read timeout"
    )
    return f"{_where(exc)} did not answer{within} ({kind})"


def tls_reason(exc: requests.exceptions.SSLError) -> str:
    """'TLS with HOST:PORT failed ([SSL: CERTIFICATE_VERIFY_FAILED] …)'; the bracketed OpenSSL reason only."""
    detail = re.search(r"\[SSL[^\]]*\][^'\"(]*", str(exc))
    why = detail.group(0).strip().rstrip(" .") if detail else "handshake failed"
    return f"TLS with {_where(exc)} failed ({why}): does it serve https, and is its certificate from the CA given?"


UNUSABLE_URL = "the URL cannot be used: "
UNREACHABLE = ("nothing answers on ", "cannot resolve ", "TLS with ", UNUSABLE_URL)
"""How a reason starts when the endpoint could not be reached at all (later checks are then skipped)."""


def unreachable(check: Check) -> bool:
    return not check.ok and check.reason.startswith(UNREACHABLE)


def connection_reason(exc: requests.ConnectionError) -> str:
    """Say what did not answer as a person would: 'nothing answers on 127.0.0.1:11434 (connection refused)'."""
    url = urlsplit(getattr(exc.request, "url", None) or "")
    where = _where(exc)
    text = str(exc)
    causes = {
        "refused": "connection refused",
        "No route to host": "no route to host",
        "Network is unreachable": "network unreachable",
        "timed out": "connection timed out",
    }
    if any(
        m in text
        for m in ("Name or service not known", "Temporary failure in name resolution", "nodename nor servname")
    ):
        return f"cannot resolve {url.hostname or where}: check the host's address"
    if any(m in text for m in ("RemoteDisconnected", "Connection reset", "Connection aborted")):
        return f"{where} closed the connection without answering: is the engine starting or crashing?"
    why = next((cause for marker, cause in causes.items() if marker in text), _short(exc))
    what = "the gateway" if url.scheme == "https" else "the engine"
    return f"nothing answers on {where} ({why}): is {what} deployed and running?"


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Caused by ", "(Caused by"):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip(" ()'\"")[:200]


@dataclass
class StreamTiming:
    """Timings of one streamed generation."""

    ttft_s: float | None = None
    tokens: int = 0
    chunks: int = 0
    total_s: float = 0.0
    gaps: list[float] = field(default_factory=list)

    def numbers(self) -> dict[str, float | int | str]:
        numbers: dict[str, float | int | str] = {"tokens": self.tokens}
        if self.ttft_s is not None:
            numbers["ttft_ms"] = round(self.ttft_s * 1000, 1)
        if self.gaps:
            numbers["itl_ms"] = round(sum(self.gaps) / len(self.gaps) * 1000, 2)
        generating = self.total_s - (self.ttft_s or 0)
        if self.tokens > 1 and generating > 0:
            numbers["tokens_per_s"] = round((self.tokens - 1) / generating, 1)
        return numbers


class Clock:
    """Marks content arrivals of a stream against its start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last: float | None = None
        self.timing = StreamTiming()

    def content(self) -> None:
        now = time.perf_counter()
        if self.timing.ttft_s is None:
            self.timing.ttft_s = now - self.start
        elif self.last is not None:
            self.timing.gaps.append(now - self.last)
        self.last = now
        self.timing.chunks += 1

    def finish(self) -> StreamTiming:
        self.timing.total_s = time.perf_counter() - self.start
        return self.timing


class ApiChecker:
    """What the two API checkers share: the expectations (a base URL and timeouts), the HTTP session, and
    the requests and failure reasons that read the same for vLLM and Ollama."""

    expect: Any  # VllmExpectations or OllamaExpectations: base_url, request_timeout_s, generation_timeout_s

    def __init__(self, expect: Any, session: requests.Session | None = None) -> None:
        self.expect = expect
        self.http = session or requests.Session()

    def url(self, path: str) -> str:
        return self.expect.base_url.rstrip("/") + path

    def post(
        self, path: str, body: dict, headers: dict[str, str | None] | None = None, stream: bool | None = None
    ) -> requests.Response:
        """POST a generation request: the request timeout to connect, the generation timeout to answer."""
        return self.http.post(
            self.url(path),
            json=body,
            headers=headers,
            stream=stream,
            timeout=(self.expect.request_timeout_s, self.expect.generation_timeout_s),
        )

    def version_check(self, path: str, product: str, pinned: str, unpinned: str = "") -> Check:
        """GET PATH's `version`, against the pinned one if any: "PRODUCT 1.2.3[UNPINNED]" when nothing is pinned,
        else "PRODUCT 1.2.3, but PINNED 1.2.4" when they differ."""
        response = self.http.get(self.url(path), timeout=self.expect.request_timeout_s)
        if response.status_code != 200:
            return Check(
                "version", False, f"GET {path} answered {response.status_code}: {response.text[:80]}".rstrip(": ")
            )
        got = response.json().get("version")
        if got is None:
            return Check("version", False, f"GET {path} answered without a version: is this {product}?")
        numbers: dict[str, float | int | str] = {"version": str(got)}
        if self.expect.version is None:
            return Check("version", True, f"{product} {got}{unpinned}", numbers)
        ok = got == self.expect.version
        return Check(
            "version", ok, f"{product} {got}" + ("" if ok else f", but {pinned} {self.expect.version}"), numbers
        )

    def stalled(self, name: str, chunks: int) -> Check:
        return Check(
            name,
            False,
            f"the stream stalled after {chunks} token(s): nothing more within {self.expect.generation_timeout_s:g} s",
        )
