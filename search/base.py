"""The search contract: ``Controller.run(task, env_factory, agent, scorer, budget) -> SearchResult``.

    controller = make_controller("beam", width=4, expand=4, seed=0)
    result = controller.run(task, task.make, agent, make_scorer("progress_advantage"),
                            Budget(generated_tokens=256))
    result.trajectory.success, result.usage.tokens, result.stop_reason, result.tree.write_json("t.json")

Every controller:
- is deterministic for a given ``seed`` (and task seed): call seeds are derived from
  (seed, task.seed, a key naming the call's place in the search), never from global state;
- never exceeds a token, call or env-step limit of its :class:`Budget` (``Ledger.afford`` is
  asked before every batched ``propose``; see ``search/budget.py``);
- records every proposed and executed node in a :class:`SearchTree`;
- never reads env rewards to choose, unless a controller documents an opt-in
  (``use_env_reward=True``) and its result says ``selection_uses_env_reward=True``.

``env_factory`` is a zero-argument callable returning a fresh :class:`Env` for the task
(``task.make`` when None). The agent is any :class:`Proposer`; the scorer any :class:`Scorer`.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ttsearch.agents.base import Candidate, Proposer, step_from_candidate
from ttsearch.envs.base import Env, Observation, Step, StepResult, Task, Trajectory
from ttsearch.envs.errors import BudgetExhausted, ConfigError, unknown_choice
from ttsearch.scorers.base import Scorer, token_fields, token_needs
from ttsearch.search.branching import Brancher
from ttsearch.search.budget import Allowance, Budget, Ledger, Usage
from ttsearch.search.early_stopping import (
    EarlyStop,
    EarlyStopMeter,
    EarlyStopReport,
    describe,
    make_early_stop,
)
from ttsearch.search.tree import SearchTree

__all__ = ["Budget", "Usage", "SearchResult", "Controller", "SearchContext", "UNPARSEABLE_PENALTY"]

UNPARSEABLE_PENALTY = 1000.0
"""Subtracted from the step score of a candidate that failed to parse (see ``SearchContext.score``)."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What a search returns (the tree is a live object; everything else is plain data)."""

    trajectory: Trajectory
    tree: SearchTree
    usage: Usage
    stopped_early: bool
    """An early-stopping rule cut compute in this search (see ``early_stop``)."""
    stop_reason: str
    """Why the search ended: ``done`` (the episode ended), ``max_steps``, ``budget:<limit>``,
    ``early_stop:<rule>``, or ``exhausted`` (nothing left to expand)."""
    controller: str
    scorer: str
    budget: Budget
    score: float | None = None
    """The scorer's trajectory score of the returned trajectory (None when unscored)."""
    selection_uses_env_reward: bool = False
    branching: str = "none"
    early_stop: EarlyStopReport | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    rollouts: tuple[Trajectory, ...] = ()
    """Every independent rollout in sample order (trajectory best-of-N; empty otherwise)."""

    @property
    def success(self) -> bool:
        return self.trajectory.success

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no tree; write it with ``tree.write_json``)."""
        return {
            "task": self.trajectory.task.id if self.trajectory.task is not None else None,
            "controller": self.controller, "scorer": self.scorer, "success": self.success,
            "reward": self.trajectory.total_reward, "steps": len(self.trajectory.steps),
            "actions": list(self.trajectory.actions), "score": self.score,
            "stopped_early": self.stopped_early, "stop_reason": self.stop_reason,
            "selection_uses_env_reward": self.selection_uses_env_reward, "branching": self.branching,
            "usage": self.usage.to_dict(), "budget": self.budget.to_dict(), "tree_nodes": len(self.tree),
            "early_stop": None if self.early_stop is None else self.early_stop.to_dict(),
            "info": dict(self.info),
        }


def derive_seed(*parts: Any) -> int:
    """A 62-bit seed from any printable parts (stable across runs and Python processes)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def resolve_horizon(spec: str | int | None, task: Task) -> int | None:
    """A controller's ``horizon`` from ``"auto"`` (the task env's ``max_steps``), ``"none"``/None,
    or an int (also given as text, as on the command line)."""
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        env = task.make()
        try:
            return env.max_steps
        finally:
            env.close()
    try:
        value = int(spec)
    except (TypeError, ValueError):
        raise ConfigError(f"horizon must be 'auto', 'none' or an int >= 1, got {spec!r}") from None
    if value < 1:
        raise ConfigError(f"horizon must be 'auto', 'none' or an int >= 1, got {spec!r}")
    return value


