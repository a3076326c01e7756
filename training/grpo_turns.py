"""The GRPO recipe's ``soft_turn`` objective: KL-regularised policy gradient on whole turns.

    returns = soft_returns([0, 0, 1], kl=[0.3, -0.1, 0.2], gamma=0.95, beta=0.05)
    adv = state_advantages([s0, s1, s0], returns)             # leave-one-out mean per state
    stats = soft_turn_update(model, model_off, rows, episodes, ...)   # one AdamW step
    lr = adapt_lr(lr, stats["step_kl"], target=0.02, lr_max=3e-4)    # optional trust region

For multi-turn episodes whose truth is the KL-regularised MDP of Proposition 1 (the maze), the
objective is exactly the one whose optimum is π* ∝ π_ref·exp(A*/β) — the RLHF form, with the
KL penalty *in the reward* (PPO with a KL penalty; no clipped surrogate is needed on-policy):

    ℓ_t  = Σ_{tokens of turn t} (log π_θ − log π_ref)       (the sampled turn's log-ratio)
    G_t  = Σ_{k≥t} γ^{k−t} (r_k − β·ℓ_k)                      (soft return, discount γ)
    b_t  = mean of G over the OTHER turns taken in the same prompt this iteration
    A_t  = G_t − b_t
    loss = −(1/N) Σ_t A_t · log π_θ(turn_t | s_t)            (every token of the turn)

``kl="exact"`` (one-token turns, where a turn's whole distribution is one softmax): the future
turns' sampled ℓ_k are replaced by their expectation KL(π_θ‖π_ref)(s_k) (exact over the
vocabulary), and the current turn's KL term is differentiated exactly instead of through the
score function — the same expected gradient with far less variance (the sampled ℓ of ~20
mostly-no-op turns otherwise drowns a rare success):

    G_t  = r_t + Σ_{k>t} γ^{k−t} (r_k − β·KL(s_k))
    loss = −(1/N) Σ_t (G_t − b_t)·log π_θ(a_t|s_t) + (β/N) Σ_t KL(π_θ‖π_ref)(s_t)

The baseline groups turns by their prompt ids (GRPO's group, at the level of states, as in
GiGPO): with a history-free prompt over a Markov env, equal prompts are equal states. A turn
whose prompt occurs once gets no baseline and is dropped. Returns are not divided by a standard
deviation, so β stays the reward scale that Proposition 1 needs (PA = β·log π_θ/π_ref ≈ A*).

Cost: a turn's first token is scored from its prompt's last position, so each *distinct* prompt
is run once per pass however many turns were taken in it (one row per state, not per sample);
only tokens after the first need the row itself (``turn_logprobs``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from ttsearch.envs.errors import ConfigError
from ttsearch.training.grpo_loss import Row, exact_token_kl, sequence_token_logprobs


def soft_returns(rewards: Sequence[float], kl: Sequence[float], *, gamma: float, beta: float) -> np.ndarray:
    """``G_t = Σ_{k≥t} γ^{k−t} (r_k − β·ℓ_k)`` for one episode's turns."""
    if len(rewards) != len(kl):
        raise ConfigError("soft_returns needs one KL term per reward")
    out = np.zeros(len(rewards))
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] - beta * kl[t] + gamma * running
        out[t] = running
    return out


