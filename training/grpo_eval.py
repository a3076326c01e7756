"""Measure a trained pair on held-out tasks: success of policy vs reference, and KL(π_θ‖π_ref).

    pair = ModelPair.load_dir("runs/smollm2-chain-sum-pair")
    result = evaluate_pair(pair, PRESETS["chain_sum"], seeds=range(200_000, 200_200), seed=0)
    result = evaluate_pair(maze_pair, PRESETS["maze"], n_tasks=200)     # held-out maze layouts
    result["policy"]["success_rate"], result["kl_per_action_token"]

Success: one episode per held-out task, sampled at temperature 1 by each model of the pair
(the policy's episodes and the reference's episodes use the same sampling seeds). KL: the
exact full-vocabulary KL(π_θ‖π_ref) at every action token the *policy* sampled in its own
held-out episodes (the stop token excluded, as in PA), averaged per token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from ttsearch.agents import ModelPair
from ttsearch.envs.base import Task, Trajectory
from ttsearch.envs.registry import make
from ttsearch.scorers.metrics import success_rate_and_stderr
from ttsearch.training.grpo_loss import Row, exact_token_kl
from ttsearch.training.grpo_recipe import Preset, _prefix, make_agent
from ttsearch.training.rollouts import play_lockstep


def rate_with_stderr(successes: list[bool]) -> dict[str, float]:
    if not successes:
        return {"episodes": 0, "success_rate": float("nan"), "stderr": float("nan")}
    rate, stderr = success_rate_and_stderr(successes)
    return {"episodes": len(successes), "success_rate": rate, "stderr": stderr}


def _kl_per_token(policy_model: Any, reference_model: Any, rows: list[Row], *, pad_id: int, batch: int = 16) -> float:
    total, count = 0.0, 0
    for k in range(0, len(rows), batch):
        chunk = rows[k:k + batch]
        with torch.no_grad():
            kl = exact_token_kl(_action_logits(policy_model, chunk, pad_id=pad_id),
                                _action_logits(reference_model, chunk, pad_id=pad_id))
        total, count = total + float(kl.sum()), count + kl.numel()
    return total / count if count else float("nan")


def _action_logits(model: Any, rows: list[Row], *, pad_id: int) -> torch.Tensor:
    """``[action tokens, vocab]``: the logits that predict each row's action tokens, in order.

    Only those positions go through the output layer: the whole sequence's vocabulary projection
    (49k columns on SmolLM2) would cost more than the decoder and hold ~50 MB per row.
    """
    seqs = [list(r.prompt) + list(r.action) for r in rows]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
    hidden = getattr(model, model.base_model_prefix)(input_ids=ids, attention_mask=mask).last_hidden_state
    row_of = [i for i, r in enumerate(rows) for _ in r.action]
    position = [len(r.prompt) - 1 + j for r in rows for j in range(len(r.action))]
    return model.get_output_embeddings()(hidden[row_of, position])


def evaluate_pair(pair: Any, preset: Preset, seeds: Iterable[int] | None = None, *, seed: int = 0,
                  n_tasks: int | None = None) -> dict[str, Any]:
    """Success (± stderr) of the policy and of the reference, and the policy's KL per action token.

    Held-out tasks: env ``seeds``, or (``n_tasks``) the first ``n_tasks`` test-split tasks of the
    preset (listed presets such as the maze: one layout per task, held out by content hash).
    """

    if seeds is not None:
        seeds = list(seeds)
        starts = [(preset.spec.task(s, split="test"), s) for s in seeds]
        out: dict[str, Any] = {"tasks": [seeds[0], seeds[-1]], "n_tasks": len(seeds)}
    else:
        starts = preset.starts("test", int(n_tasks or 0))
        out = {"tasks": [starts[0][0].id, starts[-1][0].id], "n_tasks": len(starts)}
    episodes = {}
    for role in ("policy", "reference"):
        backend = getattr(pair, role)
        agent = make_agent(ModelPair(backend, backend, pair.tokenizer, beta=pair.beta), pair.tokenizer, preset)
        with torch.no_grad():
            trajs = play_lockstep(agent, starts, seed=seed, max_steps=preset.spec.horizon)
        episodes[role] = trajs
        out[role] = {**rate_with_stderr([t.success for t in trajs]),
                     "mean_return": sum(t.total_reward for t in trajs) / len(trajs)}
    renderer = agent.renderer
    rows = [Row(renderer.render(_prefix(t, i)), step.action_token_ids)
            for t in episodes["policy"] for i, step in enumerate(t.steps) if step.action_token_ids]
    pad = pair.tokenizer.pad_token_id or 0
    out["kl_per_action_token"] = _kl_per_token(pair.policy.model, pair.reference.model, rows, pad_id=pad)
    out["kl_action_tokens"] = sum(len(r.action) for r in rows)
    diff = out["policy"]["success_rate"] - out["reference"]["success_rate"]
    out["success_difference"] = diff
    out["difference_stderr"] = math.sqrt(out["policy"]["stderr"] ** 2 + out["reference"]["stderr"] ** 2)
    return out


def pa_vs_advantage(pair: Any, preset: Preset, seeds: Iterable[int], *, k: int = 8, seed: int = 0) -> dict[str, Any]:
    """Correlation of PA with Monte-Carlo advantages on one-turn tasks (``preset.spec.horizon == 1``).

    In a one-turn task with a deterministic reward, Q(s, a) is the reward of a itself, so
    A_MC(s, a) = r(s, a) − mean of r over the k policy samples at s (a Monte-Carlo estimate of
    the policy's value). PA = β·Σ_t (log π_θ − log π_ref) over the action tokens (sum: the
    sequence log-ratio), and the token-mean variant. Reported: Spearman ρ over all (s, a)
    with a non-constant group, and the AUROC of PA for success within those groups; the policy's
    mean token log-prob is reported alongside as the baseline.
    """

    if preset.spec.horizon != 1:
        raise ValueError("pa_vs_advantage needs a one-turn preset (horizon 1)")
    agent = make_agent(pair, pair.tokenizer, preset)
    seeds = list(seeds)
    env = make(preset.spec.env, **preset.spec.kwargs)
    states = []
    for s in seeds:
        obs = env.reset(seed=s)
        states.append(Trajectory(task=Task(env=preset.spec.env, id=str(s), seed=s, split="test"),
                                 initial_observation=obs, system_prompt=env.system_prompt))
    proposals = agent.propose(states, k=k, seed=seed)
    pa_sum, pa_mean, lp_mean, adv, success = [], [], [], [], []
    for s, row in zip(seeds, proposals, strict=True):
        rewards = []
        for cand in row:
            env.reset(seed=s)
            rewards.append(env.step(cand.action).reward)
        if len(set(rewards)) < 2:
            continue  # every sample got the same reward: A_MC = 0 for all, no ranking to test
        base = float(np.mean(rewards))
        for cand, r in zip(row, rewards, strict=True):
            diff = np.asarray(cand.policy_logprobs) - np.asarray(cand.reference_logprobs)
            pa_sum.append(pair.beta * float(diff.sum()) if diff.size else 0.0)
            pa_mean.append(pair.beta * float(diff.mean()) if diff.size else 0.0)
            lp_mean.append(float(np.mean(cand.policy_logprobs)) if diff.size else 0.0)
            adv.append(r - base)
            success.append(r >= 1.0)
    env.close()
    out: dict[str, Any] = {"states": len(seeds), "k": k, "informative_states": len(adv) // k, "pairs": len(adv)}
    if len(adv) >= 2:
        for name, score in (("pa_sum", pa_sum), ("pa_mean", pa_mean), ("policy_logprob_mean", lp_mean)):
            out[f"spearman_{name}_vs_mc_advantage"] = float(spearmanr(score, adv).statistic)
            out[f"auroc_{name}_for_success"] = float(roc_auc_score(success, score))
    return out
