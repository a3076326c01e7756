"""The maze checkpoint-pair recipe: tokenizer -> SFT reference -> KL-regularised RL policy.

    report = train_maze_pair(MazeRecipeConfig(), "runs/maze-pair")   # ~minutes on 2 CPU cores
    # runs/maze-pair/{reference,policy}/ are save_pretrained folders; ttsearch_pair.json says how
    # they were made (beta, gamma, prompt settings) and what training measured.

1. **Tokenizer**: byte-level BPE trained on maze observations (``tiny_model.train_tokenizer``).
2. **SFT -> π_ref**: a from-scratch Qwen2 model imitates a *noisy expert* on training layouts:
   per state the demonstrator takes the optimal move (value iteration) with probability
   ``demo_mix[0]``, a myopic move (one that shortens the distance to the goal, blind to pits
   and slips) with ``demo_mix[1]``, and a uniformly random move with ``demo_mix[2]``. The
   reference therefore has systematic, state-dependent mistakes — as real SFT models do.
3. **RL -> π_θ**: on-policy, KL-regularised actor-critic. Each iteration takes fresh training
   layouts; for every state (exploring starts over all open cells) and every move, Monte-Carlo
   rollouts of the *current* policy through the environment's own transition function estimate
   the soft action value ``Q̂(s,a) = r + Σ_k γ^k (r_k − β·log π_θ/π_ref(a_k|s_k))`` (the KL
   penalty enters the return, as in KL-regularised RLHF). The policy is then moved toward the
   KL-regularised improvement ``π_ref(a|s)·exp((Q̂(s,a) − V̂(s))/β)`` by regressing its log-probs
   onto it (soft policy iteration; its fixed point is the optimal KL-regularised policy, whose
   log-ratio to π_ref is A*/β — Proposition 1). All four moves are evaluated at each state: that
   group of branches from one state is the group baseline. Each move is one token followed by
   ``<|im_end|>``; RL acts on the move token (the scored span); the stop token SFT learned
   stays near-certain, and any other text is the env's no-op 'invalid action'.

Held-out layouts (``split="test"``, chosen by content hash) are never used in training.
The policy acts on the current observation only (see :data:`PROMPT`): the maze is Markov.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttsearch.envs.errors import ConfigError
from ttsearch.envs.maze.env import maze_tasks
from ttsearch.envs.maze.layout import ACTIONS, Layout, describe, generate_layout
from ttsearch.envs.maze.solver import build_model, solve
from ttsearch.training.move_logprobs import (
    action_turn_ids,
    chat_prompt_ids,
    continuation_logprobs,
    next_token_and_stop_logprobs,
    next_token_logprobs,
)
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

PAIR_CONFIG_FILE = "ttsearch_pair.json"
PROMPT = {"max_history_turns": 0, "system_prompt": ""}
"""How the maze pair sees a state: the current observation alone, as the user message. The maze
is Markov, and the tiny model reads no instructions, so the env's system prompt is left out
(recorded in the pair manifest; ``PromptRenderer`` follows it)."""
SYSTEM_PROMPT = PROMPT["system_prompt"]


@dataclass(frozen=True, slots=True)
class MazeRecipeConfig:
    """Every knob of the recipe; ``quick()`` is the shortened variant CI runs."""

    seed: int = 0
    # environment
    size: int = 5
    slip: float = 0.1
    gamma: float = 0.95
    # model
    vocab_size: int = 400
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 192
    # SFT
    sft_layouts: int = 1200
    sft_epochs: int = 2
    sft_batch: int = 256
    sft_lr: float = 3e-3
    demo_mix: tuple[float, float, float] = (0.55, 0.3, 0.15)
    # RL
    beta: float = 0.1
    rl_iterations: int = 380
    rl_layouts_per_iter: int = 12
    rl_rollouts: int = 16
    rl_horizon: int = 40
    rl_lr: float = 1e-3
    rl_inner_steps: int = 4
    rl_log_weight: float = 0.3

    def __post_init__(self) -> None:
        if abs(sum(self.demo_mix) - 1.0) > 1e-6 or min(self.demo_mix) < 0:
            raise ConfigError(f"demo_mix must be three probabilities summing to 1, got {self.demo_mix}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")

    @classmethod
    def quick(cls, **overrides: Any) -> MazeRecipeConfig:
        """A shortened run (a few minutes) that still shows both stages learn (CI runs it)."""
        base = dict(sft_layouts=800, sft_epochs=3, rl_iterations=20, rl_layouts_per_iter=8,
                    rl_rollouts=8, rl_inner_steps=4)
        return cls(**{**base, **overrides})


def _layout_states(layout: Layout) -> list[str]:
    return [describe(layout, cell) for cell in layout.free_cells]


def demonstrator(layout: Layout, *, slip: float, gamma: float, mix: tuple[float, float, float]) -> np.ndarray:
    """The noisy expert's move distribution per open cell, shape [cells, 4]."""
    solution = solve(layout, slip=slip, gamma=gamma)
    goal = layout.goal
    out = np.zeros((len(layout.free_cells), len(ACTIONS)))
    for s, cell in enumerate(layout.free_cells):
        optimal = np.isclose(solution.q[s], solution.q[s].max(), atol=1e-9).astype(float)
        distance = abs(cell[0] - goal[0]) + abs(cell[1] - goal[1])
        myopic = np.zeros(len(ACTIONS))
        for a, (dr, dc) in enumerate([(-1, 0), (0, 1), (1, 0), (0, -1)]):
            nxt = (cell[0] + dr, cell[1] + dc)
            if layout.cell(nxt) != "#" and abs(nxt[0] - goal[0]) + abs(nxt[1] - goal[1]) < distance:
                myopic[a] = 1.0
        if myopic.sum() == 0:
            myopic = optimal.copy()
        out[s] = mix[0] * optimal / optimal.sum() + mix[1] * myopic / myopic.sum() + mix[2] / len(ACTIONS)
    return out


