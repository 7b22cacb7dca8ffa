"""Put rendered files on a host: exactly the bytes `gpuctl render` shows, with mode and owner.

Every rendered file of a host, and the folders gpuctl keeps for them, is read in one command first
(`expect`, the PathStates fact): a file already as rendered adds no operation at all, where pyinfra's own
steps would read each file and folder in three or four commands."""

from __future__ import annotations

from hashlib import sha1
from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Home
from pyinfra.operations import files

from gpuctl.deploy import memo
from gpuctl.deploy.facts import PathStates
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


class Unchanged:
    """What put_rendered gives for a file already as rendered: an operation that changed nothing."""

    def did_change(self) -> bool:
        return False


EXPECTED: dict[str, tuple[str, ...]] = {}
"""By host name: the paths whose state `expect` reads in one command (each host prepares in its own
greenlet; the key keeps them apart)."""


def expect(rendered: list[RenderedFile]) -> None:
    """Read the state of every file RENDERED for the current host, and of the folders kept for them."""
    paths = {str(item.path) for item in rendered}
    paths |= {str(folder) for item in rendered for folder in managed_folders(item)}
    EXPECTED[host.name] = tuple(sorted(paths))
    if paths:
        memo.fact(PathStates, paths=EXPECTED[host.name])


def managed_folders(item: RenderedFile) -> list[PurePosixPath]:
    """The folders put_rendered keeps for ITEM: its own, and those of gpuctl's private tree above it."""
    return [
        folder
        for folder in reversed([item.path.parent, *item.path.parent.parents])
        if folder == PRIVATE_TREE or PRIVATE_TREE in folder.parents or folder == item.path.parent
    ]


def known_state(path: PurePosixPath) -> tuple[str, int, str, str, str] | None | bool:
    """PATH's state from `expect`'s one read; False when it was not read."""
    paths = EXPECTED.get(host.name)
    if not paths or str(path) not in paths:
        return False
    return (memo.fact(PathStates, paths=paths) or {}).get(str(path))


def as_rendered(item: RenderedFile) -> bool:
    """Whether the host has ITEM's bytes, mode and owner already, in folders as put_rendered keeps them."""
    state = known_state(item.path)
    wanted = ("regular file", item.mode, item.owner, item.group, sha1(item.content.encode()).hexdigest())
    if state != wanted:
        return False
    return all(
        known_state(folder) == ("directory", int(folder_mode(folder), 8), item.owner, item.group, "-")
        for folder in managed_folders(item)
    )


def sha1_on_host(path: PurePosixPath) -> str | None:
    """The sha1 of PATH's content on the host (from `expect`'s read when it covered PATH), or None."""
    state = known_state(path)
    if state is False:
        from pyinfra.facts.files import Sha1File

        return host.get_fact(Sha1File, path=str(path))
    return state[4] if state and state[0] == "regular file" else None  # type: ignore[index]


def put_rendered(item: RenderedFile) -> OperationMeta | Unchanged:
    """Upload one rendered file; no operation at all when the host already has the same content and mode."""
    if as_rendered(item):
        host.noop(f"{item.path} is as rendered")
        return Unchanged()
    for folder in managed_folders(item):
        files.directory(
            name=f"Directory {folder}",
            path=str(folder),
            present=True,
            user=item.owner,
            group=item.group,
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
