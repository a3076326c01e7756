"""Proposition 1, measured: progress advantage vs the exact soft advantage on held-out mazes.

    ttsearch bench prop1 --json                     # the shipped default pair, 50 held-out layouts
    ttsearch bench prop1 --pair runs/maze-pair --layouts 100
    ttsearch bench prop1 --rollouts 16 --json       # + sampled turns: log-ratios of parseable vs
                                                    #   unparseable turns, KL per token and per turn

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

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ttsearch.envs.errors import ConfigError

MEASURES = ("whole turns: log π(move) = log p(move token(s)) + log p(<|im_end|> | move); judge = exact soft "
            "A*(s, move) with π_ref's whole-turn move probabilities and any other text as the no-op action")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--layouts", type=int, default=50, help="held-out layouts to use (default 50)")
    parser.add_argument("--split", default="test", choices=("test", "train"),
                        help="layouts to measure on (default: held-out 'test')")
    parser.add_argument("--rollouts", type=int, default=0,
                        help="also sample this many episodes per layout and report the log-ratios of "
                             "parseable vs unparseable turns (default 0: off)")
    parser.add_argument("--max-new-tokens", type=int, default=4, help="turn length limit of the rollouts (default 4, as the demo)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the rollouts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


CLEAR_GAP = 0.02
"""A state's best move is 'clear' when its A* beats the runner-up by this much (reward units)."""


def _metrics(score: np.ndarray, advantage: np.ndarray, optimal_sets: list[set[int]]) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

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
    import torch

    from ttsearch.training.maze_recipe import _turn_classes
    from ttsearch.training.move_logprobs import branch_logprobs

    first, second = branch_logprobs(model, prompts, move_tokens, pad_id=pad_id)
    return _turn_classes(first, second, move_tokens, stop_id)[:, 4].to(torch.float64).numpy()


def measure(pair_dir: str | Path, *, layouts: int = 50, split: str = "test") -> dict[str, Any]:
    """Compute the Proposition 1 statistics for a maze pair (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsearch.envs.maze.env import ACTIONS, describe, generate_layout, maze_tasks
    from ttsearch.envs.maze.solver import soft_solve, solve
    from ttsearch.training.maze_recipe import PAIR_CONFIG_FILE, SYSTEM_PROMPT
    from ttsearch.training.move_logprobs import action_logprobs, action_turn_ids, chat_prompt_ids

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


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    x = np.asarray(values)
    q = np.quantile(x, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"n": int(x.size), "mean": float(x.mean()), "min": float(q[0]), "p10": float(q[1]),
            "median": float(q[2]), "p90": float(q[3]), "max": float(q[4])}


def sampled_turns(pair_dir: str | Path, *, layouts: int = 50, rollouts: int = 16, split: str = "test",
                  max_new_tokens: int = 4, seed: int = 0) -> dict[str, Any]:
    """Play ``rollouts`` episodes on each of ``layouts`` layouts; per-step log-ratio statistics.

    Turns are sampled by the agent exactly as the demo samples them; every generated token
    (the stop token included) is then re-scored by a plain forward of both models, which also
    gives the exact KL(π_θ‖π_ref) of the next-token distributions at each generated position.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
    from ttsearch.agents.base import step_from_candidate
    from ttsearch.envs import list_tasks
    from ttsearch.envs.base import Trajectory
    from ttsearch.training.move_logprobs import position_logprobs

    pair_dir = Path(pair_dir)
    pair = ModelPair.load_dir(pair_dir)
    beta = float(pair.beta)
    env_kwargs = {k: v for k, v in dict(pair.manifest.env_kwargs).items() if k != "gamma"}
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0),
                  parser=PlainActionParser(match_admissible=True))
    tasks = list_tasks("maze", split=split, limit=layouts, episode_seed=seed, **env_kwargs)
    envs, trajs = [], []
    for task in tasks:
        for episode in range(rollouts):
            env = task.make()
            obs = env.reset(seed=task.seed * 1000 + episode)
            envs.append(env)
            trajs.append(Trajectory(task=task, initial_observation=obs, system_prompt=env.system_prompt))
    records: list[tuple[tuple[int, ...], tuple[int, ...], bool, int]] = []  # prompt, generated ids, parsed, span length
    after_invalid = {True: [0, 0], False: [0, 0]}  # observation shows invalid-action feedback -> [turns, unparseable]
    turn = 0
    while True:
        live = [i for i, t in enumerate(trajs) if not t.done]
        if not live:
            break
        prompts = agent.renderer.render_many([trajs[i] for i in live])
        proposals = agent.propose([trajs[i] for i in live], k=1, seed=seed * 100_000 + turn, score_reference=False)
        for i, prompt, row in zip(live, prompts, proposals, strict=True):
            candidate = row[0]
            records.append((prompt, candidate.generated_token_ids, candidate.parse_error is None,
                            len(candidate.action_token_ids)))
            tally = after_invalid[trajs[i].observation.text.startswith("Invalid action")]
            tally[0] += 1
            tally[1] += candidate.parse_error is not None
            result = envs[i].step(candidate.action)
            trajs[i] = trajs[i].extended(step_from_candidate(trajs[i].observation, candidate, result))
        turn += 1
    for env in envs:
        env.close()

    policy = AutoModelForCausalLM.from_pretrained(pair_dir / "policy", dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(pair_dir / "reference", dtype=torch.float32).eval()
    pad = pair.tokenizer.pad_token_id
    groups: dict[str, dict[str, list[float]]] = {
        name: {"pa_turn": [], "pa_span": [], "kl_tokens": [], "tokens": []} for name in ("parseable", "unparseable")}
    for start in range(0, len(records), 512):
        chunk = records[start:start + 512]
        with torch.no_grad():
            lp_pol, valid = position_logprobs(policy, [r[0] for r in chunk], [r[1] for r in chunk], pad_id=pad)
            lp_ref, _ = position_logprobs(reference, [r[0] for r in chunk], [r[1] for r in chunk], pad_id=pad)
        ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(r[1]) for r in chunk], batch_first=True, padding_value=pad)
        ratio = (lp_pol.gather(-1, ids[..., None]) - lp_ref.gather(-1, ids[..., None]))[..., 0].double() * valid
        kl = ((lp_pol.exp() * (lp_pol - lp_ref)).sum(-1).double() * valid)
        for row, (_, generated, parsed, span) in enumerate(chunk):
            group = groups["parseable" if parsed else "unparseable"]
            group["pa_turn"].append(beta * float(ratio[row].sum()))
            group["pa_span"].append(beta * float(ratio[row, :span].sum()))
            group["kl_tokens"].append(float(kl[row].sum()))
            group["tokens"].append(len(generated))
    out: dict[str, Any] = {"layouts": layouts, "rollouts_per_layout": rollouts, "max_new_tokens": max_new_tokens,
                           "episodes": len(trajs), "turns": len(records),
                           "success_rate": float(np.mean([t.success for t in trajs]))}
    all_pa = groups["parseable"]["pa_turn"] + groups["unparseable"]["pa_turn"]
    all_kl = groups["parseable"]["kl_tokens"] + groups["unparseable"]["kl_tokens"]
    all_tokens = groups["parseable"]["tokens"] + groups["unparseable"]["tokens"]
    out["unparseable_fraction"] = len(groups["unparseable"]["pa_turn"]) / max(len(records), 1)
    out["episodes_with_unparseable_turn"] = float(np.mean([any(s.parse_error is not None for s in t.steps)
                                                           for t in trajs]))
    out["unparseable_rate_at_plain_observations"] = after_invalid[False][1] / max(after_invalid[False][0], 1)
    out["turns_after_invalid_action"] = after_invalid[True][0]
    out["unparseable_rate_after_invalid_action"] = after_invalid[True][1] / max(after_invalid[True][0], 1)
    out["kl_per_turn"] = float(np.mean(all_pa)) / beta  # E_{y~π_θ}[log π_θ(y)/π_ref(y)]
    out["kl_per_token"] = float(np.sum(all_kl) / np.sum(all_tokens))  # exact next-token KL, mean over positions
    for name, group in groups.items():
        out[name] = {"pa_whole_turn": _distribution(group["pa_turn"]), "pa_action_span": _distribution(group["pa_span"]),
                     "kl_per_token": float(np.sum(group["kl_tokens"]) / max(np.sum(group["tokens"]), 1))}
    return out


