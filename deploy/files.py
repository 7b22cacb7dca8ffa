"""Put rendered files on a host: exactly the bytes `gpuctl render` shows, with mode and owner."""

from __future__ import annotations

from io import StringIO

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from gpuctl.render import RenderedFile


def put_rendered(item: RenderedFile) -> OperationMeta:
    """Upload one rendered file; a no-op when the host already has the same content and mode."""
    files.directory(
        name=f"Directory {item.path.parent}", path=str(item.path.parent), present=True,
        user="root", group="root", mode="0755",
    )  # fmt: skip
    return files.put(
        name=f"File {item.path}" + (" (secret, 0600)" if item.secret else ""),
        src=StringIO(item.content), dest=str(item.path), mode=item.mode_str, user=item.owner, group=item.group,
    )  # fmt: skip
