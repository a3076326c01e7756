"""The engine's own forward pass for Llama-family decoders: the same math, none of the per-call
machinery.

    lean = LeanForward.for_model(model)       # None when the architecture is not one it knows
    logits = lean(ids, positions, kv_layers, plan, keep=1)

A transformers forward spends most of its time, for small models or few new tokens, outside the
arithmetic: output capturing, mask construction, decorators and hooks around every module. Search
makes many small calls (a few new tokens against a long cached prefix), so the engine runs the
decoder itself for the architectures it knows — Llama (SmolLM, Llama 2 and 3 without rope scaling),
Qwen2 and Qwen3 (q/k norms) — reading the model's own modules: the
projections are called as modules, so a LoRA-wrapped model (training) works unchanged, while
RMSNorm, RoPE and the residual stream are computed here in the order transformers computes them.
Attention is :func:`~ttsearch.agents.engines.transformers.attention.segmented_attention` (cached
prefixes read in place). Anything else falls back to the model's own ``forward``; both paths are
checked against a plain full forward by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ttsearch.agents.engines.transformers.attention import AttentionPlan, segmented_attention

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


@dataclass(frozen=True, slots=True)
class _LayerIndex:
    """What ``segmented_attention`` reads from the module it is given."""

    layer_idx: int


class LeanForward:
    """A direct decoder forward over a loaded Llama-family model (see the module docstring)."""

    def __init__(self, model: Any):
        self.model = model
        config = model.config
        self.decoder = model.model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.scaling = self.head_dim**-0.5
        rotary = self.decoder.rotary_emb
        self.inv_freq, self.rope_scale = rotary.inv_freq, rotary.attention_scaling
        self.layers = list(self.decoder.layers[: config.num_hidden_layers])
        self.qk_norm = hasattr(self.layers[0].self_attn, "q_norm")
        self.indices = [_LayerIndex(i) for i in range(len(self.layers))]

    @classmethod
    def for_model(cls, model: Any) -> LeanForward | None:
        """A lean forward for ``model``, or None when it is not an architecture this knows."""
        config = model.config
        if type(model).__name__ not in ARCHITECTURES:
            return None
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default" or getattr(config, "hidden_act", "silu") != "silu":
            return None  # scaled rope variants and other activations: the model's own forward
        return cls(model)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x.to(dtype)

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq.to(torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]  # [rows, 1, q, head_dim]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, kv_layers: list[Any], plan: AttentionPlan,
                 *, keep: int = 0) -> torch.Tensor:
        """Logits of ``ids`` [rows, q] at ``positions``; the new keys/values go through
        ``kv_layers[i].update`` (the call's workspace); ``keep`` > 0: only the last ``keep``."""
        rows, q = ids.shape
        hidden = self.decoder.embed_tokens(ids)
        cos, sin = self._rope(positions, hidden.dtype)
        for layer, index, cache in zip(self.layers, self.indices, kv_layers, strict=True):
            attn = layer.self_attn
            x = self._norm(hidden, layer.input_layernorm.weight)
            query = attn.q_proj(x).view(rows, q, self.heads, self.head_dim)
            key = attn.k_proj(x).view(rows, q, self.kv_heads, self.head_dim)
            value = attn.v_proj(x).view(rows, q, self.kv_heads, self.head_dim)
            if self.qk_norm:
                query, key = self._norm(query, attn.q_norm.weight), self._norm(key, attn.k_norm.weight)
            query = self._rotate(query.transpose(1, 2), cos, sin)
            key = self._rotate(key.transpose(1, 2), cos, sin)
            keys, values = cache.update(key, value.transpose(1, 2))
            out, _ = segmented_attention(index, query, keys, values, None, scaling=self.scaling, ttsearch_plan=plan)
            hidden = hidden + attn.o_proj(out.reshape(rows, q, self.heads * self.head_dim))
            x = self._norm(hidden, layer.post_attention_layernorm.weight)
            mlp = layer.mlp
            hidden = hidden + mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
        hidden = self._norm(hidden if not keep else hidden[:, -keep:], self.decoder.norm.weight)
        return self.model.lm_head(hidden)
