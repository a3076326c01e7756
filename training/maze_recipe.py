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
   Every cell is shown twice: as a plain observation and as the env shows it after a garbled
   turn (its invalid-action line quoting a random no-move text) — the same Markov state.
3. **RL -> π_θ**: KL-regularised soft policy iteration on **whole turns**. The objective is
   ``E[Σ_t γ^t (r_t − β·log π_θ(y_t|s_t)/π_ref(y_t|s_t))]`` with ``y_t`` the whole sampled turn
   (every token: the move, the stop token, anything else), β = ``beta``. The env tells five
   action classes apart: the four canonical move turns (move token + ``<|im_end|>``) and any
   other text, the env's no-op (the agent stays, a turn passes, the feedback text changes).
   Each iteration takes fresh training layouts; for every state (exploring starts over both
   views of every open cell) and every class, Monte-Carlo rollouts of the *current* policy's
   whole-turn class probabilities through the env's own transition function estimate the soft
   value ``Q̂(s,c) = r + Σ_k γ^k (r_k − β·log π_θ/π_ref(c_k|s_k))`` (the KL penalty in the
   return, as in KL-regularised RLHF; ``rl_value_estimator="expected"`` sums the first step's
   outcomes with the env's probabilities over rollout state values instead). The policy is
   then moved toward the KL-regularised improvement ``π_ref(y|s)·exp((Q̂(s,c(y)) − V̂(s))/β)`` over whole turns, factorised into exact
   next-token targets on the full vocabulary: at the turn's first token, at the stop decision
   after each move token, and at every token of sampled non-canonical turns (whose further
   tokens must keep π_ref's conditionals: a no-op is a no-op however it is spelled). Its fixed
   point is the optimal KL-regularised policy, whose whole-turn log-ratio to π_ref is A*/β
   (Proposition 1), on garbled turns as on moves. The exact solver's values never enter the
   loss (it is the judge in ``ttsearch bench prop1``).

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

from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.envs.maze.env import SlipperyMaze, maze_tasks
from ttsearch.envs.maze.layout import ACTIONS, Layout, describe, generate_layout
from ttsearch.envs.maze.solver import solve
from ttsearch.training.maze_rl import move_tokens_of, rl
from ttsearch.training.move_logprobs import (
    action_turn_ids,
    chat_prompt_ids,
    continuation_logprobs,
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
    rl_iterations: int = 1000
    rl_layouts_per_iter: int = 8
    rl_rollouts: int = 128
    rl_horizon: int = 40
    rl_lr: float = 1e-3
    rl_lr_final_fraction: float = 0.1
    rl_inner_steps: int = 4
    rl_log_weight: float = 0.3
    rl_value_estimator: str = "rollout"
    """How Q̂ is estimated: "rollout" (rollouts with a forced first class, per class) or
    "expected" (one env step in expectation over rollout state values: less noise per rollout)."""
    rl_turn_samples: int = 4
    rl_turn_tokens: int = 8
    rl_save_every: int = 100
    """Also write the policy every this many RL iterations (0: only at the end), so a long run
    can be measured while it trains and leaves a usable pair if stopped."""

    def __post_init__(self) -> None:
        if abs(sum(self.demo_mix) - 1.0) > 1e-6 or min(self.demo_mix) < 0:
            raise ConfigError(f"demo_mix must be three probabilities summing to 1, got {self.demo_mix}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if self.rl_turn_tokens < 2:
            raise ConfigError(f"rl_turn_tokens must be >= 2 (a move token and the stop token), got {self.rl_turn_tokens}")
        if self.rl_value_estimator not in ("rollout", "expected"):
            raise ConfigError(unknown_choice("rl_value_estimator", self.rl_value_estimator, ("rollout", "expected")))
        if self.rl_turn_samples < 0 or self.rl_rollouts < 1 or self.rl_inner_steps < 1:
            raise ConfigError("rl_turn_samples must be >= 0, rl_rollouts and rl_inner_steps >= 1")

    @classmethod
    def quick(cls, **overrides: Any) -> MazeRecipeConfig:
        """A shortened run (a few minutes) that still shows both stages learn (CI runs it)."""
        # Every layout gives two views of each cell (plain + after a no-op): half the layouts of
        # the single-view recipe cost the same. Small SFT batches: at 256 the ~180 steps end on
        # the plateau where the tiny model ignores the map (π_ref the same in every cell, expert
        # agreement 0.27, and RL then has nothing to correct); 64 gives 4x the steps at the same
        # cost and agreement 0.66.
        base = dict(sft_layouts=400, sft_epochs=3, sft_batch=64, rl_iterations=20, rl_layouts_per_iter=4,
                    rl_rollouts=32, rl_inner_steps=4)
        return cls(**{**base, **overrides})


GARBLE_PIECES = (*ACTIONS, *ACTIONS, *(f" {a}" for a in ACTIONS), "1", "2", "3", "4", "A", ".", " .",
                 "assistant", "user", "goal", "open", "wall", "#", "O", "G")
"""Pieces of the no-op turns the invalid-action observations quote in training (what tiny models
emit when they garble a turn: moves run together, stray digits, map symbols, template words)."""


def garbled_text(rng: np.random.Generator) -> str:
    """A random text that is no move: 0-4 pieces run together (``southnorth``, ``4north``, '')."""
    while True:
        pieces = rng.choice(len(GARBLE_PIECES), size=int(rng.choice(5, p=[0.1, 0.3, 0.3, 0.15, 0.15])))
        text = "".join(GARBLE_PIECES[i] for i in pieces)
        if text.strip().lower() not in ACTIONS:
            return text


def invalid_observation(layout: Layout, cell: tuple[int, int], text: str, *, slip: float) -> str:
    """The env's own observation after the no-op ``text`` at ``cell`` (its invalid-action feedback)."""
    env = SlipperyMaze(layout=Layout(layout.grid, cell), slip=slip)
    env.reset(seed=0)
    return env.step(text).observation.text


def _layout_states(layout: Layout, *, rng: np.random.Generator | None = None, slip: float = 0.1) -> list[str]:
    """Observation texts of every open cell; with ``rng``, then the same cells once more, each as
    the env shows it after a no-op turn (a random garbled text quoted in its invalid-action line).

    The state after a garbled turn is the same cell (the maze is Markov) behind a different text:
    the pair must act, and its log-ratio must mean something, there too — otherwise one garbled
    turn leads to prompts neither model was trained on, and to more garbled turns.
    """
    plain = [describe(layout, cell) for cell in layout.free_cells]
    if rng is None:
        return plain
    return plain + [invalid_observation(layout, cell, garbled_text(rng), slip=slip) for cell in layout.free_cells]


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

    def save(rl_log: list[dict[str, float]]) -> dict[str, Any]:
        """Write the policy and the manifest (at the end, and every ``rl_save_every`` iterations)."""
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
            "rl_iterations_done": len(rl_log),
            "rl_final": rl_log[-1] if rl_log else None,
            # the last iterations averaged: one iteration's statistics are Monte-Carlo noisy
            "rl_last10_mean": {k: float(np.mean([h[k] for h in rl_log[-10:]])) for k in rl_log[-1] if k != "iteration"}
            if rl_log else None,
            "train_seconds": round(time.perf_counter() - started, 1),
        }
        (out_dir / PAIR_CONFIG_FILE).write_text(json.dumps(report, indent=2) + "\n")
        return report

    rl_log = rl(config, model, reference, tokenizer, rl_layouts, rng, log, states=_layout_states,
                system_prompt=SYSTEM_PROMPT, checkpoint=save)
    report = save(rl_log)
    log(f"pair written to {out_dir} in {report['train_seconds']} s")
    return report


def _sft(config: MazeRecipeConfig, layouts: list[tuple[int, Layout]], rng: np.random.Generator, log):
    """Tokenizer + from-scratch model trained to imitate the noisy expert (-> π_ref)."""

    corpus = list(ACTIONS)
    for _, layout in layouts[:300]:
        corpus.extend(_layout_states(layout, rng=rng, slip=config.slip))
    tokenizer = train_tokenizer(corpus, vocab_size=config.vocab_size)
    log(f"tokenizer: {len(tokenizer)} tokens; moves -> {move_tokens_of(tokenizer)}")
    turns = action_turn_ids(tokenizer, ACTIONS)
    model = make_model(tokenizer, hidden_size=config.hidden_size, num_layers=config.num_layers,
                       num_heads=config.num_heads, intermediate_size=config.intermediate_size, seed=config.seed)
    prompts, targets = [], []
    for _, layout in layouts:
        dist = demonstrator(layout, slip=config.slip, gamma=config.gamma, mix=config.demo_mix)
        texts = _layout_states(layout, rng=rng, slip=config.slip)  # the demonstrator acts alike after a no-op
        for s, text in enumerate(texts):
            prompts.append(chat_prompt_ids(tokenizer, SYSTEM_PROMPT, text))
            targets.append(int(rng.choice(len(ACTIONS), p=dist[s % len(dist)])))
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


class _Logger:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.started:7.1f}s] {message}", flush=True)
