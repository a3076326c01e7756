"""Exact solutions of a slippery-maze layout: the ground truth for Proposition 1.

    solution = solve(layout, slip=0.1, gamma=0.95)              # optimal Q*, V* (value iteration)
    solution.optimal_action((2, 3))                             # 'east'
    soft = soft_solve(layout, slip=0.1, gamma=0.95, beta=0.1, reference=pi_ref)
    soft.advantage[soft.index[(2, 3)]]                          # exact soft A*(s, ·) for the 4 moves

The MDP: states are the open cells; goal and pit cells are absorbing (reward 1 on entering the
goal, 0 on entering a pit); discount ``gamma``; the step limit is not part of the MDP (values
are infinite-horizon discounted).

The KL-regularised problem (docs/design.md, "Progress advantage") maximises E[Σ γ^t (r_t − β·log π(a_t|s_t)/π_ref(a_t|s_t))].
Its optimal policy is π*(a|s) = π_ref(a|s)·exp(A*(s,a)/β) with

    Q*(s,a) = E[r + γ·V*(s')],   V*(s) = β·log Σ_a π_ref(a|s)·exp(Q*(s,a)/β),   A* = Q* − V*.

``reference`` gives π_ref over the four moves per state. A language model also puts mass on
texts that are no move at all; when a row sums to less than 1 the remainder is a fifth, *no-op*
action (the env answers it with invalid-action feedback: the agent stays, a step passes), so
the soft problem stays exact for the model's whole output distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ttsearch.envs.errors import ConfigError
from ttsearch.envs.maze.layout import ACTIONS, GOAL, PIT, Layout, transitions


@dataclass(frozen=True, slots=True)
class MazeModel:
    """The layout as matrices: ``P[s, a, s']`` over non-terminal cells, ``R[s, a]`` expected reward."""

    states: tuple[tuple[int, int], ...]
    index: dict[tuple[int, int], int]
    P: np.ndarray
    R: np.ndarray


def build_model(layout: Layout, *, slip: float) -> MazeModel:
    states = layout.free_cells
    index = {cell: i for i, cell in enumerate(states)}
    P = np.zeros((len(states), len(ACTIONS), len(states)))
    R = np.zeros((len(states), len(ACTIONS)))
    for s, cell in enumerate(states):
        for a, action in enumerate(ACTIONS):
            for prob, nxt in transitions(layout, cell, action, slip):
                kind = layout.cell(nxt)
                if kind == GOAL:
                    R[s, a] += prob
                elif kind != PIT:
                    P[s, a, index[nxt]] += prob
    return MazeModel(states, index, P, R)


@dataclass(frozen=True, slots=True)
class MazeSolution:
    """Optimal (hard) values: ``q[s, a]``, ``v[s]`` over ``states`` (index: cell -> s)."""

    states: tuple[tuple[int, int], ...]
    index: dict[tuple[int, int], int]
    q: np.ndarray
    v: np.ndarray
    iterations: int = 0

    def optimal_action(self, cell: tuple[int, int]) -> str:
        return ACTIONS[int(np.argmax(self.q[self.index[cell]]))]

    def optimal_actions(self, cell: tuple[int, int], *, tol: float = 1e-9) -> tuple[str, ...]:
        row = self.q[self.index[cell]]
        return tuple(a for a, q in zip(ACTIONS, row) if q >= row.max() - tol)


@dataclass(frozen=True, slots=True)
class SoftSolution:
    """Exact KL-regularised solution: ``q``, ``advantage`` are [S, 4]; ``v`` and ``q_noop`` are [S]."""

    states: tuple[tuple[int, int], ...]
    index: dict[tuple[int, int], int]
    beta: float
    q: np.ndarray
    v: np.ndarray
    advantage: np.ndarray
    q_noop: np.ndarray
    policy: np.ndarray = field(repr=False)
    """π*(a|s) over the four moves (rows sum to 1 − the optimal no-op mass)."""
    iterations: int = 0


def solve(layout: Layout, *, slip: float, gamma: float, tol: float = 1e-12, max_iter: int = 100_000) -> MazeSolution:
    """Value iteration for the optimal Q*, V* (γ < 1 or a proper goal-reaching MDP)."""
    model = build_model(layout, slip=slip)
    v = np.zeros(len(model.states))
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        new_v = (model.R + gamma * model.P @ v).max(axis=1)
        converged = np.max(np.abs(new_v - v)) < tol
        v = new_v
        if converged:
            break
    q = model.R + gamma * model.P @ v
    return MazeSolution(model.states, model.index, q, v, iterations)


def soft_solve(layout: Layout, *, slip: float, gamma: float, beta: float, reference: np.ndarray,
               tol: float = 1e-12, max_iter: int = 100_000) -> SoftSolution:
    """Soft value iteration of the KL-regularised problem against ``reference`` (π_ref per state)."""
    model = build_model(layout, slip=slip)
    reference = np.asarray(reference, dtype=float)
    n = len(model.states)
    if reference.shape != (n, len(ACTIONS)):
        raise ConfigError(f"reference must have shape ({n}, {len(ACTIONS)}) (states x moves), got {reference.shape}")
    if beta <= 0:
        raise ConfigError(f"beta must be > 0, got {beta}")
    if (reference < 0).any() or (reference.sum(axis=1) > 1 + 1e-6).any():
        raise ConfigError("reference rows must be probabilities summing to at most 1")
    noop_mass = np.clip(1.0 - reference.sum(axis=1), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_ref = np.log(np.concatenate([reference, noop_mass[:, None]], axis=1))
    v = np.zeros(n)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        q_all = np.concatenate([model.R + gamma * model.P @ v, (gamma * v)[:, None]], axis=1)
        new_v = beta * _logsumexp(log_ref + q_all / beta)
        converged = np.max(np.abs(new_v - v)) < tol
        v = new_v
        if converged:
            break
    q = model.R + gamma * model.P @ v
    advantage = q - v[:, None]
    policy = np.exp(log_ref[:, :4] + advantage / beta)
    return SoftSolution(model.states, model.index, beta, q, v, advantage, gamma * v, policy, iterations)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = np.max(np.where(np.isfinite(x), x, -np.inf), axis=1, keepdims=True)
    return (top + np.log(np.sum(np.exp(x - top), axis=1, keepdims=True)))[:, 0]
