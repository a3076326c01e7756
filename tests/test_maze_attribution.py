"""Maze failure-attribution truth and difficulty, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from ttsearch.envs.base import Step, Task, Trajectory
from ttsearch.envs.errors import EnvError
from ttsearch.envs.maze.attribution import decisive_mistake, horizon_values, task_info
from ttsearch.envs.maze.layout import ACTIONS, GOAL, PIT, Layout, transitions
from ttsearch.envs.maze.solver import solve

from tolerances import EXACT

GAMMA = 0.95
# start (1, 0); the pit is east of the start; the goal is 3 moves away (north, east, east).
PIT_LAYOUT = Layout(("..G", ".O.", "..."), (1, 0))


def expectimax(layout: Layout, cell, k: int, slip: float, gamma: float) -> tuple[float, list[float]]:
    """Plain recursion over the env's own transition function: (V_k, [Q_k per move + no-op])."""
    if k == 0:
        return 0.0, [0.0] * 5
    qs = []
    for action in ACTIONS:
        q = 0.0
        for prob, nxt in transitions(layout, cell, action, slip):
            kind = layout.cell(nxt)
            if kind == GOAL:
                q += prob
            elif kind != PIT:
                q += prob * gamma * expectimax(layout, nxt, k - 1, slip, gamma)[0]
        qs.append(q)
    qs.append(gamma * expectimax(layout, cell, k - 1, slip, gamma)[0])
    return max(qs), qs


def play(task: Task, actions) -> Trajectory:
    """A Trajectory made by really playing ``actions`` in the task's env."""
    env = task.make()
    obs = env.reset(seed=task.seed)
    first, steps = obs, []
    for action in actions:
        result = env.step(action)
        steps.append(Step(observation=obs, action_text=action, action=action, result=result))
        obs = result.observation
        if result.done:
            break
    return Trajectory(task, first, tuple(steps))


def maze_task(layout: Layout, *, slip: float, max_steps: int = 20, seed: int = 0) -> Task:
    return Task(env="maze", id="hand", seed=seed,
                kwargs={"layout": layout, "slip": slip, "max_steps": max_steps, "gamma": GAMMA})


@pytest.mark.parametrize("slip", [0.0, 0.3])
def test_horizon_values_match_plain_expectimax(slip):
    values = horizon_values(PIT_LAYOUT, slip=slip, gamma=0.9, horizon=4)
    for cell, s in values.index.items():
        for k in range(5):
            v, qs = expectimax(PIT_LAYOUT, cell, k, slip, 0.9)
            assert values.v[k, s] == pytest.approx(v, abs=1e-12)
            assert values.q[k, s] == pytest.approx(qs, abs=1e-12)


def test_long_horizon_converges_to_infinite_horizon_solver():
    layout = Layout(("..G.", ".O..", "#...", "...O"), (3, 0))
    values = horizon_values(layout, slip=0.2, gamma=GAMMA, horizon=800)
    exact = solve(layout, slip=0.2, gamma=GAMMA)
    assert values.states == exact.states
    np.testing.assert_allclose(values.v[-1], exact.v, atol=1e-10)
    # with a short horizon the step limit matters: values are strictly smaller somewhere
    short = horizon_values(layout, slip=0.2, gamma=GAMMA, horizon=3)
    assert (short.v[3] < exact.v - 1e-3).any()


def test_walking_into_the_pit_next_to_the_start_is_the_decisive_mistake():
    task = maze_task(PIT_LAYOUT, slip=0.0)
    traj = play(task, ["east"])
    assert not traj.success and traj.steps[-1].result.info["cell"] == PIT
    # slip 0: V_20(start) = γ^2 (goal 3 moves away), Q(start, east) = 0 (the pit)
    assert decisive_mistake(traj) == {"decisive_step": 0, "decisive_regret": pytest.approx(GAMMA**2, abs=EXACT)}