def state_advantages(keys: Sequence[Hashable], returns: Sequence[float]) -> np.ndarray:
    """``G − mean(G of the other turns with the same key)``; NaN where a key occurs once."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    returns = np.asarray(returns, dtype=np.float64)
    out = np.full(len(returns), np.nan)
    for members in groups.values():
        if len(members) < 2:
            continue
        g = returns[members]
        out[members] = g - (g.sum() - g) / (len(members) - 1)
    return out


def prompt_logprobs(model: Any, prompts: Sequence[Sequence[int]], *, pad_id: int) -> torch.Tensor:
    """``[len(prompts), vocab]`` next-token log-probs at each prompt's end (right-padded batch).

    Only the last positions go through the output layer (the vocabulary projection of every
    position would cost as much as the decoder here). Gradients flow outside ``no_grad``.
    """
    width = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(list(p), device=device)
        mask[i, : len(p)] = 1
    decoder = getattr(model, model.base_model_prefix)
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    last = hidden[torch.arange(len(prompts), device=device), torch.tensor([len(p) - 1 for p in prompts], device=device)]
    return model.get_output_embeddings()(last).float().log_softmax(-1)


def turn_logprobs(model: Any, rows: Sequence[Row], *, pad_id: int, batch: int = 16
                  ) -> tuple[list[torch.Tensor], dict[tuple[int, ...], torch.Tensor]]:
    """Per-token log-probs of each row's action, and each distinct prompt's next-token log-probs.

    The first action token comes from its prompt's row (each distinct prompt run once); the
    tokens after it from the full ``prompt + action`` rows, run only for rows that have them.
    """
    prompts = list(dict.fromkeys(r.prompt for r in rows))
    first: dict[tuple[int, ...], torch.Tensor] = {}
    for k in range(0, len(prompts), batch):
        chunk = prompts[k:k + batch]
        for p, lp in zip(chunk, prompt_logprobs(model, chunk, pad_id=pad_id), strict=True):
            first[p] = lp
    long_rows = [i for i, r in enumerate(rows) if len(r.action) > 1]
    tails: dict[int, torch.Tensor] = {}
    for k in range(0, len(long_rows), batch):
        idx = long_rows[k:k + batch]
        for i, lp in zip(idx, sequence_token_logprobs(model, [rows[i] for i in idx], pad_id=pad_id), strict=True):
            tails[i] = lp[1:]
    out = []
    for i, r in enumerate(rows):
        head = first[r.prompt][r.action[0]].reshape(1)
        out.append(torch.cat([head, tails[i]]) if i in tails else head)
    return out, first


def soft_turn_update(model: Any, reference_off: Any, rows: Sequence[Row], episode_of: Sequence[int],
                     rewards: Sequence[float], optimizer: torch.optim.Optimizer, *, beta: float, gamma: float,
                     pad_id: int, batch: int = 16, kl: str = "sampled") -> dict[str, float]:
    """One on-policy step of the objective in the module docstring.

    ``rows[i]`` is turn i (prompt, generated ids); ``episode_of[i]`` its episode, turns of an
    episode consecutive and in order; ``rewards[i]`` the env reward of the turn.
    ``reference_off`` is a context manager factory that switches the adapter off (π_ref).
    ``kl``: "sampled" or "exact" (one-token turns only; see the module docstring).
    Returns the step's statistics (mean return, exact KL at the visited prompts, ...).
    """
    if kl not in ("sampled", "exact"):
        raise ConfigError(f"kl must be 'sampled' or 'exact', got {kl!r}")
    if kl == "exact" and any(len(r.action) != 1 for r in rows):
        raise ConfigError("kl='exact' needs one-token turns (max_new_tokens 1); use kl='sampled'")
    with torch.no_grad():
        policy_lp, policy_first = turn_logprobs(model, rows, pad_id=pad_id, batch=batch)
        with reference_off():
            ref_lp, ref_first = turn_logprobs(model, rows, pad_id=pad_id, batch=batch)
    ell = [float((p - q).sum()) for p, q in zip(policy_lp, ref_lp, strict=True)]
    state_kl = {p: float(exact_token_kl(policy_first[p], ref_first[p])) for p in policy_first}
    # "exact": the expected log-ratio of each turn's state; its own turn's term goes into the loss
    penalty = [state_kl[r.prompt] for r in rows] if kl == "exact" else ell
    returns = np.zeros(len(rows))
    for episode in dict.fromkeys(episode_of):
        idx = [i for i, e in enumerate(episode_of) if e == episode]
        returns[idx] = soft_returns([rewards[i] for i in idx], [penalty[i] for i in idx], gamma=gamma, beta=beta)
    if kl == "exact":
        returns += beta * np.asarray(penalty)
    adv = state_advantages([r.prompt for r in rows], returns)
    used = [i for i in range(len(rows)) if np.isfinite(adv[i])]
    optimizer.zero_grad()
    if used:
        kl_terms = None
        if kl == "exact":
            kl_terms = {p: (beta * sum(1 for i in used if rows[i].prompt == p) / len(used), ref_first[p])
                        for p in dict.fromkeys(rows[i].prompt for i in used)}
        _accumulate_gradient(model, [rows[i] for i in used], adv[used], pad_id=pad_id, batch=batch,
                             kl_terms=kl_terms)
        optimizer.step()
    visits: dict[tuple[int, ...], int] = defaultdict(int)
    for r in rows:
        visits[r.prompt] += 1
    step_kl = _step_kl(model, policy_first, visits, pad_id=pad_id, batch=batch) if used else 0.0
    return {"rows": len(used), "states": len(visits), "mean_sample_kl": float(np.mean(ell)) if ell else 0.0,
            "exact_first_token_kl": sum(state_kl[p] * n for p, n in visits.items()) / max(len(rows), 1),
            "step_kl": step_kl, "mean_abs_advantage": float(np.mean(np.abs(adv[used]))) if used else 0.0}


def adapt_lr(lr: float, step_kl: float, *, target: float, lr_max: float, factor: float = 1.5,
             floor: float = 0.01) -> float:
    """The next learning rate of a KL-adaptive schedule (PPO's adaptive rule applied to the step
    size): an update that moved the policy by more than ``2·target`` nats (``step_kl``) divides
    the rate by ``factor``, one under ``target/2`` multiplies it, within ``[floor·lr_max, lr_max]``.

    On-policy RL with one Adam step per batch moves the policy by ~``lr`` per parameter whatever
    the gradient's size, so once the policy is peaked the same step changes it far more.
    """
    if target <= 0 or factor <= 1 or not 0 < floor <= 1:
        raise ConfigError(f"adapt_lr needs target > 0, factor > 1, 0 < floor <= 1; got {target}, {factor}, {floor}")
    if step_kl > 2 * target:
        lr /= factor
    elif step_kl < target / 2:
        lr *= factor
    return min(max(lr, floor * lr_max), lr_max)


def _step_kl(model: Any, before: dict[tuple[int, ...], torch.Tensor], visits: dict[tuple[int, ...], int],
             *, pad_id: int, batch: int) -> float:
    """KL(π_after‖π_before) of the first action token, exact over the vocabulary, averaged over
    the turns taken (each state weighted by its visits): how far one update moved the policy."""
    prompts, total = list(before), 0.0
    with torch.no_grad():
        for k in range(0, len(prompts), batch):
            chunk = prompts[k:k + batch]
            after = prompt_logprobs(model, chunk, pad_id=pad_id)
            for p, lp in zip(chunk, after, strict=True):
                total += visits[p] * float(exact_token_kl(lp, before[p]))
    return total / max(sum(visits.values()), 1)


def _accumulate_gradient(model: Any, rows: Sequence[Row], adv: np.ndarray, *, pad_id: int, batch: int,
                         kl_terms: dict[tuple[int, ...], tuple[float, torch.Tensor]] | None = None) -> None:
    """Backpropagate ``−(1/N) Σ_i A_i · log π_θ(action_i | prompt_i)`` chunk by chunk, plus
    ``w · KL(π_θ‖π_ref)(prompt)`` for each ``prompt: (w, reference next-token log-probs)`` in ``kl_terms``.

    First tokens: one row per distinct prompt, weighted by the advantages of all its turns;
    later tokens: their full rows.
    """
    n = len(rows)
    weights: dict[tuple[int, ...], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for r, a in zip(rows, adv, strict=True):
        weights[r.prompt][r.action[0]] += float(a) / n
    prompts = list(dict.fromkeys([*weights, *(kl_terms or {})]))
    for k in range(0, len(prompts), batch):
        chunk = prompts[k:k + batch]
        logp = prompt_logprobs(model, chunk, pad_id=pad_id)
        loss = logp.new_zeros(())
        for i, p in enumerate(chunk):
            tokens = list(weights.get(p, ()))
            if tokens:
                w = torch.tensor([weights[p][t] for t in tokens], dtype=logp.dtype)
                loss = loss - (w * logp[i, tokens]).sum()
            if kl_terms and p in kl_terms:
                scale, ref = kl_terms[p]
                loss = loss + scale * exact_token_kl(logp[i], ref)
        loss.backward()
    long_rows = [(r, a) for r, a in zip(rows, adv, strict=True) if len(r.action) > 1]
    for k in range(0, len(long_rows), batch):
        chunk = long_rows[k:k + batch]
        lps = sequence_token_logprobs(model, [r for r, _ in chunk], pad_id=pad_id)
        loss = sum(-(float(a) / n) * lp[1:].sum() for (_, a), lp in zip(chunk, lps, strict=True))
        loss.backward()