class SearchContext:
    """Per-run state shared by the controllers: ledger, tree, seeds, proposing and scoring."""

    def __init__(self, controller: Controller, task: Task, env_factory: Callable[[], Env] | None,
                 agent: Proposer, scorer: Scorer, budget: Budget, *, score_steps: bool = True):
        if not isinstance(budget, Budget):
            raise ConfigError(f"budget must be a ttsearch.search.Budget, got {type(budget).__name__}")
        if not isinstance(agent, Proposer):
            raise ConfigError(f"agent must implement the Proposer protocol (e.g. ttsearch.agents.Agent), "
                              f"got {type(agent).__name__}")
        self.controller, self.task, self.agent, self.scorer, self.budget = controller, task, agent, scorer, budget
        self.env_factory: Callable[[], Env] = env_factory if env_factory is not None else task.make
        self.score_steps = score_steps
        # Reward-model scorers read a whole trajectory's text: they cannot rank bare candidates.
        self.scores_candidates = scorer.scores_candidates
        if score_steps and not self.scores_candidates and (controller.ranks_candidates or controller.early_stop):
            raise ConfigError(f"scorer {scorer.name!r} scores whole trajectories only; use it with greedy or "
                              "trajectory_best_of_n (without early_stop), or as an evaluation scorer")
        needs_ref, top = token_needs([scorer]) if score_steps else (False, 0)
        rule = controller.early_stop
        if rule is not None:
            top = max(top, rule.top_logprobs)
        self.scores_reference, self.top_logprobs = needs_ref, top
        fields = token_fields([scorer]) if score_steps else frozenset()
        # only when asked, so a Proposer without these options serves every other scorer
        self.token_options = {name: True for name, field_ in (("token_kl", "token_kl"),
                                                             ("decisive_spans", "decisive_span"))
                              if field_ in fields}
        budget.check_feasible(max_new_tokens=int(agent.max_new_tokens), scores_reference=needs_ref)
        self.ledger = Ledger(agent, budget, scores_reference=needs_ref)
        self.meter = EarlyStopMeter(rule) if rule is not None else None
        self.tree: SearchTree | None = None
        self.brancher: Brancher | None = None
        self.shrinks: dict[str, int] = {}
        self._closers: list[Callable[[], None]] = []

    # -- seeds, budget ----------------------------------------------------------------------
    def seed_for(self, *key: Any) -> int:
        return derive_seed(self.controller.seed, self.task.id, self.task.seed, *key)

    def afford(self, n_states: int, k: int, *, depth: int | None = None, **kwargs: Any) -> Allowance:
        """``Ledger.afford``; with the controller's ``horizon`` and the ``depth`` (steps taken)
        of the states, enough budget is kept back to finish the episode one candidate a turn."""
        horizon = self.controller.horizon
        if horizon is not None and depth is not None:
            kwargs["reserve_steps"] = max(0, horizon - depth - 1)
        allowance = self.ledger.afford(n_states, k, **kwargs)
        if allowance.limit is not None:
            self.shrinks[allowance.limit] = self.shrinks.get(allowance.limit, 0) + 1
        return allowance

    # -- the model ----------------------------------------------------------------------------
    def propose(self, states: Sequence[Trajectory], allowance: Allowance, *, key: Sequence[Any],
                greedy: bool = False) -> list[list[Candidate]]:
        """One batched call for ``states[:allowance.states]`` × ``allowance.k`` candidates.

        An empty allowance raises :class:`BudgetExhausted` naming the limit: a controller may
        let it propagate, and ``Controller.run`` then returns the deepest path executed so far."""
        if not allowance:
            raise BudgetExhausted(allowance.limit or "unknown")
        states = list(states)[: allowance.states]
        out = self.agent.propose(states, k=allowance.k, seed=self.seed_for(*key), greedy=greedy,
                                 score_reference=self.scores_reference, top_logprobs=self.top_logprobs,
                                 **self.token_options)
        self.ledger.proposals += 1
        self.ledger.candidates += sum(len(group) for group in out)
        self.ledger.check_within()
        return out

    def score(self, candidate: Candidate | Step) -> float | None:
        """The step score controllers rank by. A candidate whose text did not parse into an
        action is demoted by :data:`UNPARSEABLE_PENALTY`: it is executed only when no parseable
        candidate exists (an empty or garbled span has no meaningful log-ratio: PA scores an
        empty span 0, which would otherwise beat every real action with negative advantage)."""
        if not self.score_steps or not self.scores_candidates:
            return None
        value = float(self.scorer.score_step(candidate))
        if math.isnan(value):
            raise ConfigError(f"scorer {self.scorer.name!r} returned NaN for a step; check its inputs")
        if getattr(candidate, "parse_error", None) is not None:
            value -= UNPARSEABLE_PENALTY
        return value

    # -- tree and env ---------------------------------------------------------------------------
    def start_tree(self, initial: Observation, system_prompt: str) -> SearchTree:
        self.tree = SearchTree(self.task.id, initial, system_prompt=system_prompt, task=self.task)
        return self.tree

    def as_step(self, observation: Observation, candidate: Candidate, result: StepResult,
                score: float | None) -> Step:
        step = step_from_candidate(observation, candidate, result)
        return replace(step, scores={self.scorer.name: score}) if score is not None else step

    def record(self, parent: int, observation: Observation, candidate: Candidate, score: float | None,
               result: StepResult | None, **attrs: Any) -> int:
        """Add a candidate (``result=None``: not executed) to the tree; return its node id."""
        placeholder = StepResult(observation, 0.0, False, False)
        step = self.as_step(observation, candidate, result or placeholder, score)
        return self.tree.add(parent, step, score=score, executed=result is not None, **attrs)

    def open_brancher(self, branching: str) -> Brancher:
        self.brancher = Brancher.open(self.env_factory, self.task, self.ledger,
                                      controller=self.controller.name, branching=branching)
        self._closers.append(self.brancher.close)
        return self.brancher

    def make_env(self) -> Env:
        env = self.env_factory()
        self._closers.append(env.close)
        return env

    def on_close(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        for fn in self._closers:
            try:
                fn()
            except Exception:  # closing must never hide the search's own result or error
                pass

    # -- the result ------------------------------------------------------------------------------
    def trajectory_score(self, trajectory: Trajectory) -> float | None:
        if not self.score_steps:
            return None
        return float(self.scorer.score_trajectory(trajectory.steps))

    def finish_exhausted(self, limit: str) -> SearchResult:
        """The result when a budget limit ended the search mid-way: the deepest executed path."""
        if self.tree is None:
            raise BudgetExhausted(limit, f"budget limit {limit!r} reached before the episode started")
        depth = self.tree.graph.nodes
        node = max(self.tree.executed(), key=lambda n: (depth[n]["depth"], -n), default=None)
        trajectory = self.tree.trajectory(node) if node is not None else Trajectory(
            self.task, self.tree.initial_observation, (), self.tree.system_prompt)
        return self.finish(trajectory, f"budget:{limit}", node=node)

    def finish(self, trajectory: Trajectory, stop_reason: str, *, node: int | None = None,
               branching: str = "none", uses_reward: bool = False,
               rollout_trajectories: Sequence[Trajectory] = (), **info: Any) -> SearchResult:
        if node is not None:
            self.tree.mark_path(node)
        usage = self.ledger.usage()
        report = self.meter.report(usage) if self.meter is not None else None
        info = {**info, "budget_shrinks": dict(self.shrinks)}
        return SearchResult(
            trajectory=trajectory, tree=self.tree, usage=usage,
            stopped_early=bool(report and report.triggers > 0), stop_reason=stop_reason,
            controller=self.controller.name, scorer=self.scorer.name if self.score_steps else "none",
            budget=self.budget, score=self.trajectory_score(trajectory),
            selection_uses_env_reward=uses_reward, branching=branching, early_stop=report, info=info,
            rollouts=tuple(rollout_trajectories),
        )


class Controller(ABC):
    """Base of every search controller (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    branching_need: ClassVar[str] = "none"
    """"none" (acts in one env), "reset" (fresh envs from the factory) or "branch"."""
    early_stops: ClassVar[tuple[str, ...]] = ()
    """Names of the early-stopping rules this controller supports."""
    ranks_candidates: ClassVar[bool] = True
    """Chooses among candidates by their step scores (False: greedy and trajectory best-of-N,
    which only record step scores, so trajectory-only scorers such as reward models fit)."""
    horizon: int | None = None
    """Step-by-step controllers take ``horizon=`` (the env's step limit): they then keep enough
    budget back to finish the episode one candidate per turn instead of starving mid-episode."""

    def __init__(self, *, seed: int = 0, max_steps: int = 100, early_stop: Any = None):
        if not isinstance(seed, int):
            raise ConfigError(f"{self.name}: seed must be an int, got {seed!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(f"{self.name}: max_steps must be an int >= 1, got {max_steps!r}")
        self.seed, self.max_steps = seed, max_steps
        rule = make_early_stop(early_stop)
        if rule is not None and rule.name not in self.early_stops:
            supported = ", ".join(self.early_stops) or "none"
            raise ConfigError(f"{self.name} does not support early_stop={rule.name!r}; it supports: {supported}")
        self.early_stop: EarlyStop | None = rule

    @property
    def early_stop_label(self) -> str | None:
        return describe(self.early_stop)

    def run(self, task: Task, env_factory: Callable[[], Env] | None, agent: Proposer, scorer: Scorer,
            budget: Budget) -> SearchResult:
        ctx = SearchContext(self, task, env_factory, agent, scorer, budget, score_steps=self._scores_steps())
        try:
            return self._run(ctx)
        except BudgetExhausted as exhausted:
            return ctx.finish_exhausted(exhausted.limit)
        finally:
            ctx.close()

    def _scores_steps(self) -> bool:
        return True

    @abstractmethod
    def _run(self, ctx: SearchContext) -> SearchResult: ...

    def _set_horizon(self, horizon: int | None) -> None:
        if horizon is not None:
            self._check_positive(self.name, horizon=horizon)
        self.horizon = horizon

    @staticmethod
    def _check_positive(name: str, **values: int) -> None:
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: {key} must be an int >= 1, got {value!r}")

    @staticmethod
    def _check_choice(kind: str, value: str, options: Sequence[str]) -> None:
        if value not in options:
            raise ConfigError(unknown_choice(kind, value, options))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, early_stop={self.early_stop_label})"
