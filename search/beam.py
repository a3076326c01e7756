"""Beam search over agent turns: keep the W best partial trajectories by cumulative step score.

    Beam(width=4, expand=4).run(task, task.make, agent, make_scorer("progress_advantage"), budget)
    Beam(width=4, expand=4, early_stop=ConfidenceGate(threshold=0.9))    # confident beams: greedy child only
                                                                         # (others: greedy + expand-1 samples)
    Beam(width=4, expand=4, early_stop=DeepConf(threshold=-1.5))         # drop beams whose running min < -1.5

Each depth expands every unfinished beam by ``expand`` sampled candidates in ONE batched
``propose`` (all beams' states together), executes each distinct child (the env is branched by
snapshot or replay), and keeps the ``width`` best of children + finished beams, ranked by the
cumulative step score (sum along the path; the earliest-created node wins ties). Finished beams
keep their slot and are not expanded; the search ends when every kept beam is finished. The
returned trajectory is the best finished beam by cumulative score (an unfinished one only when
the budget or ``max_steps`` ended the search first). Env rewards are never read. With
``horizon`` (the env's step limit) the beam keeps enough budget to finish one path.
"""

from __future__ import annotations

from ttsearch.envs.errors import ConfigError
from ttsearch.search.base import Controller, SearchContext, SearchResult
from ttsearch.search.branching import BRANCHING
from ttsearch.search.early_stopping import ConfidenceGate, DeepConf
from ttsearch.search.expansion import Branch, best_per_action, execute, propose_scored, root_branch


def _rank(branch: Branch) -> tuple[float, int]:
    return (-branch.cumulative, branch.node)


class Beam(Controller):
    """Width-``width`` beam, ``expand`` candidates per beam per depth."""

    name = "beam"
    branching_need = "branch"
    early_stops = ("gate", "deepconf")

    def __init__(self, *, width: int = 4, expand: int = 4, seed: int = 0, max_steps: int = 100,
                 early_stop=None, branching: str = "auto", horizon: int | None = None):
        super().__init__(seed=seed, max_steps=max_steps, early_stop=early_stop)
        self._check_positive(self.name, width=width, expand=expand)
        self._set_horizon(horizon)
        self._check_choice("branching mode", branching, BRANCHING)
        if isinstance(self.early_stop, DeepConf) and self.early_stop.threshold is None:
            raise ConfigError("beam: deepconf needs a fixed threshold (beams have no warm-up rollouts); "
                              "calibrate one with ttsearch.search.calibrate_threshold on warm-up episodes")
        self.width, self.expand, self.branching = width, expand, branching

    def _run(self, ctx: SearchContext) -> SearchResult:
        root = root_branch(ctx, branching=self.branching)
        beams, reason = [root], None
        rule, meter = self.early_stop, ctx.meter
        for depth in range(self.max_steps + 1):
            alive = [b for b in beams if not b.done]
            if not alive:
                reason = "done"
                break
            if depth == self.max_steps:
                reason = "max_steps"
                break
            children, limit = self._expand(ctx, alive, depth)
            if isinstance(rule, DeepConf):
                kept = [c for c in children if c.running_min >= rule.threshold]
                for c in children:
                    if c not in kept:
                        ctx.tree.set(c.node, status="pruned")
                        meter.triggers += 1
                if not kept and children:  # never prune the last hope: keep the best child
                    best = min(children, key=_rank)
                    ctx.tree.set(best.node, status="executed")
                    meter.triggers -= 1
                    kept = [best]
                meter.skipped_candidates += self.expand * (len(children) - len(kept))  # estimate: their next expansion
                children = kept
            if not children:
                reason = f"budget:{limit}"
                break
            beams = sorted([b for b in beams if b.done] + children, key=_rank)[: self.width]
        finished = [b for b in beams if b.done]
        best = min(finished or beams, key=_rank)
        return ctx.finish(best.trajectory, reason, node=best.node, branching=ctx.brancher.mode)

    def _expand(self, ctx: SearchContext, alive: list[Branch], depth: int) -> tuple[list[Branch], str | None]:
        """Children of this depth: gated (greedy) ones plus the sampled expansion of the rest."""
        rule, meter = self.early_stop, ctx.meter
        pools: dict[int, list] = {}
        to_sample = alive
        limit = None
        if isinstance(rule, ConfidenceGate):
            groups, limit = propose_scored(ctx, alive, 1, key=("gate", depth), greedy=True, depth=depth)
            to_sample = []
            for beam, group in zip(alive, groups):
                cand, score = group[0]
                pools[beam.node] = [(cand, score)]
                if rule.confident(cand, score):
                    meter.triggers += 1
                    meter.skipped_candidates += self.expand - 1
                elif self.expand > 1:
                    to_sample.append(beam)  # greedy + expand-1 samples: never more than ungated
        k = self.expand - 1 if isinstance(rule, ConfidenceGate) else self.expand
        if to_sample:
            reserved = sum(ctx.brancher.cost(b.handle) for b in alive if b.node in pools)
            groups, sample_limit = propose_scored(ctx, to_sample, k, key=("expand", depth),
                                                  env_reserved=reserved, depth=depth)
            limit = limit or sample_limit
            for beam, group in zip(to_sample, groups):
                pools.setdefault(beam.node, []).extend(group)
        children = []
        for beam in alive:
            for cand, score in best_per_action(pools.get(beam.node, [])):
                children.append(execute(ctx, ctx.brancher, beam, cand, score))
        return children, limit
