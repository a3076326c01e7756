"""Attention over cached keys and values where they lie: no per-call copy of a cached prefix.

    plan = AttentionPlan(segments=[Segment(node_kv, length, rows)], mask=workspace_mask)
    with planned_attention(model):
        model(input_ids=..., position_ids=..., cache=slot_cache, ttsearch_plan=plan)

A row of a call (one distinct prompt) attends to two kinds of keys:

- its **cached prefix**: radix-tree node payloads ``[layers, 2 (k, v), kv_heads, n, head_dim]``,
  read in place (a per-layer view, no copy). Every new token of the row comes after the whole
  prefix, so these keys need no mask; rows that share a node are stacked along the query axis
  and served by ONE attention call per node and layer;
- the call's **workspace**: the keys the call computes itself (uncached prompt tails, scored
  continuations, decoded samples), masked per query by position, validity and branch.

Each part is computed by torch's CPU flash-attention kernel, which also returns the
log-sum-exp of the scores, and the parts are merged exactly: with ``L = logaddexp(L1, L2)``,
``out = out1·exp(L1 − L) + out2·exp(L2 − L)``. Grouped-query attention needs no key
expansion either: the query heads that share a key head are stacked on the query axis.

The function is registered with transformers' ``AttentionInterface`` under
:data:`ATTENTION_NAME` and selected only for the duration of the engine's own forwards
(:func:`planned_attention`); the plan travels as a keyword argument, which transformers passes
down to every attention call. Under that name transformers builds no masks of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface

ATTENTION_NAME = "ttsearch_segments"
_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


@dataclass(frozen=True, slots=True)
class Segment:
    """The first ``length`` tokens of one cached node, read by the call's rows ``rows``."""

    kv: torch.Tensor
    length: int
    rows: torch.Tensor


@dataclass(slots=True)
class AttentionPlan:
    """What the queries of one forward see: cached segments, and the workspace through ``mask``
    (additive, ``[rows, 1, q, keys]`` over the workspace slots written so far)."""

    segments: list[Segment] = field(default_factory=list)
    mask: torch.Tensor | None = None


def segmented_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: Any, scaling: float | None = None, ttsearch_plan: AttentionPlan | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature (see the module docstring)."""
    if ttsearch_plan is None:
        raise RuntimeError(f"{ATTENTION_NAME} attention was called without a plan: select it only "
                           "inside planned_attention(model) and pass ttsearch_plan=")
    plan = ttsearch_plan
    rows, heads, q, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    grouped = query.reshape(rows, kv_heads, group * q, dim)  # heads sharing a key head, stacked
    mask = plan.mask
    if group > 1:
        mask = mask.repeat(1, 1, group, 1)
    out, lse = _flash(grouped, key, value, attn_mask=mask.to(query.dtype), scale=scaling)
    layer = module.layer_idx
    for seg in plan.segments:
        keys = seg.kv[layer, 0, :, : seg.length].unsqueeze(0)
        values = seg.kv[layer, 1, :, : seg.length].unsqueeze(0)
        users = grouped.index_select(0, seg.rows)
        stacked = users.transpose(0, 1).reshape(1, kv_heads, -1, dim)
        part, part_lse = _flash(stacked, keys, values, scale=scaling)
        part = part.reshape(kv_heads, len(seg.rows), group * q, dim).transpose(0, 1)
        part_lse = part_lse.reshape(kv_heads, len(seg.rows), group * q).transpose(0, 1)
        old, old_lse = out.index_select(0, seg.rows), lse.index_select(0, seg.rows)
        new_lse = torch.logaddexp(old_lse, part_lse)
        merged = (old * (old_lse - new_lse).exp().unsqueeze(-1).to(old.dtype)
                  + part * (part_lse - new_lse).exp().unsqueeze(-1).to(part.dtype))
        out = out.index_copy(0, seg.rows, merged)
        lse = lse.index_copy(0, seg.rows, new_lse)
    return out.reshape(rows, heads, q, dim).transpose(1, 2).contiguous(), None


@contextmanager
def planned_attention(model: Any) -> Iterator[None]:
    """Within the block, ``model``'s attention layers run :func:`segmented_attention`."""
    AttentionInterface.register(ATTENTION_NAME, segmented_attention)  # idempotent
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before
