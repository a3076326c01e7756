"""Proposition 1, measured: progress advantage vs the exact soft advantage on held-out mazes.

    result = measure(default_pair_dir("maze"), layouts=50)     # the shipped pair, held-out layouts
    result["pa"]["spearman"], result["policy_logprob"]["argmax_agreement"]
    # the command: ttsearch bench prop1 --json   (benchmarks/cli/bench_prop1_cmd.py)
    # sampled turns (parseable vs unparseable log-ratios): benchmarks/perf/prop1_turns.py

What is measured, for every open cell s of every held-out layout and every move a (whole turns):

* ``pa``: PA(s, a) = β·(log π_θ(a|s) − log π_ref(a|s)) where log π(a|s) is the log-prob of the
  **whole turn** of move a: its token(s) plus the stop token ``<|im_end|>``;
* ``policy_logprob`` (the baseline): log π_θ(a|s) of the same whole turn;
* ``pa_action_span``: PA over the move token(s) alone, without the stop token (the span the
  agent scores during search);
* the judge, A*(s, a): the exact soft advantage of the KL-regularised maze MDP at the pair's β
  and γ, with π_ref(·|s) the reference model's whole-turn move probabilities; the remaining
  mass (any other text: garbled, empty or cut-off turns) is the env's no-op, a fifth action that
  stays put and costs a turn (``envs.maze.solver.soft_solve``).

Each score is compared with A* by rank (Spearman) and linear (Pearson) correlation pooled over
all state-move pairs, and by how often its argmax is the soft-optimal move (argmax A*) and a
hard-optimal move (value iteration). ``noop`` compares the class-level PA of 'any other text'
(β·log π_θ(other)/π_ref(other)) with A* of the no-op.

``--rollouts N`` also plays N episodes per layout with the policy (temperature 1, the demo's
4-token turn limit, the demo's parser) and reports, separately for turns that parse into a move
and turns that do not, the per-step whole-turn PA (every generated token, stop included), the
span PA the search scores, and KL(π_θ‖π_ref) per token (exact over the vocabulary at each
generated position) and per turn (the mean whole-turn log-ratio of the sampled turns: a
Monte-Carlo estimate of the turn-level KL).
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
from ttsearch.training.maze_rl import turn_classes
from ttsearch.training.move_logprobs import (
    action_logprobs,
    action_turn_ids,
    branch_logprobs,
    chat_prompt_ids,
)

MEASURES = ("whole turns: log π(move) = log p(move token(s)) + log p(<|im_end|> | move); judge = exact soft "
            "A*(s, move) with π_ref's whole-turn move probabilities and any other text as the no-op action")

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


def _other_logprob(model, prompts, move_tokens, stop_id, pad_id) -> np.ndarray:
    """log p(any turn other than a canonical move turn) per prompt (the no-op class)."""
    first, second = branch_logprobs(model, prompts, move_tokens, pad_id=pad_id)
    return turn_classes(first, second, move_tokens, stop_id)[:, 4].to(torch.float64).numpy()


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
    stop_id, pad = turns[0][-1], tokenizer.pad_token_id
    single_token_moves = all(len(span) == 1 for span in spans)

    pa, pa_span, pol, adv, optimal_sets, noop_pa, noop_adv = [], [], [], [], [], [], []
    tasks = maze_tasks(split=split, size=env_kwargs["size"])
    for _ in range(layouts):
        task = next(tasks)
        layout = generate_layout(task.kwargs["layout_seed"], size=env_kwargs["size"])
        prompts = [chat_prompt_ids(tokenizer, SYSTEM_PROMPT, describe(layout, c)) for c in layout.free_cells]
        with torch.no_grad():
            lp_pol = action_logprobs(policy, prompts, turns, pad_id=pad).double().numpy()
            lp_ref = action_logprobs(reference, prompts, turns, pad_id=pad).double().numpy()
            lp_pol_span = action_logprobs(policy, prompts, spans, pad_id=pad).double().numpy()
            lp_ref_span = action_logprobs(reference, prompts, spans, pad_id=pad).double().numpy()
            if single_token_moves:
                moves = [span[0] for span in spans]
                noop_pa.append(beta * (_other_logprob(policy, prompts, moves, stop_id, pad)
                                       - _other_logprob(reference, prompts, moves, stop_id, pad)))
        soft = soft_solve(layout, slip=env_kwargs["slip"], gamma=env_kwargs["gamma"], beta=beta,
                          reference=np.exp(lp_ref))
        hard = solve(layout, slip=env_kwargs["slip"], gamma=env_kwargs["gamma"])
        pa.append(beta * (lp_pol - lp_ref))
        pa_span.append(beta * (lp_pol_span - lp_ref_span))
        pol.append(lp_pol)
        adv.append(soft.advantage)
        noop_adv.append(soft.q_noop - soft.v)
        optimal_sets.extend({ACTIONS.index(a) for a in hard.optimal_actions(c)} for c in layout.free_cells)
    pa_all, pa_span_all, pol_all, adv_all = (np.concatenate(x) for x in (pa, pa_span, pol, adv))
    out = {
        "pair": str(pair_dir),
        "beta": beta,
        "measures": MEASURES,
        "n_layouts": layouts,
        "split": split,
        "n_states": int(adv_all.shape[0]),
        "n_pairs": int(adv_all.size),
        "pa": _metrics(pa_all, adv_all, optimal_sets),
        "policy_logprob": _metrics(pol_all, adv_all, optimal_sets),
        "pa_action_span": _metrics(pa_span_all, adv_all, optimal_sets),
        "mean_abs_error": float(np.mean(np.abs(pa_all - adv_all))),
    }
    if noop_pa:
        noop_pa_all, noop_adv_all = np.concatenate(noop_pa), np.concatenate(noop_adv)
        out["noop"] = {"pa_mean": float(noop_pa_all.mean()), "a_star_mean": float(noop_adv_all.mean()),
                       "mean_abs_error": float(np.mean(np.abs(noop_pa_all - noop_adv_all)))}
    return out

