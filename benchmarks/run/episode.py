"""One episode of ``ttsearch run``: search one task with one arm and seed, score it, make its row.

    row, tree = play_episode(s, arm, task, seed, agent=s.agent.fork(), env_factory=guarded_factory)
    row = error_row(arm, task, seed, fault, wall_s=3.2)      # an env fault ended the episode

After the search, the returned trajectory and every rollout are re-scored in one batched pass per
model (``Agent.rescore``) and every evaluation scorer scores every trajectory; that pass is
reported as ``eval_usage``, apart from the search's own ``usage``. Both are read from the
episode's own agent, so they are exact however many episodes share the engines. Scorers with a
merged reference are fed by one more rescoring per reference (its agent's usage is added to
``eval_usage``). Row fields: ``docs/run_schema.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ttsearch.benchmarks.run.arms import ResolvedArm
from ttsearch.benchmarks.run.episode_record import task_info, trajectory_record
from ttsearch.benchmarks.run.setup import SCHEMA, Setup
from ttsearch.benchmarks.run.store import episode_key
from ttsearch.envs.base import Env, Task
from ttsearch.envs.guard import EnvFault
from ttsearch.scorers.base import token_fields, token_needs
from ttsearch.search import Budget


def _unique(trajectories: list[Any]) -> list[Any]:
    seen, out = set(), []
    for t in trajectories:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _header(arm: ResolvedArm, task: Task, seed: int, role: str) -> dict[str, Any]:
    return {"schema": SCHEMA, "key": episode_key(arm.name, task.id, seed), "arm": arm.name,
            "controller": arm.controller, "controller_kwargs": dict(arm.controller_kwargs),
            "search_scorer": arm.search_scorer, "seed": seed,
            "task": {"id": task.id, "env": task.env, "seed": task.seed, "split": task.split, "role": role,
                     "info": task_info(task)}}


def _role(s: Setup, task: Task) -> str:
    return "validation" if task.id in s.validation_ids else "test"


def rescore_pool(s: Setup, agent: Any, pool: list[Any]) -> tuple[dict[str | None, dict[int, Any]], dict[str, int]]:
    """Every pool trajectory rescored for each reference its scorers use (None: the pair's):
    {reference: {id(original): rescored}}, and the scored tokens of those passes."""
    groups: dict[str | None, list[Any]] = {}
    for label, scorer in s.scorers.items():
        groups.setdefault(s.scorer_references.get(label), []).append(scorer)
    groups.setdefault(None, [])
    out, usage = {}, {"policy_scored_tokens": 0, "reference_scored_tokens": 0}
    for key, scorers in groups.items():
        rescorer = agent if key is None else s.variant_agents[key].fork()
        reference, top = token_needs(scorers)
        fields = token_fields(scorers)
        if key is None:
            top = top or s.config.top_logprobs  # top log-probs are recorded in every row
        pol0, ref0 = rescorer.policy_stats.scored_tokens, rescorer.reference_stats.scored_tokens
        done = rescorer.rescore(pool, reference=reference, top_logprobs=top, token_kl="token_kl" in fields,
                                decisive_spans="decisive_span" in fields)
        usage["policy_scored_tokens"] += rescorer.policy_stats.scored_tokens - pol0
        usage["reference_scored_tokens"] += rescorer.reference_stats.scored_tokens - ref0
        out[key] = dict(zip(map(id, pool), done))
    return out, usage


def play_episode(s: Setup, arm: ResolvedArm, task: Task, seed: int, *, agent: Any,
                 env_factory: Callable[[], Env]) -> tuple[dict[str, Any], Any]:
    """Search one task with one arm and seed; return (row, search tree). Env faults propagate
    as :class:`EnvFault` (the caller turns them into an error row)."""
    started = time.perf_counter()
    label = arm.search_scorer
    scorer = s.scorers[label] if label is not None else next(iter(s.scorers.values()))
    searcher = s.agent_for(label, agent)
    result = arm.make_controller(seed).run(task, env_factory, searcher, scorer, Budget(**arm.budget))
    rollouts = list(result.rollouts)
    chosen = next((i for i, r in enumerate(rollouts) if r is result.trajectory), None) if rollouts else None
    pool = _unique([result.trajectory, *rollouts])
    rescored, eval_usage = rescore_pool(s, agent, pool)
    records = {i: trajectory_record(rescored[None][i], s.scorers, s.scorer_references,
                                    {key: done[i] for key, done in rescored.items() if key is not None},
                                    final_answers=s.final_answers)
               for i in map(id, pool)}
    tree = result.tree
    chosen_nodes = [n for n, status in tree.graph.nodes(data="status") if status == "chosen"]
    tree_path = tree.path(max(chosen_nodes, key=lambda n: tree.graph.nodes[n]["depth"])) if chosen_nodes else None
    row = {
        **_header(arm, task, seed, _role(s, task)), "budget": result.budget.to_dict(), "error": None,
        "success": result.success, "reward": result.trajectory.total_reward,
        "n_steps": len(result.trajectory.steps), "stop_reason": result.stop_reason,
        "stopped_early": result.stopped_early, "usage": result.usage.to_dict(), "eval_usage": eval_usage,
        "wall_s": round(time.perf_counter() - started, 4),
        "trajectory": records[id(result.trajectory)],
        "rollouts": [records[id(r)] for r in rollouts] if rollouts else None,
        "chosen": chosen, "tree_path": tree_path,
    }
    return row, tree


def error_row(arm: ResolvedArm, task: Task, seed: int, fault: EnvFault, *, wall_s: float,
              role: str = "test") -> dict[str, Any]:
    """The row of an episode an env fault ended: no trajectory, the fault as data."""
    return {**_header(arm, task, seed, role), "budget": dict(arm.budget), "error": fault.to_dict(),
            "success": False, "reward": None, "n_steps": None, "stop_reason": f"env_{fault.kind}",
            "stopped_early": False, "usage": None, "eval_usage": None, "wall_s": round(wall_s, 4),
            "trajectory": None, "rollouts": None, "chosen": None, "tree_path": None}
