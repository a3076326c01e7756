"""Proposition 1 for any maze pair: the pair's own prompts, tokenizer and move turns.

    result = measure_pair(default_pair_dir("smollm2-maze"), layouts=50)
    result["pa"]["spearman"], result["policy_logprob"]["spearman"], result["move_turns"]

``prop1.measure`` is written for the tiny from-scratch maze pairs (their tokenizer has one token
per move and no system prompt). This module measures any maze pair loadable by
``ModelPair.load_dir`` — a LoRA policy over an imported reference included — the same way:

* **prompts**: the pair's :class:`PromptRenderer` over a one-state trajectory (the env's system
  prompt unless the pair's manifest replaces it; the observation the env shows in that cell),
  so the token ids are exactly those the agent sees;
* **move turns** (what the env reads as each move): for pairs that generate ONE token per turn
  (``max_new_tokens: 1`` in the manifest), every vocabulary token whose text the pair's parser
  maps to that move ('South', ' south', ...) — the classes are exact, and any other token is the
  env's no-op; otherwise the move's text followed by the stop token (whole-turn probabilities);
* **truth**: the exact soft A* (``soft_solve``) at the pair's β and the env's γ and slip, with
  π_ref(a|s) = the reference's total probability of move a's turns (the rest is the no-op);
* **scores**: PA = β·(log π_θ(a|s) − log π_ref(a|s)) over each move's turns, and the policy's
  own log π_θ(a|s) as the baseline, with the statistics of ``prop1._metrics``;
* **distance to the optimum** (``optimum``): Proposition 1 holds for the optimal policy
  π* ∝ π_ref·exp(A*/β) of the same soft problem, so how far a trained policy is from π* says
  how much of a low score is unfinished RL. Per state, over the five classes a turn can fall in
  (the four moves and the no-op), the mean KL(π*‖π_ref), KL(π_θ‖π_ref) and KL(π_θ‖π*), and the
  move mass of each policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttsearch.agents import ModelPair, PlainActionParser
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.benchmarks.perf.prop1 import (
    _metrics,  # one definition of the statistics for both paths
)
from ttsearch.envs.base import Observation, Task, Trajectory
from ttsearch.envs.errors import ConfigError, ParseError
from ttsearch.envs.maze.env import SlipperyMaze, maze_tasks
from ttsearch.envs.maze.layout import ACTIONS, describe
from ttsearch.envs.maze.solver import soft_solve, solve
from ttsearch.training.move_logprobs import (
    action_turn_ids,
    continuation_logprobs,
    next_token_logprobs,
)

GEOMETRY = ("size", "n_walls", "n_pits")


def is_tiny_recipe_pair(manifest: PairManifest) -> bool:
    """Pairs made by ``ttsearch pair train --env maze`` (``prop1.measure`` handles them)."""
    return "vocab_size" in (manifest.extra.get("recipe") or {})


def move_turns(tokenizer: Any, *, one_token: bool, parser: Any = None) -> dict[str, list[tuple[int, ...]]]:
    """Each move's turns as token ids (see the module docstring)."""
    if not one_token:
        return {move: [tuple(ids)] for move, ids in zip(ACTIONS, action_turn_ids(tokenizer, ACTIONS), strict=True)}
    parser = parser or PlainActionParser(lowercase=True, match_admissible=True)
    out: dict[str, list[tuple[int, ...]]] = {move: [] for move in ACTIONS}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id], skip_special_tokens=True)
        try:
            move = parser.parse(text, admissible=ACTIONS)
        except ParseError:
            continue
        out[move].append((token_id,))
    if not all(out.values()):
        raise ConfigError(f"no vocabulary token reads as {[m for m, t in out.items() if not t]}: "
                          "this tokenizer cannot play one-token maze turns")
    return out


def class_logprobs(model: Any, prompts: list[tuple[int, ...]], turns: dict[str, list[tuple[int, ...]]],
                   *, pad_id: int, batch: int = 8) -> np.ndarray:
    """``[states, 4]``: log of the total probability of each move's turns in each prompt."""
    single = all(len(t) == 1 for seqs in turns.values() for t in seqs)
    out = []
    with torch.no_grad():
        for k in range(0, len(prompts), batch):
            chunk = prompts[k:k + batch]
            if single:
                ids = [t[0] for move in ACTIONS for t in turns[move]]
                lp = next_token_logprobs(model, chunk, ids, pad_id=pad_id).double()
            else:
                seqs = [t for move in ACTIONS for t in turns[move]]
                rows = [p for p in chunk for _ in seqs]
                lp = continuation_logprobs(model, rows, seqs * len(chunk), pad_id=pad_id).double().view(len(chunk), -1)
            at, cols = 0, []
            for move in ACTIONS:
                n = len(turns[move])
                cols.append(torch.logsumexp(lp[:, at:at + n], dim=1))
                at += n
            out.append(torch.stack(cols, dim=1).numpy())
    return np.concatenate(out)


