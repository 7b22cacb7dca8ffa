"""This machine as a developer's endpoint: Ollama on loopback, GPU if there is one, else the CPU.

Applications use the same OpenAI-compatible API as production, and the same model name:
`eval "$(gpuctl env dev-laptop)"` points them at http://127.0.0.1:11434/v1 and model llama-3.1-8b, as
`eval "$(gpuctl env prod)"` points them at production (inventories/prod.py).
"""

from gpuctl.inventory import Host, Model, Ollama

# The name production serves Llama 3.1 8B under. On a CPU laptop the tiny qwen2.5:0.5b answers under
# that name (same API, same name, a much smaller model: fine for wiring an app, not for judging answers);
# on a laptop with a GPU, pull the real one under the same name: ollama="llama3.1:8b".
LLAMA_8B = Model("llama-3.1-8b", ollama="qwen2.5:0.5b")

laptop = [
    Host(
        "dev-laptop",
        local=True,
        ollama=Ollama(
            version="0.40.2",  # current stable release, checked 2026-12-04: see gpuctl/outside.py
            bind="127.0.0.1",
            port=11434,
            keep_alive="30m",
            num_parallel=1,
            max_loaded_models=1,
            cpu_fallback=True,
            models=[LLAMA_8B],
        ),
    ),
]
