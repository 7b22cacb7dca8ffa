"""The planner's KV-cache arithmetic against the REAL vLLM (CPU build): same model, same KV space.

vLLM prints "KV cache size: N tokens" only after it has started; the planner computes it before.
On the CPU build the KV space is given exactly (VLLM_CPU_KVCACHE_SPACE), so there is no profiling
overhead to estimate: the figures must agree to within one 16-token block (tolerance: vLLM rounds
the pool down to whole blocks, and so does the planner).
"""

from __future__ import annotations

import pytest

from gpuctl.capacity import BLOCK_TOKENS, cache_tokens, kv_bytes_per_token
from gpuctl.catalog import GIB, architecture_from_config

pytestmark = pytest.mark.engine


def test_planned_cache_tokens_match_what_vllm_reports(vllm_server, tiny_model_dir):
    model = architecture_from_config(tiny_model_dir / "config.json")
    # --dtype float32 with kv_cache_dtype auto: 4 bytes per KV element
    per_token = kv_bytes_per_token(model, kv_dtype_bytes=4, tp=1)
    assert per_token == 2 * model.layers * model.kv_heads * model.head_dim * 4
    planned = cache_tokens(vllm_server.kv_cache_space_gib * GIB, per_token)  # VLLM_CPU_KVCACHE_SPACE
    assert vllm_server.kv_cache_tokens is not None, vllm_server.kv_cache_log_line
    assert abs(vllm_server.kv_cache_tokens - planned) <= BLOCK_TOKENS, (vllm_server.kv_cache_log_line, planned)
    assert vllm_server.max_concurrency == pytest.approx(planned / vllm_server.max_model_len, abs=0.01)