def _prompts(pair: ModelPair, env: SlipperyMaze) -> list[tuple[int, ...]]:
    renderer = pair.renderer()
    task = Task(env="maze", id="prop1")
    return [renderer.render(Trajectory(task=task, initial_observation=Observation(describe(env.layout, cell), ACTIONS),
                                       system_prompt=env.system_prompt))
            for cell in env.layout.free_cells]


def measure_pair(pair_dir: str | Path, *, layouts: int = 50, split: str = "test") -> dict[str, Any]:
    """Proposition 1 statistics for any maze pair folder (see the module docstring)."""
    pair_dir = Path(pair_dir)
    pair = ModelPair.load_dir(pair_dir)
    manifest = pair.manifest
    if manifest.env not in (None, "maze"):
        raise ConfigError(f"{pair_dir} was trained on {manifest.env!r}; Proposition 1 is measured on maze pairs")
    beta, env_kwargs = pair.beta, dict(manifest.env_kwargs)
    one_token = int(manifest.extra.get("max_new_tokens", 0)) == 1
    turns = move_turns(pair.tokenizer, one_token=one_token)
    pad = pair.tokenizer.pad_token_id or 0
    policy, reference = pair.policy.model, pair.reference.model
    geometry = {k: env_kwargs[k] for k in GEOMETRY if k in env_kwargs}
    tasks = maze_tasks(split=split, **geometry)
    pa, pol, ref_mass, pol_mass, adv, optimal_sets, classes = [], [], [], [], [], [], []
    for _ in range(layouts):
        env = SlipperyMaze(next(tasks).kwargs["layout_seed"], **env_kwargs)
        prompts = _prompts(pair, env)
        lp_pol = class_logprobs(policy, prompts, turns, pad_id=pad)
        lp_ref = class_logprobs(reference, prompts, turns, pad_id=pad)
        soft = soft_solve(env.layout, slip=env.slip, gamma=env.gamma, beta=beta, reference=np.exp(lp_ref))
        hard = solve(env.layout, slip=env.slip, gamma=env.gamma)
        pa.append(beta * (lp_pol - lp_ref))
        pol.append(lp_pol)
        ref_mass.append(np.exp(lp_ref).sum(axis=1))
        pol_mass.append(np.exp(lp_pol).sum(axis=1))
        adv.append(soft.advantage)
        classes.append((_five_classes(lp_pol), _five_classes(lp_ref), _five_classes(np.log(soft.policy))))
        optimal_sets.extend({ACTIONS.index(a) for a in hard.optimal_actions(c)} for c in env.layout.free_cells)
    pa_all, pol_all, adv_all = (np.concatenate(x) for x in (pa, pol, adv))
    metrics = _metrics(pa_all, adv_all, optimal_sets)
    return {
        "pair": str(pair_dir),
        "beta": beta,
        "n_layouts": layouts,
        "split": split,
        "env_kwargs": env_kwargs,
        "n_states": int(adv_all.shape[0]),
        "n_pairs": int(adv_all.size),
        "move_turns": {"kind": "one token per turn" if one_token else "move text + stop token",
                       **{m: len(t) for m, t in turns.items()}},
        "pa": metrics,  # whole turns: one token, or the move text + stop token
        "policy_logprob": _metrics(pol_all, adv_all, optimal_sets),
        "mean_abs_error": float(np.mean(np.abs(pa_all - adv_all))),
        "reference_move_mass": float(np.mean(np.concatenate(ref_mass))),
        "policy_move_mass": float(np.mean(np.concatenate(pol_mass))),
        "optimum": _distance_to_optimum(*(np.concatenate(c) for c in zip(*classes, strict=True))),
    }


def _five_classes(move_logprobs: np.ndarray) -> np.ndarray:
    """``[states, 5]`` probabilities: the four moves' and the no-op's (the rest of the mass)."""
    moves = np.exp(move_logprobs)
    return np.concatenate([moves, np.clip(1.0 - moves.sum(axis=1, keepdims=True), 0.0, 1.0)], axis=1)


def _distance_to_optimum(policy: np.ndarray, reference: np.ndarray, optimal: np.ndarray) -> dict[str, float]:
    """Mean per-state KLs (nats) between the trained, reference and optimal class distributions."""

    def kl(p: np.ndarray, q: np.ndarray) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
        return float(np.mean(terms.sum(axis=1)))

    return {"kl_optimal_to_reference": kl(optimal, reference), "kl_policy_to_reference": kl(policy, reference),
            "kl_policy_to_optimal": kl(policy, optimal),
            "optimal_move_mass": float(np.mean(optimal[:, :4].sum(axis=1))),
            "policy_move_mass": float(np.mean(policy[:, :4].sum(axis=1)))}