def test_pit_outweighs_an_earlier_wasted_turn():
    task = maze_task(PIT_LAYOUT, slip=0.0)
    traj = play(task, ["hello", "east"])
    assert len(traj.steps) == 2
    # wasted turn: V_20 − γ·V_19 = γ² − γ³; the pit step: V_19(start) − 0 = γ²
    values = horizon_values(PIT_LAYOUT, slip=0.0, gamma=GAMMA, horizon=20)
    assert values.regret((1, 0), 20, "hello") == pytest.approx(GAMMA**2 - GAMMA**3, abs=EXACT)
    assert decisive_mistake(traj) == {"decisive_step": 1, "decisive_regret": pytest.approx(GAMMA**2, abs=EXACT)}


def test_running_out_of_time_blames_the_wasted_turn_that_made_success_impossible():
    # max_steps 3 and the goal exactly 3 moves away: the first wasted turn makes success impossible
    task = maze_task(PIT_LAYOUT, slip=0.0, max_steps=3)
    traj = play(task, ["north", "wait", "east"])
    assert traj.truncated and not traj.success
    # step 0 optimal (regret 0); step 1 from (0,0) with 2 left: V = γ, no-op Q = γ·V_1((0,0)) = 0
    # step 2 from (0,0) with 1 left: V_1 = 0 (goal 2 away) so any action has regret 0
    assert decisive_mistake(traj) == {"decisive_step": 1, "decisive_regret": pytest.approx(GAMMA, abs=EXACT)}


def test_all_optimal_failure_is_bad_luck_and_success_is_none():
    layout = Layout((".O.G", "....", ".O..", "...."), (3, 0))
    values = horizon_values(layout, slip=0.4, gamma=GAMMA, horizon=20)
    outcomes = []
    for seed in range(60):
        task = maze_task(layout, slip=0.4, seed=seed)
        env = task.make()
        env.reset(seed=seed)
        actions = []
        for t in range(20):  # play the finite-horizon optimal move of the current state
            s = values.index[env.position]
            action = ACTIONS[int(np.argmax(values.q[20 - t, s, :4]))]
            actions.append(action)
            if env.step(action).done:
                break
        traj = play(task, actions)
        outcomes.append(traj.success)
        assert decisive_mistake(traj) == {"decisive_step": None, "decisive_regret": None}
    assert 0 < sum(outcomes) < len(outcomes)  # both failures and successes were exercised


def test_replay_disagreeing_with_the_recorded_positions_is_an_error():
    layout = Layout((".O.G", "....", ".O..", "...."), (3, 0))
    traj = play(maze_task(layout, slip=0.5, seed=1), ["north"] * 20)
    for seed in range(2, 40):  # a task seed whose slips differ from the recorded ones
        wrong = Trajectory(maze_task(layout, slip=0.5, seed=seed), traj.initial_observation, traj.steps)
        try:
            decisive_mistake(wrong)
        except EnvError as err:
            assert "replay" in str(err)
            return
    pytest.fail("no seed produced a different replay")


def test_task_info_success_probability_and_bins():
    easy = task_info(maze_task(PIT_LAYOUT, slip=0.0))
    assert easy == {"difficulty": "easy", "v_star": pytest.approx(1.0, abs=EXACT), "v_star_discounted": pytest.approx(GAMMA**2, abs=EXACT)}
    layout = Layout((".O.G", "....", ".O..", "...."), (3, 0))
    info = task_info(maze_task(layout, slip=0.4, max_steps=6))
    v_plain, _ = expectimax(layout, (3, 0), 6, 0.4, 1.0)
    assert info["v_star"] == pytest.approx(v_plain, abs=EXACT)
    assert info["difficulty"] == ("easy" if v_plain >= 0.99 else "medium" if v_plain >= 0.95 else "hard")
    assert info["difficulty"] == "hard"

    class OtherTask:  # any env that is not the maze
        env, id = "other", "x"

        def make(self):
            return object()

    with pytest.raises(EnvError, match="not a slippery-maze"):
        task_info(OtherTask())


def test_pick_decisive_earliest_on_ties_and_tolerance():
    from ttsearch.envs.maze.attribution import pick_decisive

    assert pick_decisive([0.0, 0.5, 0.2, 0.5]) == {"decisive_step": 1, "decisive_regret": 0.5}
    assert pick_decisive([0.0, 1e-13, 0.0]) == {"decisive_step": None, "decisive_regret": None}
    assert pick_decisive([]) == {"decisive_step": None, "decisive_regret": None}
