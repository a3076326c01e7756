"""The maze recipe's RL stage: KL-regularised soft policy iteration on whole turns.

    history = rl(config, model, reference, tokenizer, layouts, rng, log, states=layout_states)

The objective, the five action classes the env tells apart and the token-level targets are
described in ``training/maze_recipe.py`` (the recipe's docstring) and :func:`rl`. The env's
own transition function drives the Monte-Carlo rollouts; the exact solver never enters here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ttsearch.envs.errors import ConfigError
from ttsearch.envs.maze.layout import ACTIONS, Layout
from ttsearch.envs.maze.solver import build_model
from ttsearch.training.move_logprobs import (
    action_turn_ids,
    branch_logprobs,
    chat_prompt_ids,
    position_logprobs,
)

if TYPE_CHECKING:
    from ttsearch.training.maze_recipe import MazeRecipeConfig

def move_tokens_of(tokenizer) -> list[int]:
    """The four moves' single token ids (a move turn is that token + the stop token)."""
    turns = action_turn_ids(tokenizer, ACTIONS)
    if any(len(turn) != 2 for turn in turns):
        raise ConfigError(f"each move must be one token for this recipe; got {turns}: raise vocab_size")
    return [turn[0] for turn in turns]


def soft_rollout_values(P_next: np.ndarray, logp_pol: np.ndarray, logp_ref: np.ndarray, noop_next: np.ndarray,
                         *, beta: float, gamma: float, rollouts: int, horizon: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Monte-Carlo soft Q̂(s, c) for every state s and action class c (4 moves + other text).

    ``P_next[s, a]`` is the env's next-outcome distribution over [states..., goal, pit];
    ``logp_pol``/``logp_ref`` are [states, 5] whole-turn class log-probs (four moves + 'any other
    text'); the no-op class leads from s to ``noop_next[s]`` (the same cell, as the env shows it
    after an invalid action). Each rollout pays the KL penalty β·log π_θ(c)/π_ref(c) of every
    turn after the first (the first, forced one is the action being valued).
    """
    n_states, n_classes = logp_pol.shape
    starts = np.repeat(np.arange(n_states), n_classes * rollouts)
    first = np.tile(np.repeat(np.arange(n_classes), rollouts), n_states)
    value = _soft_returns(P_next, logp_pol, logp_ref, noop_next, starts, first=first, beta=beta, gamma=gamma,
                          steps=horizon, rng=rng)
    return value.reshape(n_states, n_classes, rollouts).mean(axis=2)


def expected_step_values(P_next: np.ndarray, logp_pol: np.ndarray, logp_ref: np.ndarray, noop_next: np.ndarray,
                         *, beta: float, gamma: float, rollouts: int, horizon: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Soft Q̂(s, c) as one env step in expectation over Monte-Carlo state values (expected SARSA).

    ``V̂(s)``: the mean soft return of ``rollouts`` rollouts of the policy from s, every turn (the
    first too) paying β·log π_θ(c)/π_ref(c); then ``Q̂(s, move) = P(goal|s, move) + γ·Σ_s'
    P(s'|s, move)·V̂(s')`` and ``Q̂(s, no-op) = γ·V̂(noop_next[s])`` with the env's own outcome
    probabilities (the same transition function the rollouts sample). Unbiased like
    :func:`soft_rollout_values`, with far less noise per sampled step: the first step's outcomes
    are summed instead of sampled, and every class of a state shares the same ``V̂`` estimates.
    """
    n_states, n_classes = logp_pol.shape
    starts = np.repeat(np.arange(n_states), rollouts)
    # the expected first step below makes the horizon ``horizon``
    value = _soft_returns(P_next, logp_pol, logp_ref, noop_next, starts, first=None, beta=beta, gamma=gamma,
                          steps=horizon - 1, rng=rng)
    v = value.reshape(n_states, rollouts).mean(axis=1)
    q = np.empty((n_states, n_classes))
    q[:, :len(ACTIONS)] = P_next[:, :, n_states] + gamma * P_next[:, :, :n_states] @ v
    q[:, len(ACTIONS)] = gamma * v[noop_next]
    return q


def _soft_returns(P_next: np.ndarray, logp_pol: np.ndarray, logp_ref: np.ndarray, noop_next: np.ndarray,
                  starts: np.ndarray, *, first: np.ndarray | None, beta: float, gamma: float, steps: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Soft returns of one rollout from each of ``starts`` (state indices) for ``steps`` turns.

    Every turn samples a class from the policy and pays β·log π_θ(c)/π_ref(c), except the first
    when ``first`` forces its class (the action being valued). Arguments as in
    :func:`soft_rollout_values`.
    """
    n_states, n_classes = logp_pol.shape
    state, alive = starts.copy(), np.ones(len(starts), dtype=bool)
    value = np.zeros(len(starts))
    policy_cdf = np.cumsum(np.exp(logp_pol), axis=1)
    policy_cdf /= policy_cdf[:, -1:]
    # A move has at most three outcomes (intended, two slips): sample among the support only.
    support = np.argsort(-P_next, axis=2, kind="stable")[:, :, :3]
    support_cdf = np.cumsum(np.take_along_axis(P_next, support, axis=2), axis=2)
    kl = logp_pol - logp_ref
    for k in range(steps):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        s = state[idx]
        if k == 0 and first is not None:
            action = first[idx]
        else:
            action = (rng.random(idx.size)[:, None] > policy_cdf[s]).sum(axis=1).clip(0, n_classes - 1)
            value[idx] -= gamma**k * beta * kl[s, action]
        moving = action < len(ACTIONS)
        nxt = noop_next[s]
        if moving.any():
            m = idx[moving]
            pick = (rng.random(m.size)[:, None] > support_cdf[state[m], action[moving]]).sum(axis=1).clip(0, 2)
            nxt[moving] = support[state[m], action[moving], pick]
        reached_goal, fell = nxt == n_states, nxt == n_states + 1
        value[idx[reached_goal]] += gamma**k
        alive[idx[reached_goal | fell]] = False
        state[idx] = np.where(reached_goal | fell, 0, nxt)
    return value


def with_invalid_variants(outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Double a ``[cells, 4, cells + 2]`` outcome matrix to plain + after-invalid states.

    Both variants of a cell move alike (to the plain variant of the next cell); the no-op leads
    from either variant of a cell to its after-invalid variant. Returns ``(P_next, noop_next)``.
    """
    n = outcomes.shape[0]
    doubled = np.zeros((2 * n, outcomes.shape[1], 2 * n + 2))
    for half in (0, n):
        doubled[half:half + n, :, :n] = outcomes[:, :, :n]
        doubled[half:half + n, :, 2 * n:] = outcomes[:, :, n:]
    noop_next = np.concatenate([np.arange(n, 2 * n), np.arange(n, 2 * n)])
    return doubled, noop_next


def outcome_matrix(layout: Layout, slip: float) -> np.ndarray:
    """``[cells, 4, cells + 2]``: next-cell probabilities, then goal, then pit."""
    model = build_model(layout, slip=slip)
    pit = np.clip(1.0 - model.P.sum(axis=2) - model.R, 0, 1)
    return np.concatenate([model.P, model.R[:, :, None], pit[:, :, None]], axis=2)


def turn_classes(first, second, move_tokens: list[int], stop_id: int):
    """Whole-turn log-probs of the five action classes, ``[n, 5]``, from :func:`branch_logprobs`.

    Columns 0-3: log p(move token) + log p(stop | move token) (the four canonical move turns);
    column 4: log p(any other turn) — every turn that does not start with a move token, plus
    every move token followed by something other than the stop token (the env's no-op).
    Sums over the complement tokens (never ``log(1 − p)``), so it is exact and has finite
    gradients even when p(stop) rounds to 1.
    """
    vocab = first.shape[-1]
    moves = torch.tensor(move_tokens)
    not_move = torch.ones(vocab, dtype=torch.bool)
    not_move[moves] = False
    not_stop = torch.ones(vocab, dtype=torch.bool)
    not_stop[stop_id] = False
    move_turns = first[:, moves] + second[:, :, stop_id]
    garbled_after_move = first[:, moves] + torch.logsumexp(second[:, :, not_stop], dim=-1)
    other = torch.logsumexp(torch.cat([first[:, not_move], garbled_after_move], dim=1), dim=1, keepdim=True)
    return torch.cat([move_turns, other], dim=1)


def token_targets(ref_first, ref_second, q, *, beta: float, move_tokens: list[int], stop_id: int):
    """Token-level targets of the KL-regularised improvement over whole turns.

    The improved turn distribution is ``π_ref(y|s)·exp((Q̂(c(y)) − V̂(s))/β)`` where ``c(y)`` is
    the class of turn ``y`` (a move, or the no-op for any other text). Factorised by tokens
    (soft Bellman backup over the turn's prefix tree), its conditionals are:

    * first token t: ``∝ π_ref(t|s)·w(t)``, ``w(move a) = π_ref(stop|s,a)·e^{Q̂_a/β} +
      (1 − π_ref(stop|s,a))·e^{Q̂_noop/β}``, ``w(other) = e^{Q̂_noop/β}``;
    * after move token a: ``∝ π_ref(u|s,a)·e^{Q̂_a/β}`` for u = stop, ``·e^{Q̂_noop/β}`` otherwise;
    * after any garbled prefix: ``π_ref`` itself (every completion is the same no-op, so the
      log-ratio of every further token is 0).

    Returns ``(first [n, V], second [n, 4, V])`` target log-probs.
    """
    scaled = q / beta
    q_moves, q_noop = scaled[:, :4], scaled[:, 4:]
    not_stop = torch.ones(ref_first.shape[-1], dtype=torch.bool)
    not_stop[stop_id] = False
    ref_stop = ref_second[:, :, stop_id]
    ref_garble = torch.logsumexp(ref_second[:, :, not_stop], dim=-1)
    shift_first = q_noop.expand_as(ref_first).clone()
    shift_first[:, move_tokens] = torch.logaddexp(ref_stop + q_moves, ref_garble + q_noop)
    shift_second = q_noop[:, :, None].expand_as(ref_second).clone()
    shift_second[:, :, stop_id] = q_moves
    return (torch.log_softmax(ref_first + shift_first, dim=-1),
            torch.log_softmax(ref_second + shift_second, dim=-1))


def sample_garbled_turns(model, prompts, pol_first, pol_second, *, samples: int, max_tokens: int,
                          move_tokens: list[int], stop_id: int, pad_id: int, generator):
    """Sample ``samples`` turns per state from the policy; return the non-canonical ones.

    A canonical turn (move token + stop) is already trained exactly through the branch rows; any
    other sampled turn (``southnorth…``, ``4north``, an empty turn) is kept as ``(state, tokens)``
    so every one of its tokens is trained too. Turns are cut at ``max_tokens`` like the agent's.
    """
    moves = {token: j for j, token in enumerate(move_tokens)}
    n = pol_first.shape[0]
    states = torch.arange(n).repeat_interleave(samples)
    first = torch.multinomial(pol_first.exp()[states], 1, generator=generator)[:, 0]
    turns: list[tuple[int, list[int]]] = []
    for state, token in zip(states.tolist(), first.tolist()):
        if token in moves:
            second = int(torch.multinomial(pol_second[state, moves[token]].exp(), 1, generator=generator))
            if second != stop_id:
                turns.append((state, [token, second]))
        else:
            turns.append((state, [token]))
    open_turns = [t for t in turns if t[1][-1] != stop_id and len(t[1]) < max_tokens]
    while open_turns:  # continue the garbled ones token by token (rare rows: a plain forward)
        logp, valid = position_logprobs(model, [prompts[s] for s, _ in open_turns],
                                        [tokens + [pad_id] for _, tokens in open_turns], pad_id=pad_id)
        last = valid.sum(dim=1) - 1
        nxt = torch.multinomial(logp[torch.arange(len(open_turns)), last].exp(), 1, generator=generator)[:, 0]
        for (_, tokens), token in zip(open_turns, nxt.tolist()):
            tokens.append(token)
        open_turns = [t for t in open_turns if t[1][-1] != stop_id and len(t[1]) < max_tokens]
    return turns


def garbled_targets(reference, prompts, turns, tgt_first, tgt_second, *, move_tokens: list[int], pad_id: int):
    """Per-position target log-probs ``[rows, max_len, V]`` for sampled non-canonical turns."""
    moves = {token: j for j, token in enumerate(move_tokens)}
    ref, valid = position_logprobs(reference, [prompts[s] for s, _ in turns], [t for _, t in turns], pad_id=pad_id)
    target = ref.clone()  # beyond a garbled prefix the target is π_ref itself
    for row, (state, tokens) in enumerate(turns):
        target[row, 0] = tgt_first[state]
        if len(tokens) > 1 and tokens[0] in moves:
            target[row, 1] = tgt_second[state, moves[tokens[0]]]
    return target, valid


def cosine_lr(iteration: int, total: int, *, peak: float, final_fraction: float) -> float:
    """Cosine decay from ``peak`` to ``peak·final_fraction``: late iterations average the noise of
    the Monte-Carlo targets instead of chasing it."""
    progress = iteration / max(total - 1, 1)
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def rl(config: MazeRecipeConfig, model, reference, tokenizer, layouts: list[tuple[int, Layout]],
       rng: np.random.Generator, log, *, states, system_prompt: str, checkpoint=None) -> list[dict[str, float]]:
    """KL-regularised soft policy iteration on whole turns (every token of every turn).

    Objective: maximise E[Σ_t γ^t (r_t − β·log π_θ(y_t|s_t)/π_ref(y_t|s_t))] where y_t is the
    whole sampled turn (all its tokens). Each iteration:

    1. **Evaluate** the current policy: the whole-turn probabilities of the five action classes
       (four canonical move turns + 'any other text', the env's no-op) give, per state, the
       policy the Monte-Carlo rollouts of the env's transition function follow; each rollout
       starts with a forced class (exploring starts) and pays the per-turn KL penalty
       β·log π_θ(c)/π_ref(c) at every later step: ``Q̂(s, c)``.
    2. **Improve**: the KL-regularised improvement ``π_ref(y|s)·exp((Q̂(s,c(y)) − V̂(s))/β)`` over
       whole turns, factorised into exact next-token targets (:func:`token_targets`), and moved
       toward by a forward-KL (cross-entropy) loss on the full vocabulary at the turn's first
       token, after each move token (the stop decision) and at every token of sampled
       non-canonical turns, plus a squared error in log space on the whole-turn class log-probs
       and on the sampled tokens (``rl_log_weight``), which makes the log-ratios of rare
       turns converge too. Its fixed point is the optimal KL-regularised policy, whose whole-turn
       log-ratio to π_ref is A*/β (Proposition 1).

    ``states(layout, rng=, slip=)`` gives the observation texts of a layout's states (both views
    of every open cell); ``checkpoint(history)`` is called every ``rl_save_every`` iterations.
    """
    move_tokens = move_tokens_of(tokenizer)
    pad_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.rl_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for iteration in range(config.rl_iterations):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(iteration, config.rl_iterations, peak=config.rl_lr,
                                    final_fraction=config.rl_lr_final_fraction)
        offset = (iteration * config.rl_layouts_per_iter) % len(layouts)
        batch = layouts[offset: offset + config.rl_layouts_per_iter]
        prompts: list[list[int]] = []
        sizes = []
        for _, layout in batch:
            texts = states(layout, rng=rng, slip=config.slip)
            prompts.extend(chat_prompt_ids(tokenizer, system_prompt, t) for t in texts)
            sizes.append(len(texts))
        model.train()  # no dropout in these models: train mode only records the graph
        # The first projection step's forward is also the evaluation of the current policy.
        first, second = branch_logprobs(model, prompts, move_tokens, pad_id=pad_id)
        with torch.no_grad():
            it = _evaluate(config, model, reference, tokenizer, batch, sizes, prompts, first.detach(),
                           second.detach(), rng=rng, generator=generator)
        for step in range(config.rl_inner_steps):
            if step:
                first, second = branch_logprobs(model, prompts, move_tokens, pad_id=pad_id)
            losses = _improvement_loss(config, model, prompts, first, second, it, pad_id=pad_id)
            optimizer.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        history.append({"iteration": iteration, "cross_entropy": losses["cross_entropy"].item(),
                        "log_error": losses["log_error"].item(), "garbled_turns": len(it["turns"]),
                        "garbled_loss": losses["garbled_loss"].item(), **it["kl"]})
        if checkpoint is not None and config.rl_save_every and (iteration + 1) % config.rl_save_every == 0 \
                and iteration + 1 < config.rl_iterations:
            checkpoint(history)
        if iteration % 10 == 0 or iteration == config.rl_iterations - 1:
            h = history[-1]
            log(f"rl {iteration + 1}/{config.rl_iterations}: ce {h['cross_entropy']:.4f} log-err {h['log_error']:.4f} "
                f"KL/turn {h['kl_turn']:.4f} KL/token {h['kl_token']:.4f} garbled {len(it['turns'])} "
                f"({h['garbled_loss']:.3f})")
    return history


def _evaluate(config: MazeRecipeConfig, model, reference, tokenizer, batch, sizes, prompts, pol_first, pol_second,
              *, rng: np.random.Generator, generator) -> dict:
    """Step 1 of an iteration: Q̂ of the current policy by rollouts, the improvement's targets,
    and sampled non-canonical turns with their per-token targets (no gradients)."""
    move_tokens = move_tokens_of(tokenizer)
    stop_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    pad_id = tokenizer.pad_token_id
    beta = config.beta
    ref_first, ref_second = branch_logprobs(reference, prompts, move_tokens, pad_id=pad_id)
    ref_class = turn_classes(ref_first, ref_second, move_tokens, stop_id)
    pol_class = turn_classes(pol_first, pol_second, move_tokens, stop_id)
    q_hat, at = [], 0
    for (_, layout), size in zip(batch, sizes):
        outcomes, noop_next = with_invalid_variants(outcome_matrix(layout, config.slip))
        estimate = expected_step_values if config.rl_value_estimator == "expected" else soft_rollout_values
        q_hat.append(estimate(
            outcomes, pol_class[at:at + size].double().numpy(), ref_class[at:at + size].double().numpy(),
            noop_next, beta=beta, gamma=config.gamma, rollouts=config.rl_rollouts,
            horizon=config.rl_horizon, rng=rng))
        at += size
    q = torch.tensor(np.concatenate(q_hat), dtype=torch.float32)
    tgt_first, tgt_second = token_targets(ref_first, ref_second, q, beta=beta, move_tokens=move_tokens,
                                          stop_id=stop_id)
    turns = sample_garbled_turns(model, prompts, pol_first, pol_second, samples=config.rl_turn_samples,
                                 max_tokens=config.rl_turn_tokens, move_tokens=move_tokens,
                                 stop_id=stop_id, pad_id=pad_id, generator=generator)
    out = {"move_tokens": move_tokens, "stop_id": stop_id, "tgt_first": tgt_first, "tgt_second": tgt_second,
           "target_class": torch.log_softmax(ref_class + q / beta, dim=1), "turns": turns,
           "kl": kl_stats(pol_first, pol_second, ref_first, ref_second, pol_class, ref_class, move_tokens)}
    if turns:
        out["tgt_garbled"], out["valid"] = garbled_targets(reference, prompts, turns, tgt_first, tgt_second,
                                                           move_tokens=move_tokens, pad_id=pad_id)
        out["sampled"] = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for _, t in turns], batch_first=True,
                                                         padding_value=pad_id)
    return out


