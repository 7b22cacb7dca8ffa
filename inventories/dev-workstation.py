"""This machine, without root: Ollama in your home as your own `systemctl --user` service, for a developer
on a shared workstation (no sudo, nothing installed outside ~).

An admin does two things once: installs the tools (`apt install curl tar zstd`) and lets your services run
while you are logged out (`sudo loginctl enable-linger YOUR_USER`). Then, as you:

    gpuctl deploy dev-workstation && gpuctl verify dev-workstation
    eval "$(gpuctl env dev-workstation)"   # the same app code as against prod

Where things go: the release in ~/.local/lib/gpuctl-ollama (linked as ~/.local/bin/ollama), the unit and its
drop-in in ~/.config/systemd/user, models in ~/.ollama/models, release records in ~/.local/state/gpuctl.
Pick a port no other user of the workstation takes (loopback is shared by everyone on it).
"""

from gpuctl.inventory import Host, Model, Ollama

LLAMA_8B = Model("llama-3.1-8b", ollama="qwen2.5:0.5b")  # as in dev-laptop.py: production's model name

workstation = [
    Host(
        "dev-workstation",
        local=True,
        install="user",
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
