"""This machine as a developer's endpoint: Ollama on loopback, GPU if there is one, else the CPU.

Applications use the same OpenAI-compatible API as production: http://127.0.0.1:11434/v1.
"""

from gpuctl.inventory import Host, Ollama

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
            models=["qwen2.5:0.5b"],
        ),
    ),
]
