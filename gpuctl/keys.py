"""The gateway keys gpuctl generates: where they are, and rotating them safely.

Rotation deploys the new key first (nginx reloads, nothing restarts) and keeps it locally only for the
hosts whose deploy succeeded, so a failed host keeps working with its old key on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuctl.errors import GpuctlError
from gpuctl.inventory import Inventory
from gpuctl.keystore import Keystore
from gpuctl.spec import HostSpec


def gateway_hosts(inv: Inventory, limit: tuple[str, ...]) -> list[HostSpec]:
    """The selected hosts that have a gateway (an error when none has)."""
    hosts = [h for h in inv.select(limit) if h.gateway is not None]
    if not hosts:
        raise GpuctlError(f"{inv.label}: no selected host has a gateway")
    return hosts


def key_rows(inv: Inventory, hosts: list[HostSpec]) -> list[dict[str, Any]]:
    """Where each gateway's key and CA are (never the values)."""
    store = Keystore.for_inventory(inv.path, write=False)
    rows = []
    for host in hosts:
        gateway, default = host.gateway, host.gateway_default_engine()
        assert gateway is not None and default is not None
        generated = gateway.api_key is None
        key = str(store.path(store.api_key_name(host.name))) if generated else gateway.api_key.describe()  # type: ignore[union-attr]
        trust = str(store.ca_path) if gateway.tls == "private-ca" else gateway.ca_file or "system CAs"
        rows.append(
            {
                "host": host.name,
                "url": host.gateway_url(default) + "/v1",
                "key": key,
                "key_exists": store.api_key(host.name) is not None if generated else None,
                "ca": trust,
            }
        )
    return rows


@dataclass
class Rotation:
    """What a rotation did: the deploy's outcomes, the hosts whose new key was kept, and where."""

    outcomes: list[Any]
    rotated: list[str] = field(default_factory=list)
    key_files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return len(self.rotated) == len(self.outcomes)


def check_rotatable(inv: Inventory, hosts: list[HostSpec]) -> None:
    """Only keys gpuctl generated, and only once they exist, can be rotated."""
    pinned = [h.name for h in hosts if h.gateway is not None and h.gateway.api_key is not None]
    if pinned:
        raise GpuctlError(
            f"{inv.label}: {', '.join(pinned)}: the gateway key comes from the inventory's secret "
            "reference; change it there and run gpuctl deploy"
        )
    staged = Keystore.for_inventory(inv.path, write=False)
    missing = [h.name for h in hosts if staged.api_key(h.name) is None]
    if missing:
        raise GpuctlError(f"{inv.label}: {', '.join(missing)}: no key to rotate yet (gpuctl deploy creates it)")


def rotate(inv: Inventory, hosts: list[HostSpec], progress: Callable[[str, str], None] | None) -> Rotation:
    """New keys for HOSTS: deployed first, kept locally for the hosts whose deploy succeeded."""
    from gpuctl import fleet

    check_rotatable(inv, hosts)
    staged = Keystore.for_inventory(inv.path, write=False)
    new_keys = {h.name: staged.rotate_api_key(h.name) for h in hosts}
    rotation = Rotation(fleet.deploy(hosts, inv.base_dir, keystore=staged, progress=progress))
    store = Keystore.for_inventory(inv.path)
    for outcome in rotation.outcomes:
        if outcome.status != "failed":
            store.store(store.api_key_name(outcome.name), new_keys[outcome.name] + "\n", 0o600)
            rotation.rotated.append(outcome.name)
            rotation.key_files[outcome.name] = str(store.path(store.api_key_name(outcome.name)))
    return rotation
