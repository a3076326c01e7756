"""The GRPO objective: group-normalised advantages, clipped ratio, KL penalty to the reference.

    adv = group_advantages([1.0, 0.0, 0.0, 1.0])             # -> [1, -1, -1, 1]
    lp = sequence_token_logprobs(model, rows)                 # per-token log π_θ of each action
    loss, stats = grpo_loss(lp, old_lp, ref_lp, adv, beta=0.04, clip=0.2)

Per action token t of sample i (DeepSeekMath's GRPO with the k3 KL estimator):

    r_t   = exp(lp_t − old_t)                    (= 1 on the first pass of on-policy data)
    s_t   = min(r_t·A_i, clip(r_t, 1−ε, 1+ε)·A_i)
    k3_t  = exp(ref_t − lp_t) − (ref_t − lp_t) − 1   (≥ 0; E_π[k3] = KL(π‖π_ref))
    loss  = mean_i  mean_t ( −s_t + β·k3_t )

``exact_token_kl`` is the full-vocabulary KL(π_θ‖π_ref) at each position, used to *measure*
the trained pair (not in the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ttsearch.envs.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Row:
    """One sampled action in its prompt: ids of both, and the action's advantage."""

    prompt: tuple[int, ...]
    action: tuple[int, ...]
    advantage: float = 0.0


def group_advantages(rewards: Sequence[float], *, eps: float = 1e-6) -> np.ndarray:
    """(r − mean) / (std + eps) within one group (population std); all-equal rewards give 0."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        raise ConfigError("a GRPO group needs at least one reward")
    std = r.std()
    if std < eps:
        return np.zeros_like(r)
    return (r - r.mean()) / (std + eps)


def sequence_token_logprobs(model, rows: Sequence[Row], *, pad_id: int = 0) -> list[torch.Tensor]:
    """log p(action_t | prompt, action_<t) for each row, one right-padded batched forward.

    Gradients flow when called outside ``torch.no_grad``. Right padding plus the causal mask
    keeps every real position's logits equal to those of the row run alone.
    """
    if not rows:
        return []
    seqs = [list(r.prompt) + list(r.action) for r in rows]
    if any(not r.action or not r.prompt for r in rows):
        raise ConfigError("every GRPO row needs a non-empty prompt and action")
    width = max(map(len, seqs))
    device = next(model.parameters()).device
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq, device=device)
        mask[i, : len(seq)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    out = []
    for i, row in enumerate(rows):
        p, a = len(row.prompt), len(row.action)
        logp = logits[i, p - 1 : p - 1 + a].float().log_softmax(-1)
        target = torch.tensor(row.action, device=device)
        out.append(logp.gather(1, target[:, None])[:, 0])
    return out


def grpo_loss(
    logprobs: Sequence[torch.Tensor],
    old_logprobs: Sequence[torch.Tensor],
    ref_logprobs: Sequence[torch.Tensor],
    advantages: Sequence[float],
    *,
    beta: float,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss (see the module docstring) and its parts (mean surrogate, mean k3 KL)."""
    if not (len(logprobs) == len(old_logprobs) == len(ref_logprobs) == len(advantages)):
        raise ConfigError("grpo_loss needs one old/ref log-prob tensor and one advantage per row")
    per_row, surr_all, kl_all = [], [], []
    for lp, old, ref, adv in zip(logprobs, old_logprobs, ref_logprobs, advantages, strict=True):
        ratio = torch.exp(lp - old.detach())
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
        delta = ref.detach() - lp
        k3 = torch.exp(delta) - delta - 1
        per_row.append((-surrogate + beta * k3).mean())
        surr_all.append(surrogate.detach().mean())
        kl_all.append(k3.detach().mean())
    loss = torch.stack(per_row).mean()
    return loss, {"surrogate": float(torch.stack(surr_all).mean()), "k3_kl": float(torch.stack(kl_all).mean())}


def exact_token_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """KL(π_θ‖π_ref) over the whole vocabulary at each position (last axis = vocab)."""
    lp = policy_logits.float().log_softmax(-1)
    lq = reference_logits.float().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)
