"""Best-first tree search on the cumulative step score.

    BestFirst(expand=4, batch=2).run(task, task.make, agent, make_scorer("progress_advantage"), budget)

The frontier holds every executed, not yet expanded node — finished episodes included — ordered
by cumulative step score (sum along the path; cumulative PA estimates return − V*(s₀), docs/design.md, "Progress advantage").
Each iteration pops the ``batch`` best nodes: when the best of them is a finished episode, it is
the answer (no open node scores higher); otherwise the open ones are expanded together in ONE
batched ``propose`` (``expand`` candidates each), every distinct child is executed (snapshot or
replay branching) and pushed. Ties go to the earliest-created node. When the budget or
``max_expansions`` ends the search first, the best finished node found is returned, else the
best open one. Env rewards are never read. With ``horizon`` (the env's step limit) enough
budget is kept to finish the best node's episode one candidate a turn.
"""

from __future__ import annotations

import heapq

from ttsearch.search.base import Controller, SearchContext, SearchResult
from ttsearch.search.branching import BRANCHING
from ttsearch.search.expansion import Branch, expand, root_branch


class BestFirst(Controller):
    """Expand the highest-cumulative-score open node(s) first."""

    name = "best_first"
    branching_need = "branch"

    def __init__(self, *, expand: int = 4, batch: int = 1, seed: int = 0, max_steps: int = 100,
                 max_expansions: int | None = None, branching: str = "auto", horizon: int | None = None):
        super().__init__(seed=seed, max_steps=max_steps)
        self._set_horizon(horizon)
        self._check_positive(self.name, expand=expand, batch=batch)
        if max_expansions is not None:
            self._check_positive(self.name, max_expansions=max_expansions)
        self._check_choice("branching mode", branching, BRANCHING)
        self.expand, self.batch, self.max_expansions, self.branching = expand, batch, max_expansions, branching

    def _run(self, ctx: SearchContext) -> SearchResult:
        root = root_branch(ctx, branching=self.branching)
        frontier: list[tuple[float, int, Branch]] = [(-root.cumulative, root.node, root)]
        finished: list[Branch] = []
        expansions, answer, reason = 0, None, "exhausted"
        while frontier:
            popped = [heapq.heappop(frontier) for _ in range(min(self.batch, len(frontier)))]
            if popped[0][2].done:
                answer, reason = popped[0][2], "done"
                break
            # Finished or depth-capped nodes popped behind an open one wait in the frontier.
            to_expand = []
            for entry in popped:
                branch = entry[2]
                if branch.done or branch.depth >= self.max_steps:
                    if branch.depth >= self.max_steps and not branch.done:
                        finished.append(branch)  # cannot go deeper: a candidate answer, not re-pushed
                        continue
                    heapq.heappush(frontier, entry)
                else:
                    to_expand.append(branch)
            if not to_expand:
                if popped[0][2].depth >= self.max_steps:
                    reason = "max_steps"
                continue
            if self.max_expansions is not None and expansions >= self.max_expansions:
                for branch in to_expand:
                    heapq.heappush(frontier, (-branch.cumulative, branch.node, branch))
                reason = "max_expansions"
                break
            results, limit = expand(ctx, to_expand, self.expand, key=("expand", expansions),
                                    depth=to_expand[0].depth)
            for branch in to_expand[len(results):]:  # the budget left these unexpanded
                heapq.heappush(frontier, (-branch.cumulative, branch.node, branch))
            if not results:
                reason = f"budget:{limit}"
                break
            expansions += 1
            for _, children in results:
                for child in children:
                    heapq.heappush(frontier, (-child.cumulative, child.node, child))
                    if child.done:
                        finished.append(child)
        if answer is None:
            pool = finished or [entry[2] for entry in frontier] or [root]
            done = [b for b in pool if b.done]
            answer = min(done or pool, key=lambda b: (-b.cumulative, b.node))
        return ctx.finish(answer.trajectory, reason, node=answer.node, branching=ctx.brancher.mode,
                          expansions=expansions)
