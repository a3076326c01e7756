"""Episode records of ``ttsearch run``: a trajectory as the TRAJ dict of the run schema.

    scorers = {"pa": make_scorer("progress_advantage", beta=0.1), "plp": make_scorer("policy_logprob")}
    traj = trajectory_record(rescored, scorers, truth={"decisive_step": 3, "decisive_regret": 0.4})
    traj["scores"]["pa"]["trajectory"], traj["scores"]["pa"]["steps"]

``rescored`` must carry the token data every scorer needs (``Agent.rescore`` provides policy
and reference log-probs plus top-k log-probs for every step). Task difficulty and
failure-attribution truth come from the env's attribution module, named by its registry entry
(``register(name, Env, attribution="module")``; see ``ttsearch.envs.registry.EnvEntry``) and
loaded only when used; an env without one gets null fields (and the report leaves those
sections out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ttsearch.envs.base import Step, Task, Trajectory
from ttsearch.envs.errors import EnvError
from ttsearch.envs.registry import env_entry, import_module
from ttsearch.scorers.base import Scorer
from ttsearch.search.selection import final_answer

NULL_TRUTH: dict[str, Any] = {"decisive_step": None, "decisive_regret": None}
_LOADED: dict[str, ModuleType | None] = {}


def attribution_module(env: str) -> ModuleType | None:
    """The env's attribution module, or None when it has none."""
    if env not in _LOADED:
        try:
            path = env_entry(env).attribution
        except EnvError:  # an env name this process cannot resolve has no attribution
            path = None
        _LOADED[env] = None if path is None else import_module(path, what=f"attribution of env {env!r}")
    return _LOADED[env]


def task_info(task: Task) -> dict[str, Any]:
    """``{"difficulty": ..., **env-specific}`` (difficulty null when the env has no module)."""
    module = attribution_module(task.env)
    info = {"difficulty": None}
    if module is not None:
        info.update(module.task_info(task))
    return _json_safe(info)


def truth(trajectory: Trajectory) -> dict[str, Any]:
    """The decisive-mistake ground truth of a failed trajectory; null fields on success or when unknown."""
    module = attribution_module(trajectory.task.env) if trajectory.task is not None else None
    if module is None or trajectory.success:
        return dict(NULL_TRUTH)
    return _json_safe({**NULL_TRUTH, **module.decisive_mistake(trajectory)})


def scores(trajectory: Trajectory, scorers: Mapping[str, Scorer], references: Mapping[str, str | None] | None = None,
           variants: Mapping[str, Trajectory] | None = None) -> dict[str, dict[str, Any]]:
    """Every scorer's per-step scores and trajectory score of ``trajectory`` (a scorer with a
    merged reference reads its own rescoring of it in ``variants``)."""
    out = {}
    for label, scorer in scorers.items():
        key = (references or {}).get(label)
        steps = (trajectory if key is None else (variants or {})[key]).steps
        per_step = scorer.step_scores(steps) if hasattr(scorer, "step_scores") else \
            [scorer.score_step(s) for s in steps]
        out[label] = {"steps": [_num(v) for v in per_step], "trajectory": _num(scorer.score_trajectory(steps))}
    return out


def trajectory_record(trajectory: Trajectory, scorers: Mapping[str, Scorer],
                      references: Mapping[str, str | None] | None = None,
                      variants: Mapping[str, Trajectory] | None = None, *, final_answers: bool = False) -> dict[str, Any]:
    """The TRAJ dict: outcome, actions, steps (with their token data), every scorer's scores, the
    final answer (where the env gives one) and the attribution truth. ``variants``: the same
    trajectory rescored against each merged reference (label -> trajectory)."""
    variants = variants or {}
    return {
        "success": trajectory.success,
        "reward": trajectory.total_reward,
        "n_steps": len(trajectory.steps),
        "tokens": sum(len(s.generated_token_ids) for s in trajectory.steps),
        "actions": list(trajectory.actions),
        "answer": final_answer(trajectory) if final_answers else None,
        "steps": [
            {"observation": s.observation.text, "action_text": s.action_text, "action": s.action,
             "reward": float(s.reward), "parse_error": s.parse_error, "n_action_tokens": len(s.action_token_ids),
             "token_data": token_data(s, {key: v.steps[t] for key, v in variants.items()})}
            for t, s in enumerate(trajectory.steps)
        ],
        "scores": scores(trajectory, scorers, references, variants),
        "truth": truth(trajectory),
    }


def _floats(values: Any) -> list[float | None] | None:
    return None if values is None else [_num(v) for v in values]


def token_data(step: Step, variants: Mapping[str, Step]) -> dict[str, Any]:
    """A step's per-token data (what ``ttsearch tune-scorer`` recomputes scores from): the
    policy's and the reference's log-probs of the action span, each token's KL(π_θ‖π_ref) and the
    decisive span where recorded, and the same against every merged reference."""
    return {"policy": _floats(step.policy_logprobs), "reference": _floats(step.reference_logprobs),
            "kl": _floats(step.token_kl), "decisive": None if step.decisive_span is None else list(step.decisive_span),
            "variants": {key: {"reference": _floats(v.reference_logprobs), "kl": _floats(v.token_kl)}
                         for key, v in variants.items()}}


def _num(value: Any) -> float | None:
    """A JSON-safe float: non-finite values (which JSON cannot hold) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if hasattr(value, "item"):  # numpy scalars from solvers
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out