def main(args: argparse.Namespace) -> int:
    from ttsearch.agents.checkpoints.shipped import default_pair_dir

    if args.layouts < 1:
        raise ConfigError(f"--layouts must be >= 1, got {args.layouts}")
    if args.rollouts < 0 or args.max_new_tokens < 1:
        raise ConfigError("--rollouts must be >= 0 and --max-new-tokens >= 1")
    pair_dir = args.pair or default_pair_dir("maze")
    result = measure(pair_dir, layouts=args.layouts, split=args.split)
    if args.rollouts:
        result["sampled_turns"] = sampled_turns(pair_dir, layouts=args.layouts, rollouts=args.rollouts,
                                                split=args.split, max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Proposition 1 on {result['n_states']} {result['split']}-split states "
                        f"({result['n_pairs']} state-move pairs, whole turns)")
    for column in ("score", "spearman", "pearson", "argmax = argmax A*", "argmax hard-optimal"):
        table.add_column(column)
    for name in ("pa", "policy_logprob", "pa_action_span"):
        m = result[name]
        table.add_row(name, f"{m['spearman']:.3f}", f"{m['pearson']:.3f}", f"{m['argmax_agreement']:.3f}",
                      f"{m['hard_optimal_agreement']:.3f}")
    console.print(table)
    if "sampled_turns" in result:
        turns = result["sampled_turns"]
        table = Table(title=f"Per-step PA of sampled turns ({turns['turns']} turns, {turns['episodes']} episodes; "
                            f"KL/turn {turns['kl_per_turn']:.3f}, KL/token {turns['kl_per_token']:.4f})")
        for column in ("turns", "n", "mean", "p10", "median", "p90", "max"):
            table.add_column(column)
        for name in ("parseable", "unparseable"):
            d = turns[name]["pa_whole_turn"]
            if d["n"]:
                table.add_row(name, str(d["n"]), *(f"{d[k]:.3f}" for k in ("mean", "p10", "median", "p90", "max")))
            else:
                table.add_row(name, "0", "", "", "", "", "")
        console.print(table)
    return 0
