"""Each host's own operation names: a touch of pyinfra's internals, kept here alone.

In API mode pyinfra hashes an operation by its position in the host's list, so different operations at
the same position on different hosts share one hash, and `state.op_meta[hash].names` is the union of
their names (a vLLM host would be reported as changing "Ollama | Directory …" on a mixed fleet).
pyinfra keeps no per-host name, so `ensure_shared_op_meta` — which every operation call goes through,
with the current host in pyinfra's context — is wrapped once to record (host, hash) → name.
Checked against pyinfra 3.10.0 (`pyinfra/api/operation.py`: `ensure_shared_op_meta(state, op_hash,
op_order, global_arguments, names)`, called from `_wrap_operation`).
"""

from __future__ import annotations

import importlib
from typing import Any

from pyinfra import context

# The module itself: `pyinfra.api.operation` as an attribute is the `operation` decorator it defines.
_operation = importlib.import_module("pyinfra.api.operation")

_ATTRIBUTE = "_gpuctl_op_names"
_original = _operation.ensure_shared_op_meta


def _recording(state: Any, op_hash: str, op_order: Any, global_arguments: Any, names: set[str]) -> Any:
    try:
        host_name = context.host.name
    except (AttributeError, TypeError, LookupError):  # no host in pyinfra's context: nothing to record
        host_name = None
    if host_name is not None and names:
        if not hasattr(state, _ATTRIBUTE):
            setattr(state, _ATTRIBUTE, {})
        getattr(state, _ATTRIBUTE)[(host_name, op_hash)] = sorted(names)[0]
    return _original(state, op_hash, op_order, global_arguments, names)


if getattr(_operation.ensure_shared_op_meta, "__name__", "") != "_recording":
    _operation.ensure_shared_op_meta = _recording


def op_name(state: Any, host: Any, op_hash: str) -> str:
    """HOST's own name for the operation OP_HASH (the shared union only if none was recorded)."""
    own = getattr(state, _ATTRIBUTE, {}).get((host.name, op_hash))
    if own is not None:
        return own
    names = sorted(state.op_meta[op_hash].names)
    return names[0] if names else op_hash
