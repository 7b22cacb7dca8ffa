"""A third-party apt repository signed by its own key (NVIDIA's, Docker's): key, source list, update."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server


def signed_apt_source(owner: str, key_command: str, keyring: str, sources: str, line: str) -> None:
    """Install OWNER's key with KEY_COMMAND (once: when KEYRING is missing), write the SOURCES list with
    LINE (which names the keyring in signed-by=), and update apt's lists only when the list changed."""
    if host.get_fact(File, path=keyring) is None:
        server.shell(name=f"{owner} apt key ({keyring})", commands=[key_command])
    changed = files.put(
        name=f"{owner} apt source ({sources})",
        src=StringIO(line + "\n"),
        dest=sources,
        mode="0644",
        user="root",
        group="root",
    )
    apt.update(name=f"apt update ({owner} source changed)", _if=changed.did_change)
