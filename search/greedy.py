"""Greedy: one argmax decode per turn, acted on at once — the baseline every search must beat.

    result = Greedy(score_steps=False).run(task, None, agent, scorer, Budget())

It needs no branching and calls no scorer (``score_steps=False``, the default, skips the
reference call entirely; ``score_steps=True`` also records each step's score).
"""

from __future__ import annotations

from ttsearch.envs.base import Trajectory
from ttsearch.search.base import Controller, SearchContext, SearchResult


class Greedy(Controller):
    """Act on the policy's greedy (temperature-0) turn each step."""

    name = "greedy"
    ranks_candidates = False

    def __init__(self, *, seed: int = 0, max_steps: int = 100, score_steps: bool = False):
        super().__init__(seed=seed, max_steps=max_steps)
        self.score_steps = bool(score_steps)

    def _scores_steps(self) -> bool:
        return self.score_steps

    def _run(self, ctx: SearchContext) -> SearchResult:
        env = ctx.make_env()
        obs = env.reset(seed=ctx.task.seed)
        ctx.start_tree(obs, env.system_prompt)
        trajectory = Trajectory(ctx.task, obs, (), env.system_prompt)
        node, reason = 0, "done"
        while not trajectory.done:
            if len(trajectory.steps) >= self.max_steps:
                reason = "max_steps"
                break
            allowance = ctx.afford(1, 1, greedy=True, env_per_state=1)
            if not allowance:
                reason = f"budget:{allowance.limit}"
                break
            cand = ctx.propose([trajectory], allowance, key=("greedy", len(trajectory.steps)), greedy=True)[0][0]
            score = ctx.score(cand)
            result = env.step(cand.action)
            ctx.ledger.charge_env(1)
            node = ctx.record(node, trajectory.observation, cand, score, result)
            trajectory = trajectory.extended(ctx.tree.step(node))
        return ctx.finish(trajectory, reason, node=node)
