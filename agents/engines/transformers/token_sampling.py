"""Counter-based token sampling: reproducible draws that do not depend on batch composition.

    keys = torch.tensor(stream_keys(seed, prompts=2, n=4))       # one key per (prompt i, sample j)
    tokens = choose_tokens(logits, params, keys, step)           # argmax at temperature 0
    chosen, top = token_logprobs(logits, targets, k=5)           # log-softmax at targets (+ top-k)

Sample ``j`` of prompt ``i`` draws its uniform at step ``t`` from a hash of (seed, i, j, t), so a
draw depends on the seed and on its place in the call, never on what else is in the batch, on
which rows finished first, or on what a prefix cache holds. Engines (``TransformersBackend``)
and baselines (``benchmarks/perf/naive_generate.py``) that share these functions draw the same tokens.
"""

from __future__ import annotations

import torch

from ttsearch.agents.base import SamplingParams

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 without int64 overflow: split x into 16-bit halves.
    return (((((x >> 16) * c) & _M32) << 16) + (x & 0xFFFF) * c) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def stream_keys(seed: int, prompts: int, n: int) -> list[int]:
    """One 32-bit random-stream key per (prompt i, sample j), row-major, derived from the seed."""
    base = _splitmix64(seed & 0xFFFFFFFFFFFFFFFF)
    return [
        _splitmix64(base ^ _splitmix64((i << 24) + j)) & _M32
        for i in range(prompts)
        for j in range(n)
    ]


def _uniform(keys: torch.Tensor, step: int) -> torch.Tensor:
    """Uniforms in [0, 1), a pure function of (row key, step): float64 [rows]."""
    step_key = _splitmix64(step + 0x5BD1E995) & _M32
    x = _fmix32(keys ^ step_key)
    x = _fmix32((x + keys) & _M32)
    return x.double() / 2.0**32


def choose_tokens(
    logits: torch.Tensor, params: SamplingParams, keys: torch.Tensor, step: int
) -> torch.Tensor:
    """Pick one token per row: argmax at temperature 0, else inverse-CDF sampling."""
    if params.temperature == 0:
        return logits.argmax(-1)
    scaled = logits / params.temperature
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = scaled.topk(params.top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(-1)
    order = None
    if params.top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(-1) - probs  # mass strictly above each token
        probs = probs.masked_fill(before >= params.top_p, 0.0)
    cdf = probs.double().cumsum(-1)
    target = _uniform(keys, step) * cdf[:, -1]
    # right=True skips zero-probability tokens: the first index whose cdf exceeds target.
    index = torch.searchsorted(cdf, target[:, None], right=True).clamp(max=cdf.shape[-1] - 1)
    return order.gather(1, index)[:, 0] if order is not None else index[:, 0]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, k: int):
    """log-softmax at ``targets`` (and the top-k values) without materialising log_softmax."""
    norm = logits.logsumexp(-1)
    chosen = logits.gather(-1, targets[..., None])[..., 0] - norm
    top = logits.topk(k, dim=-1).values - norm[..., None] if k else None
    return chosen, top
