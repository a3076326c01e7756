"""Play many episodes in lockstep: one batched policy call per turn for all live episodes.

    starts = [(task, task.seed) for task in tasks for _ in range(8)]    # 8 episodes per task
    trajs = play_lockstep(agent, starts, seed=7, max_steps=20)
    rate = sum(t.success for t in trajs) / len(trajs)

Each start is a task and the seed its env is reset with (repeat a start for a GRPO group, or
vary the reset seed for distinct slip streams). Every turn is ONE ``Agent.propose`` call over
all live episodes (a batched forward, the shared prompt prefix cached once) instead of one call
per episode. Turn ``t`` samples with seed ``seed * 100_003 + t`` and sample ``j`` of that call
draws from its own counter-based stream, so episodes of one task diverge as soon as their
samples do, and a run is reproducible from ``seed``. Every env is closed, also on error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttsearch.agents.agent import Agent
from ttsearch.agents.base import step_from_candidate
from ttsearch.envs.base import Task, Trajectory

TURN_SEED_STRIDE = 100_003
"""Turn t of a run with seed s samples with seed ``s * TURN_SEED_STRIDE + t``."""


@dataclass(frozen=True, slots=True)
class EpisodeSpec:
    """An environment spec, its constructor kwargs and the turn limit of an episode."""

    env: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    horizon: int = 8

    def task(self, env_seed: int, *, split: str = "train") -> Task:
        """The task an env seed names (its id is stable across runs)."""
        return Task(env=self.env, id=f"{self.env}/seed{env_seed}", seed=int(env_seed),
                    kwargs=dict(self.kwargs), split=split)


def play_lockstep(agent: Agent, starts: Sequence[tuple[Task, int]], *, seed: int, max_steps: int,
                  greedy: bool = False, score_reference: bool = False) -> list[Trajectory]:
    """One episode per start ``(task, env reset seed)``, in order (see the module docstring)."""
    envs = []
    try:
        trajs = []
        for task, env_seed in starts:
            env = task.make()
            envs.append(env)
            obs = env.reset(seed=int(env_seed))
            trajs.append(Trajectory(task, obs, (), env.system_prompt))
        for turn in range(max_steps):
            live = [i for i, t in enumerate(trajs) if not t.done]
            if not live:
                break
            proposals = agent.propose([trajs[i] for i in live], k=1, seed=seed * TURN_SEED_STRIDE + turn,
                                      greedy=greedy, score_reference=score_reference)
            for i, (candidate,) in zip(live, proposals, strict=True):
                result = envs[i].step(candidate.action)
                trajs[i] = trajs[i].extended(step_from_candidate(trajs[i].observation, candidate, result))
        return trajs
    finally:
        for env in envs:
            env.close()


def play_episodes(agent: Agent, spec: EpisodeSpec, seeds: Sequence[int], *, seed: int,
                  greedy: bool = False, score_reference: bool = False, split: str = "train") -> list[Trajectory]:
    """One episode of ``spec`` per env seed in ``seeds`` (repeat a seed for a group)."""
    starts = [(spec.task(s, split=split), int(s)) for s in seeds]
    return play_lockstep(agent, starts, seed=seed, max_steps=spec.horizon, greedy=greedy,
                         score_reference=score_reference)
