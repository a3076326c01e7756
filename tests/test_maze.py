"""The slippery maze and its exact solvers, checked against brute force and first principles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ttsearch.envs import EnvError, make
from ttsearch.envs.check_env import check_env
from ttsearch.envs.maze.env import SlipperyMaze, maze_tasks
from ttsearch.envs.maze.layout import ACTIONS, Layout, generate_layout, transitions
from ttsearch.envs.maze.solver import build_model, soft_solve, solve

from tolerances import EXACT

TINY = Layout(grid=("..G", ".O.", "..."), start=(2, 0))  # 6 open cells: 4**6 = 4096 policies
SLIP, GAMMA = 0.2, 0.9


def policy_value(model, policy: np.ndarray, gamma: float, *, log_ratio: np.ndarray | None = None,
                 beta: float = 0.0, noop: np.ndarray | None = None) -> np.ndarray:
    """Exact value of a stochastic policy by a linear solve: V = (I − γ P_π)^-1 r_π.

    With ``log_ratio`` (log π/π_ref per state-action) and β it is the KL-regularised value;
    ``noop`` is the policy's probability of the stay-in-place action.
    """
    n = len(model.states)
    P_pi = np.einsum("sa,sat->st", policy, model.P)
    r_pi = (policy * model.R).sum(axis=1)
    if noop is not None:
        P_pi += np.diag(noop)
    if log_ratio is not None:
        r_pi = r_pi - beta * (policy * log_ratio[:, :4]).sum(axis=1)
        if noop is not None:
            r_pi = r_pi - beta * noop * log_ratio[:, 4]
    return np.linalg.solve(np.eye(n) - gamma * P_pi, r_pi)


def test_value_iteration_equals_brute_force_over_all_deterministic_policies():
    model = build_model(TINY, slip=SLIP)
    best = np.full(len(model.states), -np.inf)
    for choice in itertools.product(range(4), repeat=len(model.states)):
        policy = np.eye(4)[list(choice)]
        best = np.maximum(best, policy_value(model, policy, GAMMA))
    solution = solve(TINY, slip=SLIP, gamma=GAMMA)
    # value iteration stops at a 1e-12 update, within 1e-12·γ/(1−γ) = 9e-12 of V*: 1e-9 bounds
    # that plus the linear solves' rounding (condition number ~1/(1−γ) = 10)
    np.testing.assert_allclose(solution.v, best, atol=1e-9)
    # Bellman optimality by hand at one state: Q(s,a) = R + γ Σ P V.
    s = solution.index[(1, 2)]
    np.testing.assert_allclose(solution.q[s], model.R[s] + GAMMA * model.P[s] @ solution.v, atol=1e-12)


def test_soft_solution_is_the_best_kl_regularised_policy():
    rng = np.random.default_rng(0)
    model = build_model(TINY, slip=SLIP)
    n = len(model.states)
    reference = rng.dirichlet(np.ones(5), size=n)  # 4 moves + a no-op (invalid text) column
    beta = 0.3
    soft = soft_solve(TINY, slip=SLIP, gamma=GAMMA, beta=beta, reference=reference[:, :4])
    # π* evaluated exactly with the KL-regularised objective reproduces V*.
    noop = 1 - soft.policy.sum(axis=1)
    log_ratio = np.log(np.concatenate([soft.policy, noop[:, None]], axis=1) / reference)
    v_star = policy_value(model, soft.policy, GAMMA, log_ratio=log_ratio, beta=beta, noop=noop)
    np.testing.assert_allclose(v_star, soft.v, atol=1e-9)  # soft value iteration: as above
    # ... and no other policy does better (random stochastic policies, same objective).
    for _ in range(200):
        other = rng.dirichlet(np.ones(5), size=n)
        ratio = np.log(other / reference)
        v = policy_value(model, other[:, :4], GAMMA, log_ratio=ratio, beta=beta, noop=other[:, 4])
        assert (v <= soft.v + 1e-9).all()
    # Proposition 1's identity: β log π*/π_ref = A* = Q* − V*.
    np.testing.assert_allclose(beta * np.log(soft.policy / reference[:, :4]), soft.advantage, atol=1e-9)


def test_soft_solution_tends_to_the_hard_one_as_beta_vanishes():
    n = len(build_model(TINY, slip=SLIP).states)
    uniform = np.full((n, 4), 0.25)
    hard = solve(TINY, slip=SLIP, gamma=GAMMA)
    soft = soft_solve(TINY, slip=SLIP, gamma=GAMMA, beta=1e-4, reference=uniform)
    # the soft max exceeds the hard one by at most β·log 4 per step: β·log(4)/(1−γ) = 1.4e-3
    np.testing.assert_allclose(soft.q, hard.q, atol=2e-3)


def test_soft_solve_rejects_bad_reference():
    with pytest.raises(Exception, match="shape"):
        soft_solve(TINY, slip=SLIP, gamma=GAMMA, beta=0.1, reference=np.ones((2, 4)))


def test_transitions_are_distributions_and_respect_walls():
    layout = Layout(grid=("#..", "...", "..G"), start=(1, 0))
    for cell in layout.free_cells:
        for action in ACTIONS:
            outcome = transitions(layout, cell, action, 0.3)
            assert sum(p for p, _ in outcome) == pytest.approx(1.0, abs=EXACT)
    # north from (1, 0) hits the wall at (0, 0): stays with prob 0.7, slips east 0.15, west (border) 0.15.
    assert dict((c, p) for p, c in transitions(layout, (1, 0), "north", 0.3)) == pytest.approx(
        {(1, 0): 0.85, (1, 1): 0.15}, abs=EXACT)


def test_slip_frequency_matches_the_model():
    env = SlipperyMaze(slip=0.3, layout=Layout(grid=("...", "...", "..G"), start=(1, 1)))
    slips = 0
    for seed in range(3000):
        env.reset(seed=seed)
        slips += bool(env.step("north").info["slipped"])
    assert slips / 3000 == pytest.approx(0.3, abs=0.03)  # binomial sd √(0.3·0.7/3000) = 0.008: 3.6 sd


def test_episode_dynamics_goal_pit_truncation_and_invalid_actions():
    env = SlipperyMaze(layout_seed=0, slip=0.0, max_steps=3)
    obs = env.reset(seed=0)
    assert "goal" in obs.text and obs.admissible_actions == ACTIONS
    result = env.step("dance")
    assert result.info["invalid_action"] and "Invalid action" in result.observation.text
    assert result.observation.info["position"] == env.layout.start and result.reward == 0.0
    env.step("dance")
    result = env.step("dance")
    assert result.truncated and not result.terminated
    with pytest.raises(EnvError, match="reset"):
        env.step("north")


def test_gold_path_of_deterministic_maze_reaches_goal_and_pits_terminate():
    env = SlipperyMaze(layout_seed=4, slip=0.0)
    env.reset(seed=0)
    total = 0.0
    for action in env.gold_actions():
        result = env.step(action)
        total += result.reward
    assert result.terminated and total == 1.0
    # Walk into a pit deliberately: terminal, no reward.
    pit_env = SlipperyMaze(slip=0.0, layout=Layout(grid=(".O", "G."), start=(0, 0)))
    pit_env.reset(seed=0)
    result = pit_env.step("east")
    assert result.terminated and result.reward == 0.0 and result.info["cell"] == "O"


def test_check_env_passes_and_snapshot_includes_randomness():
    report = check_env(make("maze", layout_seed=0))
    assert report.passed, report.failures()


def test_held_out_split_is_disjoint_by_content():
    test_prints = {generate_layout(t.kwargs["layout_seed"]).fingerprint
                   for t in itertools.islice(maze_tasks(split="test"), 100)}
    train_prints = {generate_layout(t.kwargs["layout_seed"]).fingerprint
                    for t in itertools.islice(maze_tasks(split="train"), 400)}
    assert test_prints and train_prints and not (test_prints & train_prints)
    with pytest.raises(EnvError, match="choose one of"):
        next(maze_tasks(split="validation"))


def test_bad_maze_arguments_give_clear_errors():
    with pytest.raises(EnvError, match="slip"):
        SlipperyMaze(slip=1.5)
    with pytest.raises(EnvError, match="do not fit"):
        SlipperyMaze(size=3, n_walls=8)
    with pytest.raises(EnvError, match="choose one of"):
        make("no-such-env")
