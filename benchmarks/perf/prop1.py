"""Proposition 1, measured: progress advantage vs the exact soft advantage on held-out mazes.

    result = measure(default_pair_dir("maze"), layouts=50)     # the shipped pair, held-out layouts
    result["pa"]["spearman"], result["policy_logprob"]["argmax_agreement"]
    # the command: ttsearch bench prop1 --json   (benchmarks/cli/bench_prop1_cmd.py)

For every open cell s of every held-out layout and every move a, it computes

* PA(s, a) = β·(log π_θ(a|s) − log π_ref(a|s)) over the action tokens (the scored span), and
* the exact soft advantage A*(s, a) of the KL-regularised maze MDP at the pair's β and γ, with
  π_ref(·|s) taken from the reference model itself (whole-turn probabilities; the mass on any
  other text is the env's no-op), by soft value iteration (``envs.maze_solver.soft_solve``),

and reports their rank (Spearman) and linear (Pearson) correlation pooled over all pairs, and
how often PA's argmax is the soft-optimal move (argmax A*) and a hard-optimal move (value
iteration). The policy's own log-prob is the baseline scored the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttsearch.envs.errors import ConfigError
from ttsearch.envs.maze.env import maze_tasks
from ttsearch.envs.maze.layout import ACTIONS, describe, generate_layout
from ttsearch.envs.maze.solver import soft_solve, solve
from ttsearch.training.maze_recipe import PAIR_CONFIG_FILE, SYSTEM_PROMPT
from ttsearch.training.move_logprobs import action_logprobs, action_turn_ids, chat_prompt_ids

CLEAR_GAP = 0.02
"""A state's best move is 'clear' when its A* beats the runner-up by this much (reward units)."""


def _metrics(score: np.ndarray, advantage: np.ndarray, optimal_sets: list[set[int]]) -> dict[str, float]:
    flat_s, flat_a = score.ravel(), advantage.ravel()
    picks = score.argmax(axis=1)
    agree = picks == advantage.argmax(axis=1)
    top2 = np.sort(advantage, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= CLEAR_GAP
    within = [spearmanr(s, a).statistic for s, a in zip(score, advantage) if np.ptp(s) > 0 and np.ptp(a) > 0]
    return {
        "spearman": float(spearmanr(flat_s, flat_a).statistic),
        "pearson": float(pearsonr(flat_s, flat_a).statistic),
        "argmax_agreement": float(np.mean(agree)),
        "hard_optimal_agreement": float(np.mean([p in opt for p, opt in zip(picks, optimal_sets)])),
        "argmax_agreement_clear_states": float(np.mean(agree[clear])) if clear.any() else float("nan"),
        "clear_state_fraction": float(np.mean(clear)),
        "within_state_spearman": float(np.nanmean(within)),
    }


def measure(pair_dir: str | Path, *, layouts: int = 50, split: str = "test") -> dict[str, Any]:
    """Compute the Proposition 1 statistics for a maze pair (see the module docstring)."""

    pair_dir = Path(pair_dir)
    if not (pair_dir / PAIR_CONFIG_FILE).exists():
        raise ConfigError(f"{pair_dir} is not a maze pair folder (no {PAIR_CONFIG_FILE}); train one with "
                          "`ttsearch pair train --env maze --out DIR`")
    meta = json.loads((pair_dir / PAIR_CONFIG_FILE).read_text())
    beta, env_kwargs = float(meta["beta"]), meta["env_kwargs"]
    tokenizer = AutoTokenizer.from_pretrained(pair_dir / "reference")
    policy = AutoModelForCausalLM.from_pretrained(pair_dir / "policy", dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(pair_dir / "reference", dtype=torch.float32).eval()
    turns = action_turn_ids(tokenizer, ACTIONS)
    spans = [turn[:-1] for turn in turns]

    pa, pa_turn, pol, adv, optimal_sets = [], [], [], [], []
    tasks = maze_tasks(split=split, size=env_kwargs["size"])
    for _ in range(layouts):
        task = next(tasks)
        layout = generate_layout(task.kwargs["layout_seed"], size=env_kwargs["size"])
        prompts = [chat_prompt_ids(tokenizer, SYSTEM_PROMPT, describe(layout, c)) for c in layout.free_cells]
        pad = tokenizer.pad_token_id
        with torch.no_grad():
            lp_pol_turn = action_logprobs(policy, prompts, turns, pad_id=pad).double().numpy()
            lp_ref_turn = action_logprobs(reference, prompts, turns, pad_id=pad).double().numpy()
            lp_pol = action_logprobs(policy, prompts, spans, pad_id=pad).double().numpy()
            lp_ref = action_logprobs(reference, prompts, spans, pad_id=pad).double().numpy()
        soft = soft_solve(layout, slip=env_kwargs["slip"], gamma=env_kwargs["gamma"], beta=beta,
                          reference=np.exp(lp_ref_turn))
        hard = solve(layout, slip=env_kwargs["slip"], gamma=env_kwargs["gamma"])
        pa.append(beta * (lp_pol - lp_ref))
        pa_turn.append(beta * (lp_pol_turn - lp_ref_turn))
        pol.append(lp_pol)
        adv.append(soft.advantage)
        optimal_sets.extend({ACTIONS.index(a) for a in hard.optimal_actions(c)} for c in layout.free_cells)
    pa_all, pa_turn_all, pol_all, adv_all = (np.concatenate(x) for x in (pa, pa_turn, pol, adv))
    return {
        "pair": str(pair_dir),
        "beta": beta,
        "n_layouts": layouts,
        "split": split,
        "n_states": int(adv_all.shape[0]),
        "n_pairs": int(adv_all.size),
        "pa": _metrics(pa_all, adv_all, optimal_sets),
        "pa_whole_turn": _metrics(pa_turn_all, adv_all, optimal_sets),
        "policy_logprob": _metrics(pol_all, adv_all, optimal_sets),
        "mean_abs_error": float(np.mean(np.abs(pa_turn_all - adv_all))),
    }
