"""Pure-torch stand-in for ``sgl_kernel`` on CPUs without Intel AMX (ttsearch; docs/design.md, "Engines").

SGLang 0.5.23's CPU path (``--device cpu``) imports exactly two ops from ``sgl_kernel`` at module
level (``sglang/srt/mem_cache/allocation.py`` and ``sglang/kernels/ops/kvcache/cache_move.py``);
the real wheel ships them as C++ kernels built for AMX machines. Everything else on the
``torch_native`` attention path is plain torch. These re-implementations follow the reference
kernels' documented semantics (and the Triton kernels they replace) exactly.

Installed into the venv as a path entry by ``agents/engines/sglang/support/setup_cpu.sh``. On a GPU
install the real ``sglang-kernel`` wheel provides ``sgl_kernel`` and this folder is not used.
Not provided on purpose: ``torch.ops.sgl_kernel.convert_weight_packed``; SGLang probes for it to
decide whether the AMX backend is available, and it must stay unavailable here.
"""

from __future__ import annotations

import ctypes

import torch

__version__ = "0.0.0+ttsearch.cpu.standin"

# Imported at module level by SGLang's speculative-decoding modules (which the scheduler imports
# unconditionally) but only called with ``--speculative-algorithm``, which ttsearch never sets.
_SPECULATIVE_OPS = (
    "build_tree_kernel_efficient_cpu",
    "verify_tree_greedy_cpu",
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
)

__all__ = [
    "assign_req_to_token_pool_cpu",
    "copy_all_layer_kv_cache_cpu",
    *_SPECULATIVE_OPS,
]


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Scatter freshly allocated KV slots into the request-to-token map, in place.

    For request ``i`` of the batch, with ``n_i = end_offset[i] - start_offset[i]`` and
    ``o_i = n_0 + ... + n_{i-1}``::

        req_to_token[req_pool_indices[i], start_offset[i]:end_offset[i]] = out_cache_loc[o_i:o_i + n_i]
    """
    if req_to_token.dim() != 2 or req_to_token.shape[1] != pool_len:
        raise ValueError(
            f"req_to_token must be [max_reqs, {pool_len}], got {tuple(req_to_token.shape)}"
        )
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    offset = 0
    for row, start, end in zip(rows, starts, ends, strict=True):
        length = end - start
        if length > 0:
            req_to_token[row, start:end] = out_cache_loc[offset : offset + length].to(
                req_to_token.dtype
            )
        offset += max(length, 0)


def copy_all_layer_kv_cache_cpu(
    data_ptrs: torch.Tensor,
    strides: torch.Tensor,
    tgt_loc: torch.Tensor,
    src_loc: torch.Tensor,
) -> None:
    """For every K/V buffer ``b``: ``buf_b[tgt_loc[i], :] = buf_b[src_loc[i], :]`` for all ``i``.

    ``data_ptrs`` holds each buffer's base address (uint64) and ``strides`` its bytes per slot
    row. All source rows of a buffer are read before any target row is written (gather, then
    scatter), so overlapping ``tgt_loc``/``src_loc`` are safe, as in the reference kernel.
    """
    if data_ptrs.numel() != strides.numel():
        raise ValueError("data_ptrs and strides must have one entry per buffer")
    if tgt_loc.numel() != src_loc.numel():
        raise ValueError("tgt_loc and src_loc must have the same length")
    if data_ptrs.numel() == 0 or tgt_loc.numel() == 0:
        return
    tgt = tgt_loc.to(torch.int64).reshape(-1)
    src = src_loc.to(torch.int64).reshape(-1)
    rows_needed = int(torch.maximum(tgt.max(), src.max()).item()) + 1
    # uint64 -> int64 reinterpretation keeps the bit pattern; user-space addresses fit in 63 bits.
    for ptr, stride in zip(data_ptrs.view(torch.int64).tolist(), strides.tolist(), strict=True):
        buffer = _byte_view(ptr, rows_needed * stride).view(rows_needed, stride)
        buffer[tgt] = buffer[src]  # advanced indexing on the right materialises a copy first


def _byte_view(address: int, nbytes: int) -> torch.Tensor:
    """A uint8 tensor aliasing ``nbytes`` of memory at ``address`` (no copy)."""
    raw = (ctypes.c_uint8 * nbytes).from_address(address)
    return torch.frombuffer(raw, dtype=torch.uint8, count=nbytes)


def _speculative_op(name: str):
    def unavailable(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{name}: speculative decoding is not available with ttsearch's CPU "
            "stand-in for sgl_kernel; launch SGLang without --speculative-algorithm"
        )

    unavailable.__name__ = unavailable.__qualname__ = name
    return unavailable


globals().update({name: _speculative_op(name) for name in _SPECULATIVE_OPS})
