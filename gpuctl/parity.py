"""`gpuctl parity A B`: the same requests, with the official `openai` client, against two targets (typically
a laptop's Ollama and production's vLLM), and what each did with every parameter an application may use.

Generated text is never compared for equality (other weights, other KV dtypes): each probe judges shape and
behaviour (the stop sequence honoured, the token limit honoured, valid JSON, a tool call produced). A probe
answers "works", "ignored" (accepted, no effect) or "error" (refused), with the server's own message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gpuctl.errors import GpuctlError

if TYPE_CHECKING:  # imported when a comparison runs: the CLI starts without them
    import openai

Status = Literal["works", "ignored", "error"]
COUNT = [{"role": "user", "content": "Count from one to twenty in words, separated by spaces."}]
JSON_ASK = [{"role": "user", "content": 'Reply with a JSON object whose key "answer" holds the word "yes".'}]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIMEOUT_S = 120


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str


@dataclass(frozen=True)
class Target:
    """One side of the comparison: where the OpenAI client goes, with what key and trust, for which model."""

    label: str
    base_url: str
    api_key: str
    model: str
    verify: str | bool = True

    def client(self) -> openai.OpenAI:
        try:
            import httpx
            import openai
        except ImportError:
            raise GpuctlError("gpuctl parity needs the openai package: pip install 'gpuctl[parity]'") from None

        http = httpx.Client(verify=self.verify, timeout=TIMEOUT_S)
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, http_client=http, max_retries=0)


def text_of(reply: Any) -> str:
    return reply.choices[0].message.content or "" if reply.choices else ""


def chat(client: openai.OpenAI, model: str, messages: list[dict[str, str]] = COUNT, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=messages, **kwargs)  # type: ignore[arg-type]


def probe_models(client: openai.OpenAI, model: str) -> Outcome:
    ids = [m.id for m in client.models.list()]
    if model in ids or f"{model}:latest" in ids:
        return Outcome("works", f"lists {model}")
    return Outcome("error", f"does not list {model} (lists {', '.join(ids[:5]) or 'nothing'})")


def probe_chat(client: openai.OpenAI, model: str) -> Outcome:
    content = text_of(chat(client, model, max_tokens=16))
    return Outcome("works", f"{len(content.split())} words") if content else Outcome("ignored", "empty content")


def probe_stream(client: openai.OpenAI, model: str) -> Outcome:
    """stream=True with stream_options.include_usage: the text in chunks, then a chunk with the usage."""
    text, usage = "", None
    stream = chat(client, model, max_tokens=16, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    if not text:
        return Outcome("ignored", "no content streamed")
    if usage is None:
        return Outcome("ignored", "streamed, but no usage chunk (include_usage ignored)")
    return Outcome("works", f"usage: {usage.completion_tokens} completion tokens")


def token_limit(field: str) -> Callable[[openai.OpenAI, str], Outcome]:
    def probe(client: openai.OpenAI, model: str) -> Outcome:
        reply = chat(client, model, **{field: 4})
        used = reply.usage.completion_tokens if reply.usage else len(text_of(reply).split())
        finish = reply.choices[0].finish_reason
        if used <= 4:
            return Outcome("works", f"{used} tokens, finish_reason {finish}")
        return Outcome("ignored", f"{used} tokens for {field}=4 (finish_reason {finish})")

    return probe


def probe_stop(client: openai.OpenAI, model: str) -> Outcome:
    """A word from the unconstrained answer becomes the stop sequence of the same request."""
    base = text_of(chat(client, model, max_tokens=24, temperature=0, seed=7))
    words = base.split()
    if len(words) < 3:
        return Outcome("ignored", f"too short an answer to pick a stop word from: {base!r}")
    stop = words[len(words) // 2]
    cut = text_of(chat(client, model, max_tokens=24, temperature=0, seed=7, stop=[stop]))
    if stop not in cut and len(cut) < len(base):
        return Outcome("works", f"stopped before {stop!r}")
    return Outcome("ignored", f"{stop!r} still in the answer")


def probe_seed(client: openai.OpenAI, model: str) -> Outcome:
    """temperature=1, top_p=0.9 and one seed twice: the same answer means the seed (or determinism) holds."""
    kwargs = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.9, "seed": 1234}
    first, second = (text_of(chat(client, model, **kwargs)) for _ in range(2))
    if first == second:
        return Outcome("works", "one seed, one answer (temperature 1, top_p 0.9)")
    return Outcome("ignored", "one seed, two answers")


def probe_n(client: openai.OpenAI, model: str) -> Outcome:
    reply = chat(client, model, max_tokens=8, n=2)
    count = len(reply.choices)
    return Outcome("works", "2 choices") if count == 2 else Outcome("ignored", f"{count} choice(s) for n=2")


def probe_logprobs(client: openai.OpenAI, model: str) -> Outcome:
    reply = chat(client, model, max_tokens=4, logprobs=True, top_logprobs=2)
    found = reply.choices[0].logprobs
    tokens = found.content if found is not None else None
    if tokens:
        return Outcome("works", f"{len(tokens)} tokens with log-probabilities")
    return Outcome("ignored", "no logprobs in the answer")


def probe_json(client: openai.OpenAI, model: str) -> Outcome:
    content = text_of(chat(client, model, JSON_ASK, max_tokens=48, response_format={"type": "json_object"}))
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return Outcome("ignored", f"not JSON: {content[:60]!r}")
    return Outcome("works", "a JSON object") if isinstance(value, dict) else Outcome("ignored", "JSON, not an object")


def probe_json_schema(client: openai.OpenAI, model: str) -> Outcome:
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    content = text_of(chat(client, model, JSON_ASK, max_tokens=48, response_format=response_format))
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return Outcome("ignored", f"not JSON: {content[:60]!r}")
    if isinstance(value, dict) and set(value) == {"answer"} and isinstance(value["answer"], str):
        return Outcome("works", "matches the schema")
    return Outcome("ignored", f"JSON outside the schema: {content[:60]!r}")


def probe_tools(client: openai.OpenAI, model: str) -> Outcome:
    messages = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    reply = chat(client, model, messages, max_tokens=64, tools=[WEATHER_TOOL])
    calls = reply.choices[0].message.tool_calls or []
    if not calls:
        return Outcome("ignored", f"no tool call (finish_reason {reply.choices[0].finish_reason})")
    call = calls[0].function
    try:
        json.loads(call.arguments or "")
    except json.JSONDecodeError:
        return Outcome("ignored", f"{call.name} called with arguments that are not JSON")
    return Outcome("works", f"{call.name}({call.arguments})")


def probe_embeddings(client: openai.OpenAI, model: str) -> Outcome:
    data = client.embeddings.create(model=model, input=["hello"]).data
    if data and data[0].embedding:
        return Outcome("works", f"{len(data[0].embedding)} dimensions")
    return Outcome("ignored", "no embedding")


PROBES: dict[str, Callable[[openai.OpenAI, str], Outcome]] = {
    "models": probe_models,
    "chat": probe_chat,
    "stream": probe_stream,
    "max_tokens": token_limit("max_tokens"),
    "max_completion_tokens": token_limit("max_completion_tokens"),
    "stop": probe_stop,
    "seed": probe_seed,
    "n": probe_n,
    "logprobs": probe_logprobs,
    "json": probe_json,
    "json_schema": probe_json_schema,
    "tools": probe_tools,
    "embeddings": probe_embeddings,
}
"""Each parameter or route an application may use, in the order they are probed and printed."""
DEFAULT_REQUIRED = ("models", "chat", "stream")


def run_probe(name: str, client: openai.OpenAI, model: str) -> Outcome:
    """One probe; the server's refusal (or no answer) is its 'error' with the server's message."""
    import openai

    try:
        return PROBES[name](client, model)
    except openai.APIStatusError as exc:
        return Outcome("error", f"{exc.status_code}: {server_message(exc)}")
    except openai.APIConnectionError as exc:
        return Outcome("error", f"no answer: {exc}")
    except openai.APIError as exc:  # an error event inside a stream, an answer the client cannot read
        return Outcome("error", f"{type(exc).__name__}: {str(exc)[:200]}")
    except (IndexError, AttributeError, TypeError, ValueError) as exc:  # an answer without the expected shape
        return Outcome("error", f"unexpected answer: {type(exc).__name__}: {str(exc)[:160]}")


def server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = (inner.get("message") or inner.get("detail")) if isinstance(inner, dict) else inner
        if message:
            return str(message)[:200]
    return str(exc.message)[:200]


def compare(targets: list[Target], names: list[str]) -> dict[str, list[Outcome]]:
    """Every probe in NAMES against every target: {probe: [outcome per target]}."""
    clients = [t.client() for t in targets]
    return {name: [run_probe(name, c, t.model) for c, t in zip(clients, targets, strict=True)] for name in names}


def failing(matrix: dict[str, list[Outcome]], required: list[str]) -> list[str]:
    """Required probes that do not work on every target."""
    return [name for name in required if any(o.status != "works" for o in matrix.get(name, []))]


def resolve(target: str, inventory_ref: str | None, model: str | None, api_key: str | None) -> Target:
    """TARGET as the OpenAI client reaches it: a host or inventory (as `gpuctl env` gives it, the key read
    from where it is), or a URL (the model asked from the server unless MODEL says it, API_KEY sent)."""
    if target.startswith(("http://", "https://")):
        from gpuctl.detect import detect

        root = target.rstrip("/").removesuffix("/v1")
        chosen = detect(root, api_key).pick(model, root)
        return Target(target, f"{root}/v1", api_key or "none", chosen)
    from gpuctl import client_env, inventory
    from gpuctl.keystore import Keystore

    inv, hosts = inventory.find_hosts(target, inventory_ref)
    host, engine, _ = client_env.pick(hosts, target, model, None)
    keystore = Keystore.for_inventory(inv.path, write=False)
    env = client_env.app_env(host, engine, keystore, inv.base_dir, model=model)
    if env.model is None:
        raise GpuctlError(f"{target}: {host.name} {engine.label} names no model (add one to the inventory)")
    if env.ca_file is not None and not env.ca_file.is_file():
        raise GpuctlError(f"{target}: the CA to trust, {env.ca_file}, does not exist (gpuctl deploy writes it)")
    verify: str | bool = str(env.ca_file) if env.ca_file else True
    return Target(f"{target} ({host.name} {engine.label})", env.base_url, env.key.value(), env.model, verify)