def _improvement_loss(config: MazeRecipeConfig, model, prompts, first, second, it: dict, *, pad_id: int) -> dict:
    """Step 2: cross-entropy to the token targets + ``rl_log_weight`` x squared log-space error on
    the class log-probs, plus the same on every token of the sampled non-canonical turns."""
    cross_entropy = (-(it["tgt_first"].exp() * first).sum(-1)
                     - (it["tgt_second"].exp() * second).sum(-1).mean(1)).mean()
    log_error = ((turn_classes(first, second, it["move_tokens"], it["stop_id"]) - it["target_class"]) ** 2).mean()
    loss = cross_entropy + config.rl_log_weight * log_error
    garbled_loss = torch.zeros(())
    turns = it["turns"]
    if turns:
        tgt, sampled, valid = it["tgt_garbled"], it["sampled"], it["valid"]
        logp, _ = position_logprobs(model, [prompts[s] for s, _ in turns], [t for _, t in turns], pad_id=pad_id)
        token_ce = -(tgt.exp() * logp).sum(-1)
        token_err = (logp.gather(-1, sampled[..., None]) - tgt.gather(-1, sampled[..., None]))[..., 0] ** 2
        per_row = ((token_ce + config.rl_log_weight * token_err) * valid).sum(1) / valid.sum(1)
        garbled_loss = per_row.mean()
        loss = loss + garbled_loss
    return {"loss": loss, "cross_entropy": cross_entropy, "log_error": log_error, "garbled_loss": garbled_loss}


def kl_stats(pol_first, pol_second, ref_first, ref_second, pol_class, ref_class, move_tokens) -> dict[str, float]:
    """Exact KL(π_θ‖π_ref) of the policy the iteration started from, averaged over its states.

    ``kl_turn``: over the turn's first two tokens (exact over the full vocabulary; a garbled
    turn's later tokens are left out, their target ratio is 1); ``kl_token``: the same divided
    by the expected number of those tokens; ``kl_class``: over the five action classes the env
    distinguishes (≤ kl_turn).
    """

    def kl(p, q):
        return (p.exp() * (p - q)).sum(-1)

    kl_first = kl(pol_first, ref_first)
    p_moves = pol_first[:, move_tokens].exp()
    kl_turn = kl_first + (p_moves * kl(pol_second, ref_second)).sum(1)
    tokens = 1.0 + p_moves.sum(1)
    return {"kl_turn": kl_turn.mean().item(), "kl_token": (kl_turn.sum() / tokens.sum()).item(),
            "kl_class": kl(pol_class, ref_class).mean().item(),
            "p_other": pol_class[:, 4].exp().mean().item()}
