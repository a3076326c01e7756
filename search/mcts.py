"""Monte-Carlo tree search (PUCT) with the scorer as prior and value, acting one turn at a time.

    MCTS(simulations=8, expand=4, batch=2).run(task, task.make, agent, make_scorer("progress_advantage"), budget)
    MCTS(..., use_env_reward=True)     # opt in: finished episodes are valued by their env return

Per real turn: the current node is expanded (``expand`` sampled candidates, distinct actions
executed), then ``simulations`` selections run. A selection descends by PUCT,

    argmax_c  Q(c) + c_puct · P(c) · sqrt(N(parent)) / (1 + N(c)),

where the prior P is the softmax of the children's step scores standardised among siblings
(z-scores, divided by ``prior_temperature``: scale-free, so PA at any β and log-probs behave
alike) and Q(c) is the mean value backed up through c (an unvisited child counts its own value),
min-max normalised over every value seen in this search (as MuZero does, so ``c_puct`` does not
depend on the scorer's scale). It stops
at a node with no children: that node's value — its cumulative step score from the episode
start, which for PA estimates return − V*(s₀) (docs/design.md, "Progress advantage") — is backed up along the path, and the
node is queued for expansion. Up to ``batch`` distinct leaves are expanded together in ONE
batched ``propose``. Finished episodes are valued by their cumulative score too, unless
``use_env_reward=True`` (then by their env return; the result says
``selection_uses_env_reward=True``). After the simulations the agent commits to the visited child
with the highest mean value Q (``commit="value"``, the default: with a handful of simulations
visit counts mostly mirror the prior) or the most-visited one (``commit="visits"``, the classic
rule for many simulations); ties go to more visits, then the earliest. The tree below it is kept. Under a tight budget
the simulations shrink; when even the current node cannot be expanded the search stops. With
``horizon`` (the env's step limit) enough budget is kept to finish the episode.
"""

from __future__ import annotations

import math

import numpy as np

from ttsearch.envs.errors import ConfigError
from ttsearch.search.base import Controller, SearchContext, SearchResult
from ttsearch.search.branching import BRANCHING
from ttsearch.search.expansion import Branch, expand, root_branch

COMMIT_RULES = ("value", "visits")


class MCTS(Controller):
    """PUCT search per turn; commits to the child with the best mean value, or the most visited
    one with ``commit="visits"`` (see the module docstring)."""

    name = "mcts"
    branching_need = "branch"

    def __init__(self, *, simulations: int = 8, expand: int = 4, batch: int = 2, c_puct: float = 1.0,
                 prior_temperature: float = 1.0, commit: str = "value", use_env_reward: bool = False,
                 seed: int = 0, max_steps: int = 100, branching: str = "auto", horizon: int | None = None):
        super().__init__(seed=seed, max_steps=max_steps)
        self._set_horizon(horizon)
        self._check_positive(self.name, simulations=simulations, expand=expand, batch=batch)
        for key, value in (("c_puct", c_puct), ("prior_temperature", prior_temperature)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"mcts: {key} must be a finite number > 0, got {value!r}")
        self._check_choice("branching mode", branching, BRANCHING)
        self._check_choice("mcts commit rule", commit, COMMIT_RULES)
        self.commit = commit
        self.simulations, self.expand, self.batch = simulations, expand, batch
        self.c_puct, self.prior_temperature = float(c_puct), float(prior_temperature)
        self.use_env_reward, self.branching = bool(use_env_reward), branching

    # -- values and priors ----------------------------------------------------------------------
    def _value(self, branch: Branch) -> float:
        if self.use_env_reward and branch.done:
            return branch.trajectory.total_reward
        return branch.cumulative

    def _q(self, branch: Branch) -> float:
        return branch.value_sum / branch.visits if branch.visits else self._value(branch)

    def _q_normalised(self, branch: Branch) -> float:
        span = self._q_max - self._q_min
        return (self._q(branch) - self._q_min) / span if span > 0 else 0.5

    def _seen(self, value: float) -> None:
        self._q_min, self._q_max = min(self._q_min, value), max(self._q_max, value)

    def _set_children(self, parent: Branch, children: list[Branch]) -> None:
        parent.children = children
        if children:
            scores = np.array([c.step_score for c in children], dtype=float)
            spread = scores.std()
            z = (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)
            weights = np.exp(z / self.prior_temperature)
            for child, p in zip(children, weights / weights.sum()):
                child.prior = float(p)
                self._seen(self._value(child))

    def _select(self, node: Branch) -> list[Branch]:
        path = [node]
        while node.children:
            total = sum(c.visits for c in node.children)
            scale = self.c_puct * math.sqrt(max(1, total))
            node = max(node.children, key=lambda c: (self._q_normalised(c) + scale * c.prior / (1 + c.visits), -c.node))
            path.append(node)
        return path

    def _backup(self, path: list[Branch]) -> None:
        value = self._value(path[-1])
        for branch in path:
            branch.visits += 1
            branch.value_sum += value

    # -- the search -----------------------------------------------------------------------------
    def _run(self, ctx: SearchContext) -> SearchResult:
        self._q_min, self._q_max = math.inf, -math.inf
        current = root_branch(ctx, branching=self.branching)
        reason, turn = None, 0
        while reason is None:
            if current.done:
                reason = "done"
                break
            if current.depth >= self.max_steps:
                reason = "max_steps"
                break
            if current.children is None:
                results, limit = expand(ctx, [current], self.expand, key=("expand", turn, -1),
                                        depth=current.depth)
                if not results:
                    reason = f"budget:{limit}"
                    break
                self._set_children(current, results[0][1])
            self._simulate(ctx, current, turn, current.depth)
            current = min(current.children, key=self._commit_key)
            turn += 1
        return ctx.finish(current.trajectory, reason, node=current.node, branching=ctx.brancher.mode,
                          uses_reward=self.use_env_reward, turns=turn)

    def _commit_key(self, child: Branch) -> tuple:
        if self.commit == "visits":
            return (-child.visits, -self._q(child), child.node)
        return (child.visits == 0, -self._q(child), -child.visits, child.node)

    def _simulate(self, ctx: SearchContext, root: Branch, turn: int, depth: int) -> None:
        done_sims, wave = 0, 0
        while done_sims < self.simulations:
            leaves: list[Branch] = []
            while done_sims < self.simulations and len(leaves) < self.batch:
                path = self._select(root)
                self._backup(path)
                done_sims += 1
                leaf = path[-1]
                if leaf.done or leaf.depth >= self.max_steps or leaf.children is not None or leaf is root:
                    continue  # nothing to expand (finished, capped, or an expanded node with no children)
                if leaf in leaves:
                    break  # the same leaf again: expand what we have first
                leaves.append(leaf)
            if not leaves:
                continue
            # The horizon reserve counts from the real position: the turns after this one.
            results, _ = expand(ctx, leaves, self.expand, key=("expand", turn, wave), depth=depth)
            wave += 1
            for parent, children in results:
                self._set_children(parent, children)
            if len(results) < len(leaves):
                return  # the budget cannot expand more: commit on what the visits say
