"""Play many episodes in lockstep: one batched policy call per turn for all live episodes.

    envs = EpisodeSpec("minigrid", {"env_id": "BabyAI-GoToObj-v0"}, horizon=8)
    trajs = play_episodes(agent, envs, seeds=[0, 0, 0, 0, 1, 1, 1, 1], seed=7)
    rate = sum(t.success for t in trajs) / len(trajs)

A GRPO group is G episodes of one task (the same env seed); playing all of them and several
tasks together makes each turn one ``Agent.propose`` call (a batched forward over all live
episodes, the shared prompt prefix cached once) instead of one call per episode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttsearch.agents.agent import Agent
from ttsearch.agents.base import step_from_candidate
from ttsearch.envs.base import Task, Trajectory
from ttsearch.envs.registry import make


@dataclass(frozen=True, slots=True)
class EpisodeSpec:
    """An environment spec, its constructor kwargs and the turn limit of an episode."""

    env: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    horizon: int = 8


def play_episodes(
    agent: Agent,
    spec: EpisodeSpec,
    seeds: Sequence[int],
    *,
    seed: int,
    greedy: bool = False,
    score_reference: bool = False,
    split: str = "train",
) -> list[Trajectory]:
    """One episode per entry of ``seeds`` (env reset seeds; repeat a seed for a group).

    Sampling seed of turn t is ``seed + t``; sample j of a turn draws from (seed + t, j), so
    two episodes of one task diverge as soon as their samples do.
    """
    envs = [make(spec.env, **spec.kwargs) for _ in seeds]
    try:
        trajs = []
        for env, env_seed in zip(envs, seeds, strict=True):
            obs = env.reset(seed=int(env_seed))
            task = Task(env=spec.env, id=f"{spec.env}/seed{env_seed}", seed=int(env_seed),
                        kwargs=dict(spec.kwargs), split=split)
            trajs.append(Trajectory(task=task, initial_observation=obs, system_prompt=env.system_prompt))
        for turn in range(spec.horizon):
            live = [i for i, t in enumerate(trajs) if not t.done]
            if not live:
                break
            proposals = agent.propose([trajs[i] for i in live], k=1, seed=seed * 1000 + turn,
                                      greedy=greedy, score_reference=score_reference)
            for i, row in zip(live, proposals, strict=True):
                candidate = row[0]
                result = envs[i].step(candidate.action)
                trajs[i] = trajs[i].extended(step_from_candidate(trajs[i].observation, candidate, result))
        return trajs
    finally:
        for env in envs:
            env.close()
