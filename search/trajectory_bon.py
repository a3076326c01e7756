"""Trajectory best-of-N: N independent rollouts, keep the one with the best trajectory score.

    TrajectoryBestOfN(n=8).run(task, task.make, agent, make_scorer("progress_advantage"), budget)
    TrajectoryBestOfN(n=16, early_stop=AdaptiveN(wave=4))                 # stop once the pick is settled
    TrajectoryBestOfN(n=16, early_stop=DeepConf(warmup=4, percentile=50))  # prune weak rollouts online
    TrajectoryBestOfN(n=8, selection="weighted_majority")   # vote on the final answer (search/selection.py)

Needs only ``reset``: each rollout of a wave plays in its own env from ``env_factory`` (reset
with the task seed). Rollouts of a wave advance in lock-step, one batched ``propose`` (one
sampled candidate per rollout) per step. The pick is ``scorer.score_trajectory`` over the
finished rollouts (the earliest on ties; unfinished ones only when none finished; DeepConf-pruned
ones never, unless nothing else exists); ``selection`` other than ``best`` votes on the rollouts'
final answers instead (``search/selection.py``; only in envs with ``has_final_answer``). Under a tight budget the later rollouts of a wave are
cut (status ``cut``) so the earlier ones can finish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ttsearch.envs.base import Env, Trajectory
from ttsearch.envs.errors import ConfigError
from ttsearch.search.base import Controller, SearchContext, SearchResult
from ttsearch.search.early_stopping import AdaptiveN, DeepConf
from ttsearch.search.selection import check_selection, final_answer, select


@dataclass(slots=True)
class _Rollout:
    index: int
    env: Env
    trajectory: Trajectory
    node: int = 0
    status: str = "alive"  # alive | done | max_steps | pruned | cut
    running_min: float = math.inf
    warmup: bool = False


class TrajectoryBestOfN(Controller):
    """``n`` rollouts sampled from the policy; return the best by the scorer's trajectory score."""

    name = "trajectory_best_of_n"
    ranks_candidates = False
    branching_need = "reset"
    early_stops = ("adaptive", "deepconf")

    def __init__(self, *, n: int = 8, seed: int = 0, max_steps: int = 100, early_stop=None,
                 selection: str = "best", temperature: float | None = None):
        super().__init__(seed=seed, max_steps=max_steps, early_stop=early_stop)
        self._check_positive(self.name, n=n)
        self.n = n
        self.selection = check_selection(selection)
        if temperature is not None and not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ConfigError(f"{self.name}: temperature must be a number > 0 or None, got {temperature!r}")
        self.temperature = temperature

    def _waves(self) -> list[int]:
        rule = self.early_stop
        if isinstance(rule, AdaptiveN):
            return [min(rule.wave, self.n - i) for i in range(0, self.n, rule.wave)]
        if isinstance(rule, DeepConf) and rule.threshold is None and rule.warmup < self.n:
            return [rule.warmup, self.n - rule.warmup]
        return [self.n]

    def _run(self, ctx: SearchContext) -> SearchResult:
        rule, meter = self.early_stop, ctx.meter
        envs: list[Env] = []
        rollouts: list[_Rollout] = []
        threshold = rule.threshold if isinstance(rule, DeepConf) else None
        reason = "done"
        waves = self._waves()
        leader, stable = None, 0
        for wave, size in enumerate(waves):
            while len(envs) < size:
                envs.append(ctx.make_env())
                self._check_answers(envs[-1])
            batch = []
            for env in envs[:size]:
                obs = env.reset(seed=ctx.task.seed)
                if ctx.tree is None:
                    ctx.start_tree(obs, env.system_prompt)
                batch.append(_Rollout(len(rollouts), env, Trajectory(ctx.task, obs, (), env.system_prompt),
                                      warmup=isinstance(rule, DeepConf) and threshold is None))
                rollouts.append(batch[-1])
            limit = self._play(ctx, batch, wave, threshold)
            if limit is not None:
                reason = f"budget:{limit}"
                break
            if isinstance(rule, DeepConf) and threshold is None:
                mins = [r.running_min for r in batch if r.trajectory.steps]
                threshold = rule.calibrate(mins)
                meter.detail["threshold"] = threshold
            remaining = self.n - len(rollouts)
            if isinstance(rule, AdaptiveN) and remaining > 0:
                done = [r for r in rollouts if r.status == "done"]
                finished = [ctx.trajectory_score(r.trajectory) for r in done]
                top = done[max(range(len(done)), key=lambda i: (finished[i], -i))].index if done else None
                stable = stable + 1 if top is not None and top == leader else 0
                leader = top
                if finished and rule.should_stop(finished, max(finished), remaining, stable_waves=stable):
                    meter.triggers += 1
                    mean_steps = sum(len(r.trajectory.steps) for r in rollouts) / len(rollouts)
                    meter.skipped_candidates += round(remaining * mean_steps)
                    reason = "early_stop:adaptive"
                    break
        if isinstance(rule, DeepConf):
            self._deepconf_savings(rollouts, meter)
        best = self._pick(ctx, rollouts)
        return ctx.finish(best.trajectory, reason, node=best.node, branching="independent",
                          rollouts=len(rollouts), finished=sum(r.status == "done" for r in rollouts),
                          pruned=sum(r.status == "pruned" for r in rollouts), picked=best.index,
                          rollout_trajectories=[r.trajectory for r in rollouts])

    def _play(self, ctx: SearchContext, batch: list[_Rollout], wave: int, threshold: float | None) -> str | None:
        """Advance a wave in lock-step until every rollout stops; return a budget limit if hit."""
        t = 0
        while True:
            alive = [r for r in batch if r.status == "alive"]
            if not alive:
                return None
            allowance = ctx.afford(len(alive), 1, env_per_state=1)
            for r in alive[allowance.states:]:  # later rollouts give way so earlier ones can finish
                r.status = "cut"
                if r.node:
                    ctx.tree.set(r.node, status="cut")
            if not allowance:
                return allowance.limit
            alive = alive[: allowance.states]
            groups = ctx.propose([r.trajectory for r in alive], allowance, key=("rollout", wave, t))
            for r, group in zip(alive, groups):
                cand = group[0]
                score = ctx.score(cand)
                result = r.env.step(cand.action)
                ctx.ledger.charge_env(1)
                r.node = ctx.record(r.node, r.trajectory.observation, cand, score, result, rollout=r.index)
                r.trajectory = r.trajectory.extended(ctx.tree.step(r.node))
                if score is not None:  # None: a trajectory-only scorer (no early stop allowed then)
                    r.running_min = min(r.running_min, score)
                if r.trajectory.done:
                    r.status = "done"
                elif len(r.trajectory.steps) >= self.max_steps:
                    r.status = "max_steps"
                elif threshold is not None and not r.warmup and r.running_min < threshold:
                    r.status = "pruned"
                    ctx.tree.set(r.node, status="pruned")
                    ctx.meter.triggers += 1
            t += 1

    @staticmethod
    def _deepconf_savings(rollouts: list[_Rollout], meter) -> None:
        """Estimate the steps pruned rollouts did not take: the mean length of the unpruned
        finished rollouts minus each pruned rollout's length (never negative)."""
        full = [len(r.trajectory.steps) for r in rollouts if r.status in ("done", "max_steps")]
        if not full:
            return
        mean_len = sum(full) / len(full)
        meter.skipped_candidates += round(sum(max(0.0, mean_len - len(r.trajectory.steps))
                                               for r in rollouts if r.status == "pruned"))

    def _check_answers(self, env: Env) -> None:
        if self.selection != "best" and not getattr(env, "has_final_answer", False):
            raise ConfigError(f"{self.name}: selection={self.selection!r} votes on final answers, but "
                              f"{type(env).__name__} has none (Env.has_final_answer); use selection='best'")

    def _pick(self, ctx: SearchContext, rollouts: list[_Rollout]) -> _Rollout:
        for eligible in (("done",), ("done", "max_steps", "alive", "cut"), ("pruned",)):
            pool = [r for r in rollouts if r.status in eligible and r.trajectory.steps]
            if pool:
                scores = [ctx.trajectory_score(r.trajectory) for r in pool]
                answers = [final_answer(r.trajectory) for r in pool] if self.selection != "best" else [None] * len(pool)
                return pool[select(scores, answers, self.selection, temperature=self.temperature)]
        return rollouts[0]