def training_layouts(count: int, *, start: int, size: int) -> list[tuple[int, Layout]]:
    """``count`` training-split layouts from seed ``start`` on (held-out ones skipped)."""
    out = []
    for task in maze_tasks(split="train", start=start, size=size):
        seed = task.kwargs["layout_seed"]
        out.append((seed, generate_layout(seed, size=size)))
        if len(out) >= count:
            return out
    return out


def _soft_rollout_values(P_next: np.ndarray, logp_pol: np.ndarray, logp_ref: np.ndarray,
                         *, beta: float, gamma: float, rollouts: int, horizon: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Monte-Carlo soft Q̂(s, c) for every open cell s and action class c (4 moves + other text).

    ``P_next[s, a]`` is the env's next-outcome distribution over [cells..., goal, pit];
    ``logp_pol``/``logp_ref`` are [cells, 5] (four moves + 'any other text', which stays put).
    """
    n_cells = logp_pol.shape[0]
    n_classes = logp_pol.shape[1]
    starts = np.repeat(np.arange(n_cells), n_classes * rollouts)
    first = np.tile(np.repeat(np.arange(n_classes), rollouts), n_cells)
    state, alive = starts.copy(), np.ones(len(starts), dtype=bool)
    value = np.zeros(len(starts))
    policy_cdf = np.cumsum(np.exp(logp_pol), axis=1)
    policy_cdf /= policy_cdf[:, -1:]
    outcome_cdf = np.cumsum(P_next, axis=2)
    kl = logp_pol - logp_ref
    for k in range(horizon):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        s = state[idx]
        if k == 0:
            action = first[idx]
        else:
            action = (rng.random(idx.size)[:, None] > policy_cdf[s]).sum(axis=1).clip(0, n_classes - 1)
            value[idx] -= gamma**k * beta * kl[s, action]
        moving = action < len(ACTIONS)
        nxt = s.copy()
        if moving.any():
            m = idx[moving]
            cdf = outcome_cdf[state[m], action[moving]]
            nxt[moving] = (rng.random(m.size)[:, None] > cdf).sum(axis=1).clip(0, cdf.shape[1] - 1)
        reached_goal = nxt == n_cells
        fell = nxt == n_cells + 1
        value[idx[reached_goal]] += gamma**k
        alive[idx[reached_goal | fell]] = False
        state[idx] = np.where(reached_goal | fell, 0, nxt)
    return value.reshape(n_cells, n_classes, rollouts).mean(axis=2)


def _outcome_matrix(layout: Layout, slip: float) -> np.ndarray:
    """``[cells, 4, cells + 2]``: next-cell probabilities, then goal, then pit."""
    model = build_model(layout, slip=slip)
    pit = np.clip(1.0 - model.P.sum(axis=2) - model.R, 0, 1)
    return np.concatenate([model.P, model.R[:, :, None], pit[:, :, None]], axis=2)


def _with_other(logp_moves):
    """Append log p('any other text') = log(1 − Σ p(moves)) as a fifth column."""

    total = torch.logsumexp(logp_moves, dim=1, keepdim=True).clamp(max=-1e-6)
    other = torch.log(-torch.expm1(total))
    return torch.cat([logp_moves, other], dim=1)


def train_maze_pair(config: MazeRecipeConfig, out_dir: str | Path, *, reference_dir: str | Path | None = None,
                    policy_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the recipe; writes ``out_dir/{reference,policy}`` and ``ttsearch_pair.json``.

    ``reference_dir`` skips tokenizer training and SFT and uses that reference (a folder
    written by an earlier run); ``policy_dir`` also continues RL from that policy instead of
    starting it at the reference (more RL iterations without redoing the first ones).
    """

    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    log = _Logger(progress)
    n_rl = config.rl_iterations * config.rl_layouts_per_iter
    layouts = training_layouts(config.sft_layouts + n_rl, start=10_000 * config.seed, size=config.size)
    sft_layouts, rl_layouts = layouts[: config.sft_layouts], layouts[config.sft_layouts:] or layouts

    if reference_dir is None:
        tokenizer, model, sft_loss = _sft(config, sft_layouts, rng, log)
        save_pair_folder(model, tokenizer, out_dir / "reference")
        reference_source = "sft"
    else:
        tokenizer = AutoTokenizer.from_pretrained(reference_dir)
        model = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32)
        save_pair_folder(model, tokenizer, out_dir / "reference")
        sft_loss, reference_source = None, str(reference_dir)
        if policy_dir is not None:
            model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(out_dir / "reference", dtype=torch.float32).eval()
    rl_log = _rl(config, model, reference, tokenizer, rl_layouts, rng, log)
    model.eval()
    save_pair_folder(model, tokenizer, out_dir / "policy")

    report = {
        "env": "maze",
        "env_kwargs": {"size": config.size, "slip": config.slip, "gamma": config.gamma},
        "beta": config.beta,
        "prompt": PROMPT,
        "recipe": asdict(config),
        "reference_source": reference_source,
        "policy_source": str(policy_dir) if policy_dir is not None else "reference",
        "sft_final_loss": sft_loss,
        "rl_final": rl_log[-1] if rl_log else None,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / PAIR_CONFIG_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log(f"pair written to {out_dir} in {report['train_seconds']} s")
    return report


def _move_tokens(tokenizer) -> list[int]:
    turns = action_turn_ids(tokenizer, ACTIONS)
    if any(len(turn) != 2 for turn in turns):
        raise ConfigError(f"each move must be one token for this recipe; got {turns}: raise vocab_size")
    return [turn[0] for turn in turns]


def _sft(config: MazeRecipeConfig, layouts: list[tuple[int, Layout]], rng: np.random.Generator, log):
    """Tokenizer + from-scratch model trained to imitate the noisy expert (-> π_ref)."""

    corpus = list(ACTIONS)
    for _, layout in layouts[:300]:
        corpus.extend(_layout_states(layout))
    tokenizer = train_tokenizer(corpus, vocab_size=config.vocab_size)
    log(f"tokenizer: {len(tokenizer)} tokens; moves -> {_move_tokens(tokenizer)}")
    turns = action_turn_ids(tokenizer, ACTIONS)
    model = make_model(tokenizer, hidden_size=config.hidden_size, num_layers=config.num_layers,
                       num_heads=config.num_heads, intermediate_size=config.intermediate_size, seed=config.seed)
    prompts, targets = [], []
    for _, layout in layouts:
        dist = demonstrator(layout, slip=config.slip, gamma=config.gamma, mix=config.demo_mix)
        for s, text in enumerate(_layout_states(layout)):
            prompts.append(chat_prompt_ids(tokenizer, SYSTEM_PROMPT, text))
            targets.append(int(rng.choice(len(ACTIONS), p=dist[s])))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.sft_lr, weight_decay=0.0)
    steps = config.sft_epochs * ((len(prompts) + config.sft_batch - 1) // config.sft_batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.sft_lr, total_steps=steps)
    model.train()
    losses: list[float] = []
    for epoch in range(config.sft_epochs):
        order = rng.permutation(len(prompts))
        for start in range(0, len(order), config.sft_batch):
            batch = order[start:start + config.sft_batch]
            logp = continuation_logprobs(model, [prompts[i] for i in batch], [turns[targets[i]] for i in batch],
                                         pad_id=tokenizer.pad_token_id)
            loss = -logp.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        log(f"sft epoch {epoch + 1}/{config.sft_epochs}: loss {np.mean(losses[-50:]):.4f}")
    model.eval()
    return tokenizer, model, float(np.mean(losses[-50:]))


def _rl(config: MazeRecipeConfig, model, reference, tokenizer, layouts: list[tuple[int, Layout]],
        rng: np.random.Generator, log) -> list[dict[str, float]]:
    """KL-regularised soft policy iteration over five action classes: four moves + 'other text'.

    'Other text' is a real action of a language model: the env answers it with invalid-action
    feedback and the agent stays put. Its soft value is estimated like the moves' (forced as the
    first action), so the targets are a proper distribution over everything the model can say.
    The loss is the cross-entropy to the target (bounded gradients) plus a small squared error
    in log space, which makes the rare, bad actions' log-ratios converge too.
    """

    move_tokens = _move_tokens(tokenizer)
    stop_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    pad_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.rl_lr, weight_decay=0.0)
    ref_cache: dict[int, torch.Tensor] = {}
    history = []
    for iteration in range(config.rl_iterations):
        offset = (iteration * config.rl_layouts_per_iter) % len(layouts)
        batch = layouts[offset: offset + config.rl_layouts_per_iter]
        prompts, logp_ref, q_hat = [], [], []
        model.eval()
        with torch.no_grad():
            for seed, layout in batch:
                layout_prompts = [chat_prompt_ids(tokenizer, SYSTEM_PROMPT, t) for t in _layout_states(layout)]
                if seed not in ref_cache:
                    ref_cache[seed] = _with_other(next_token_logprobs(reference, layout_prompts, move_tokens, pad_id=pad_id))
                logp_pol = _with_other(next_token_logprobs(model, layout_prompts, move_tokens, pad_id=pad_id))
                q_hat.append(_soft_rollout_values(
                    _outcome_matrix(layout, config.slip), logp_pol.numpy(), ref_cache[seed].numpy(),
                    beta=config.beta, gamma=config.gamma, rollouts=config.rl_rollouts,
                    horizon=config.rl_horizon, rng=rng))
                prompts.extend(layout_prompts)
                logp_ref.append(ref_cache[seed])
        q = torch.tensor(np.concatenate(q_hat), dtype=torch.float32)
        ref = torch.cat(logp_ref)
        # Soft improvement: target ∝ π_ref · exp(Q̂/β), over all five classes.
        target = torch.log_softmax(ref + q / config.beta, dim=1)
        model.train()
        for _ in range(config.rl_inner_steps):  # project onto the improved policy (several steps)
            # Each row also carries one move and the stop token: the turn must still end after
            # the move (RL acts on the move token; the stop token keeps its SFT certainty).
            chosen = rng.integers(len(move_tokens), size=len(prompts))
            first, stop = next_token_and_stop_logprobs(model, prompts, move_tokens, chosen, stop_id, pad_id=pad_id)
            logp_pol = _with_other(first)
            cross_entropy = -(target.exp() * logp_pol).sum(dim=1).mean()
            log_error = ((logp_pol - target) ** 2).mean()
            loss = cross_entropy + config.rl_log_weight * log_error - stop.mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        with torch.no_grad():
            kl = (logp_pol.exp() * (logp_pol - ref)).sum(dim=1).mean()
        history.append({"iteration": iteration, "cross_entropy": cross_entropy.item(),
                        "log_error": log_error.item(), "kl": kl.item(), "stop_logprob": stop.mean().item()})
        if iteration % 10 == 0 or iteration == config.rl_iterations - 1:
            log(f"rl {iteration + 1}/{config.rl_iterations}: ce {cross_entropy.item():.4f} "
                f"log-err {log_error.item():.4f} kl {kl.item():.4f} log p(stop) {stop.mean().item():.4f}")
    return history


class _Logger:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.started:7.1f}s] {message}", flush=True)
