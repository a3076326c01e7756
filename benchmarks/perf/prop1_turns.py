"""Proposition 1 on sampled turns: the whole-turn log-ratios of parseable vs unparseable turns.

    result = sampled_turns(default_pair_dir("maze"), layouts=50, rollouts=16)
    result["unparseable"]["pa_whole_turn"]["mean"], result["unparseable_fraction"]
    # the command: ttsearch bench prop1 --rollouts 16 --json   (benchmarks/cli/bench_prop1_cmd.py)

The policy plays ``rollouts`` episodes per held-out layout as the demo plays them (temperature 1,
the demo's 4-token turn limit and parser). Every generated token (the stop token included) is
then re-scored by a plain forward of both models, giving per turn the whole-turn PA
β·Σ log π_θ/π_ref, the span PA the search scores, and the exact KL(π_θ‖π_ref) of the next-token
distributions at each generated position; statistics are reported separately for turns that
parse into a move and turns that do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
from ttsearch.agents.base import step_from_candidate
from ttsearch.envs import list_tasks
from ttsearch.envs.base import Trajectory
from ttsearch.training.move_logprobs import position_logprobs


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    x = np.asarray(values)
    q = np.quantile(x, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"n": int(x.size), "mean": float(x.mean()), "min": float(q[0]), "p10": float(q[1]),
            "median": float(q[2]), "p90": float(q[3]), "max": float(q[4])}


def _play(agent, tasks, *, rollouts: int, seed: int):
    """Sample every episode to its end; ``(records, after_invalid, trajectories)`` with one record
    ``(prompt, generated ids, parsed, span length)`` per turn."""
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
    return records, after_invalid, trajs


def _rescore(pair_dir: Path, records, *, pad: int, beta: float) -> dict[str, dict[str, list[float]]]:
    """Per turn: whole-turn PA, span PA, summed exact next-token KL and token count, by group."""
    policy = AutoModelForCausalLM.from_pretrained(pair_dir / "policy", dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(pair_dir / "reference", dtype=torch.float32).eval()
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
    return groups


def sampled_turns(pair_dir: str | Path, *, layouts: int = 50, rollouts: int = 16, split: str = "test",
                  max_new_tokens: int = 4, seed: int = 0) -> dict[str, Any]:
    """Play ``rollouts`` episodes on each of ``layouts`` layouts; per-step log-ratio statistics.

    Turns are sampled by the agent exactly as the demo samples them; every generated token
    (the stop token included) is then re-scored by a plain forward of both models, which also
    gives the exact KL(π_θ‖π_ref) of the next-token distributions at each generated position.
    """
    pair_dir = Path(pair_dir)
    pair = ModelPair.load_dir(pair_dir)
    beta = float(pair.beta)
    env_kwargs = {k: v for k, v in dict(pair.manifest.env_kwargs).items() if k != "gamma"}
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0),
                  parser=PlainActionParser(match_admissible=True))
    tasks = list_tasks("maze", split=split, limit=layouts, episode_seed=seed, **env_kwargs)
    records, after_invalid, trajs = _play(agent, tasks, rollouts=rollouts, seed=seed)
    groups = _rescore(pair_dir, records, pad=pair.tokenizer.pad_token_id, beta=beta)
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
