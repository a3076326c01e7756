"""Failure-attribution ground truth and task difficulty for the slippery maze, from exact values.

    from ttsearch.envs.maze.attribution import decisive_mistake, task_info
    task_info(task)            # {"difficulty": "hard", "v_star": 0.62, "v_star_discounted": 0.41}
    decisive_mistake(traj)     # {"decisive_step": 3, "decisive_regret": 0.57} on a failed trajectory

The maze truncates an episode after ``max_steps`` steps, so the time left is part of the state:
the infinite-horizon values of :mod:`ttsearch.envs.maze.solver` are *not* exact for the env as
played. This module solves the finite-horizon problem exactly by backward induction over
``k`` = steps left (0..max_steps; at most 25 cells × 21 horizons — microseconds):

    Q_k(s, a)    = R(s, a) + γ·Σ_s' P(s'|s, a)·V_{k-1}(s')        a ∈ {north, east, south, west}
    Q_k(s, noop) = γ·V_{k-1}(s)                                    (any other text: stay, lose a turn)
    V_k(s)       = max(Q_k(s, ·)),    V_0 ≡ 0

with ``R`` = the probability of entering the goal, pits absorbing with reward 0. The no-op is
an action of the env (every unparseable/invalid text), so it takes part in the max.

* ``v_star`` (task_info) is the optimal *success probability* from the start with all
  ``max_steps`` steps left (γ = 1); ``difficulty`` bins it: easy ≥ 0.99 > medium ≥ 0.95 > hard.
  ``v_star_discounted`` is the same at the maze's γ.
* The decisive mistake of a FAILED trajectory is the step ``t`` (0-based) with the largest
  regret ``V_k(s_t) − Q_k(s_t, a_t)`` (``k = max_steps − t``; values at the maze's γ, so a wasted
  turn costs ``(1−γ)``-ish and stepping towards a pit costs up to the whole value); the earliest
  step on ties. It is None on success, and None when no step's regret exceeds ``tol``: every
  action was optimal and the failure came from slips (bad luck, not a mistake). A trajectory cut
  short by a search budget is attributed over the steps it took.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ttsearch.envs.errors import EnvError
from ttsearch.envs.maze.env import SlipperyMaze
from ttsearch.envs.maze.layout import ACTIONS, Layout
from ttsearch.envs.maze.solver import build_model

DIFFICULTY_THRESHOLDS: tuple[tuple[str, float], ...] = (("easy", 0.99), ("medium", 0.95), ("hard", 0.0))
"""``difficulty`` = the first name whose threshold ``v_star`` reaches (success probability).
Fixed from the distribution on the first 300 held-out default layouts (5×5, slip 0.1, 20 steps):
61% have a risk-free path (easy, v* ≥ 0.99), 27% one risky passage (medium), 11% more (hard)."""
DIFFICULTIES: tuple[str, ...] = tuple(name for name, _ in DIFFICULTY_THRESHOLDS)
NOOP = len(ACTIONS)
"""Column of the no-op (invalid action) in the Q table."""
REGRET_TOL = 1e-9
"""Backward induction is exact up to float rounding: any larger regret is a real mistake."""


@dataclass(frozen=True, slots=True)
class HorizonValues:
    """Exact finite-horizon values: ``v[k, s]`` and ``q[k, s, a]`` with ``k`` steps left (a: 4 moves + no-op)."""

    states: tuple[tuple[int, int], ...]
    index: dict[tuple[int, int], int]
    v: np.ndarray
    q: np.ndarray
    gamma: float

    def regret(self, cell: tuple[int, int], steps_left: int, action: str) -> float:
        """``V_k(s) − Q_k(s, a)`` for the action text as the env reads it (other text = no-op)."""
        if steps_left < 1:
            raise EnvError(f"no step can be taken with {steps_left} steps left")
        if cell not in self.index:
            raise EnvError(f"cell {cell} is not an open cell of the layout (goal/pit cells are terminal)")
        s = self.index[cell]
        move = action.strip().lower()
        a = ACTIONS.index(move) if move in ACTIONS else NOOP
        return float(self.v[steps_left, s] - self.q[steps_left, s, a])


def horizon_values(layout: Layout, *, slip: float, gamma: float, horizon: int) -> HorizonValues:
    """Backward induction for ``k = 0..horizon`` steps left (see the module docstring)."""
    return _horizon_values(layout, float(slip), float(gamma), int(horizon))


@lru_cache(maxsize=256)  # Layout is frozen and hashable; a run asks the same layout many times
def _horizon_values(layout: Layout, slip: float, gamma: float, horizon: int) -> HorizonValues:
    model = build_model(layout, slip=slip)
    n = len(model.states)
    v = np.zeros((horizon + 1, n))
    q = np.zeros((horizon + 1, n, len(ACTIONS) + 1))
    for k in range(1, horizon + 1):
        q[k, :, :NOOP] = model.R + gamma * model.P @ v[k - 1]
        q[k, :, NOOP] = gamma * v[k - 1]
        v[k] = q[k].max(axis=1)
    v.setflags(write=False)  # cached and shared between callers
    q.setflags(write=False)
    return HorizonValues(model.states, model.index, v, q, gamma)


def _maze(task: Any) -> SlipperyMaze:
    env = task.make()
    if not isinstance(env, SlipperyMaze):
        raise EnvError(f"task {task.id!r} is not a slippery-maze task (env {task.env!r}); attribution needs the maze")
    return env


def difficulty(v_star: float) -> str:
    """Bin an optimal success probability with :data:`DIFFICULTY_THRESHOLDS`."""
    return next(name for name, threshold in DIFFICULTY_THRESHOLDS if v_star >= threshold)


def task_info(task: Any) -> dict[str, Any]:
    """``{"difficulty", "v_star", "v_star_discounted"}`` of a maze task, from its start state."""
    env = _maze(task)
    start = env.layout.start
    success = horizon_values(env.layout, slip=env.slip, gamma=1.0, horizon=env.max_steps)
    discounted = horizon_values(env.layout, slip=env.slip, gamma=env.gamma, horizon=env.max_steps)
    v_star = float(success.v[env.max_steps, success.index[start]])
    return {"difficulty": difficulty(v_star), "v_star": v_star,
            "v_star_discounted": float(discounted.v[env.max_steps, discounted.index[start]])}


def step_regrets(values: HorizonValues, cells: Sequence[tuple[int, int]], times: Sequence[int],
                 actions: Sequence[str], max_steps: int) -> list[float]:
    """Regret of each step ``t`` taken in ``cells[t]`` after ``times[t]`` earlier steps."""
    return [values.regret(tuple(cell), max_steps - t, action) for cell, t, action in zip(cells, times, actions, strict=True)]


def pick_decisive(regrets: Sequence[float], *, tol: float = REGRET_TOL) -> dict[str, Any]:
    """The earliest step with the largest regret, or None when none exceeds ``tol``."""
    if not regrets or max(regrets) <= tol:
        return {"decisive_step": None, "decisive_regret": None}
    worst = max(regrets)
    step = next(t for t, r in enumerate(regrets) if r >= worst - 1e-12)  # float-equal ties: earliest
    return {"decisive_step": step, "decisive_regret": float(worst)}


def replay_states(env: SlipperyMaze, seed: int | None, actions: Sequence[str]) -> list[tuple[tuple[int, int], int]]:
    """``(cell, t)`` before each action, replaying them from ``reset(seed)`` (the env is deterministic)."""
    env.reset(seed=seed)
    states = []
    for i, action in enumerate(actions):
        states.append((env.position, i))
        result = env.step(action)
        if result.done and i + 1 < len(actions):
            raise EnvError(f"replay of the trajectory ended at step {i}, but it has {len(actions)} actions; "
                           "the trajectory does not belong to this task/seed")
    return states


def decisive_mistake(trajectory: Any, *, tol: float = REGRET_TOL) -> dict[str, Any]:
    """Failure-attribution truth of a maze :class:`~ttsearch.envs.base.Trajectory` (module docstring).

    States come from replaying the actions from ``reset(task.seed)``; where the steps'
    observations carry the maze's ``position``/``t`` info, they must agree (else EnvError).
    """
    if trajectory.success:
        return {"decisive_step": None, "decisive_regret": None}
    env = _maze(trajectory.task)
    actions = [step.action for step in trajectory.steps]
    states = replay_states(env, trajectory.task.seed, actions)
    for t, (step, state) in enumerate(zip(trajectory.steps, states)):
        info = step.observation.info or {}
        if "position" in info and (tuple(info["position"]), info.get("t", t)) != state:
            raise EnvError(f"step {t} was taken at {info['position']} (t={info.get('t')}) but replay gives {state}; "
                           "the trajectory does not replay deterministically")
    values = horizon_values(env.layout, slip=env.slip, gamma=env.gamma, horizon=env.max_steps)
    regrets = step_regrets(values, [c for c, _ in states], [t for _, t in states], actions, env.max_steps)
    return pick_decisive(regrets, tol=tol)
