"""Expanding branching-search nodes: propose for many states at once, execute every child.

Beam, best-first and MCTS share this: a :class:`Branch` is an executed node (tree id, env
handle, trajectory, cumulative and running-min step score); :func:`expand` sends all the
parents' states to the agent in ONE batched ``propose`` (policy sampling and reference scoring
batched by the agent), de-duplicates each parent's candidates by env action (the best-scored
sample of an action is kept, the first on ties: two samples of one action lead to the same
child), executes every kept child through the :class:`Brancher`, and records all of them in the
tree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttsearch.agents.base import Candidate
from ttsearch.envs.base import Trajectory
from ttsearch.search.base import SearchContext
from ttsearch.search.branching import Brancher, Handle


@dataclass(slots=True, eq=False)
class Branch:
    """An executed search node (mutable: MCTS keeps visit statistics on it; compared by identity)."""

    node: int
    handle: Handle
    trajectory: Trajectory
    cumulative: float = 0.0
    running_min: float = math.inf
    step_score: float = 0.0
    prior: float = 1.0
    visits: int = 0
    value_sum: float = 0.0
    children: list[Branch] | None = None

    @property
    def done(self) -> bool:
        return self.trajectory.done

    @property
    def depth(self) -> int:
        return len(self.trajectory.steps)


def root_branch(ctx: SearchContext, *, branching: str) -> Branch:
    """Open the brancher (snapshot or replay), reset, start the tree; return the root."""
    brancher = ctx.open_brancher(branching)
    obs, handle = brancher.root()
    system = brancher.env.system_prompt
    ctx.start_tree(obs, system)
    return Branch(0, handle, Trajectory(ctx.task, obs, (), system))


def best_per_action(group: Sequence[tuple[Candidate, float]]) -> list[tuple[Candidate, float]]:
    """Keep one candidate per env action: the highest score, the earliest on ties; order of first appearance."""
    best: dict[str, tuple[int, Candidate, float]] = {}
    for index, (cand, score) in enumerate(group):
        kept = best.get(cand.action)
        if kept is None:
            best[cand.action] = (index, cand, score)
        elif score > kept[2]:
            best[cand.action] = (kept[0], cand, score)
    return [(c, s) for _, c, s in sorted(best.values(), key=lambda item: item[0])]


def execute(ctx: SearchContext, brancher: Brancher, parent: Branch, cand: Candidate, score: float,
            **attrs: Any) -> Branch:
    """Execute one candidate from ``parent`` and record it; return the child branch."""
    result, handle = brancher.step(parent.handle, cand.action)
    obs = parent.trajectory.observation
    node = ctx.record(parent.node, obs, cand, score, result, **attrs)
    return Branch(node, handle, parent.trajectory.extended(ctx.tree.step(node)),
                  cumulative=parent.cumulative + score, running_min=min(parent.running_min, score),
                  step_score=score)


def propose_scored(ctx: SearchContext, parents: Sequence[Branch], k: int, *, key: Sequence[Any],
                   greedy: bool = False, env_reserved: int = 0, depth: int | None = None,
                   ) -> tuple[list[list[tuple[Candidate, float]]], str | None]:
    """One batched proposal for as many ``parents`` as the budget allows (shrinking k first).

    Returns the scored candidate groups for ``parents[:len(groups)]`` and the budget limit that
    shrank or refused the batch (None when all of it fit). The env steps to execute every
    candidate are planned in (their worst case under the branching mode); ``env_reserved``
    are steps promised to earlier, not yet executed candidates.
    """
    if not parents:
        return [], None
    per_candidate = max(ctx.brancher.cost(p.handle) for p in parents)
    allowance = ctx.afford(len(parents), k, greedy=greedy, env_per_candidate=per_candidate,
                           env_reserved=env_reserved, depth=depth)
    if not allowance:
        return [], allowance.limit
    groups = ctx.propose([p.trajectory for p in parents], allowance, key=key, greedy=greedy)
    scored = [[(c, ctx.score(c)) for c in group] for group in groups]
    return scored, allowance.limit


def expand(ctx: SearchContext, parents: Sequence[Branch], k: int, *, key: Sequence[Any],
           depth: int | None = None) -> tuple[list[tuple[Branch, list[Branch]]], str | None]:
    """Propose ``k`` candidates for each parent in one call and execute the distinct ones.

    Returns ``[(parent, children)]`` for the parents the budget allowed (a prefix of
    ``parents``) and the limiting budget name (None when everything fit). ``depth`` is the
    episode depth the controller's ``horizon`` reserve is counted from.
    """
    groups, limit = propose_scored(ctx, parents, k, key=key, depth=depth)
    out = []
    for parent, group in zip(parents, groups):
        children = [execute(ctx, ctx.brancher, parent, c, s) for c, s in best_per_action(group)]
        out.append((parent, children))
    return out, limit
