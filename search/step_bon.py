"""Step best-of-N: at each turn sample K candidate actions, execute the one with the best step score.

    StepBestOfN(k=8).run(task, None, agent, make_scorer("progress_advantage"), budget)
    StepBestOfN(k=16, early_stop=AdaptiveN(wave=4))        # sample in waves, stop when decided
    StepBestOfN(k=8, early_stop=ConfidenceGate(threshold=0.9))   # greedy when the turn is clear
                                                                 # (else greedy + k-1 samples)

It needs no env branching — the one search possible in irreversible real environments. All K
candidates of a turn come from one batched ``propose`` (per wave with ``adaptive``). Ties go
to the earliest candidate. Under a tight budget K shrinks to what fits; with ``horizon`` (the
env's step limit) enough budget is kept back to finish the episode one sample per turn.
"""

from __future__ import annotations

from ttsearch.envs.base import Trajectory
from ttsearch.search.base import Controller, SearchContext, SearchResult
from ttsearch.search.early_stopping import AdaptiveN, ConfidenceGate


class StepBestOfN(Controller):
    """Sample ``k`` candidates per turn, act on the argmax step score."""

    name = "step_best_of_n"
    early_stops = ("adaptive", "gate")

    def __init__(self, *, k: int = 8, seed: int = 0, max_steps: int = 100, early_stop=None,
                 horizon: int | None = None):
        super().__init__(seed=seed, max_steps=max_steps, early_stop=early_stop)
        self._check_positive(self.name, k=k)
        self._set_horizon(horizon)
        self.k = k

    def _run(self, ctx: SearchContext) -> SearchResult:
        env = ctx.make_env()
        obs = env.reset(seed=ctx.task.seed)
        ctx.start_tree(obs, env.system_prompt)
        trajectory = Trajectory(ctx.task, obs, (), env.system_prompt)
        rule, meter = self.early_stop, ctx.meter
        node, reason = 0, "done"
        while not trajectory.done:
            t = len(trajectory.steps)
            if t >= self.max_steps:
                reason = "max_steps"
                break
            pool: list = []  # (candidate, score)
            searched, limit = True, None
            if isinstance(rule, ConfidenceGate):
                allowance = ctx.afford(1, 1, greedy=True, env_per_state=1, depth=t)
                if not allowance:
                    reason = f"budget:{allowance.limit}"
                    break
                greedy = ctx.propose([trajectory], allowance, key=("gate", t), greedy=True)[0][0]
                score = ctx.score(greedy)
                pool.append((greedy, score))
                if rule.confident(greedy, score):
                    searched = False
                    meter.triggers += 1
                    meter.skipped_candidates += self.k - 1  # one greedy candidate instead of k samples
            if searched:
                # An uncertain gated turn counts its greedy candidate as one of the k.
                remaining, wave = self.k - len(pool), 0
                leader, stable = None, 0
                while remaining > 0:
                    size = min(remaining, rule.wave) if isinstance(rule, AdaptiveN) else remaining
                    allowance = ctx.afford(1, size, env_per_state=1, depth=t)
                    if not allowance:
                        limit = allowance.limit
                        break
                    cands = ctx.propose([trajectory], allowance, key=("sample", t, wave))[0]
                    pool.extend((c, ctx.score(c)) for c in cands)
                    remaining = 0 if allowance.limit else remaining - allowance.k
                    wave += 1
                    if isinstance(rule, AdaptiveN) and remaining > 0:
                        scores = [s for _, s in pool]
                        top = pool[max(range(len(pool)), key=lambda i: (scores[i], -i))][0].action
                        stable = stable + 1 if top == leader else 0
                        leader = top
                        if rule.should_stop(scores, max(scores), remaining, stable_waves=stable):
                            meter.triggers += 1
                            meter.skipped_candidates += remaining
                            break
            if not pool:
                reason = f"budget:{limit}"
                break
            best = max(range(len(pool)), key=lambda i: (pool[i][1], -i))
            for i, (cand, score) in enumerate(pool):
                if i != best:
                    ctx.record(node, trajectory.observation, cand, score, None)
            chosen, score = pool[best]
            result = env.step(chosen.action)
            ctx.ledger.charge_env(1)
            node = ctx.record(node, trajectory.observation, chosen, score, result)
            trajectory = trajectory.extended(ctx.tree.step(node))
        return ctx.finish(trajectory, reason, node=node)
