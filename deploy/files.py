"""Put rendered files on a host: exactly the bytes `gpuctl render` shows, with mode and owner."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Home
from pyinfra.operations import files

from gpuctl.host_layout import PRIVATE_TREE, folder_mode
from gpuctl.render import RenderedFile


def private_upload_dir() -> str | None:
    """With sudo, pyinfra uploads to a temporary file first (in /tmp, 0644 by default). Secret files go
    through a 0700 folder in the SSH user's home instead; None when no sudo is used."""
    if not host.data.get("_sudo"):
        return None
    home = host.get_fact(Home, _sudo=False)
    folder = f"{home}/.cache/gpuctl-upload"
    files.directory(name="Private upload folder (sudo)", path=folder, present=True, mode="0700", _sudo=False)
    return folder


def put_rendered(item: RenderedFile) -> OperationMeta:
    """Upload one rendered file; a no-op when the host already has the same content and mode."""
    for folder in reversed([item.path.parent, *item.path.parent.parents]):
        if folder == PRIVATE_TREE or PRIVATE_TREE in folder.parents or folder == item.path.parent:
            files.directory(
                name=f"Directory {folder}",
                path=str(folder),
                present=True,
                user="root",
                group="root",
                mode=folder_mode(folder),
            )
    extra = {}
    if item.secret and (upload := private_upload_dir()) is not None:
        extra["_temp_dir"] = upload
    return files.put(
        name=f"File {item.path}" + (" (secret, 0600)" if item.secret else ""),
        src=StringIO(item.content),
        dest=str(item.path),
        mode=item.mode_str,
        user=item.owner,
        group=item.group,
        **extra,
    )
