"""An application of the hybrid pattern: the official OpenAI client, configured only by the environment
`gpuctl env TARGET` gives (OPENAI_BASE_URL, OPENAI_API_KEY, SSL_CERT_FILE, OPENAI_MODEL). The same file runs
against a laptop's Ollama and production's vLLM; nothing in it names either."""

import os

from openai import OpenAI

client = OpenAI()
model = os.environ["OPENAI_MODEL"]
messages = [{"role": "user", "content": "Say hello in five words."}]

reply = client.chat.completions.create(model=model, messages=messages, max_tokens=16)
content = reply.choices[0].message.content
assert content, reply

text, usage = "", None
stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=16, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
assert text and usage is not None and usage.completion_tokens > 0, (text, usage)

listed = [m.id for m in client.models.list()]
assert model in listed or f"{model}:latest" in listed, listed  # Ollama lists a name with its tag
print(f"ok {model} via {client.base_url}: {content!r}")
