"""MiniGrid/BabyAI adapter: the text view against the grid itself, bot/BFS gold paths, deepcopy branching."""

from __future__ import annotations

import pytest

pytest.importorskip("minigrid")

from ttsearch.envs import ConfigError, make  # noqa: E402
from ttsearch.envs.adapters.minigrid import ACTIONS, MiniGridEnv  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play

from tolerances import EXACT  # noqa: E402


def test_view_text_matches_the_grid():
    env = MiniGridEnv(env_id="MiniGrid-Empty-5x5-v0")
    obs = env.reset(seed=0)
    grid = env._env
    # Empty-5x5: agent at (1,1) facing east, goal at (3,3), walls on the border (x or y in {0,4}).
    assert tuple(grid.agent_pos) == (1, 1) and grid.agent_dir == 0 and grid.grid.get(3, 3).type == "goal"
    # east is "forward", south is "right": the goal is 2 forward and 2 right; the nearest walls are
    # (4,1) 3 forward, (1,0) 1 left (north), (1,4) 3 right (south).
    assert "- the green goal square 2 steps forward, 2 steps right" in obs.text
    assert "- walls: 3 steps forward, 1 step left, 3 steps right" in obs.text
    assert obs.text.startswith("Mission: get to the green goal square")
    assert "facing east" in obs.text and "carrying nothing" in obs.text
    r = env.step("turn right")  # now facing south: the goal is 2 forward, 2 left
    assert "You turn right." in r.observation.text and "goal square 2 steps forward, 2 steps left" in r.observation.text
    assert obs.admissible_actions == ACTIONS
    env.step("turn left")
    env.step("go forward")
    env.step("go forward")  # (3,1): the east wall is next
    bump = env.step("go forward")
    assert bump.observation.text.startswith("You can't move: a grey wall is in the way.")
    assert "In front of you: a grey wall." in bump.observation.text and tuple(grid.agent_pos) == (3, 1)


def test_gold_paths_succeed_with_minigrids_reward():
    for env_id, seeds in (("BabyAI-GoToRedBallGrey-v0", range(3)), ("BabyAI-UnlockPickup-v0", range(2)),
                          ("MiniGrid-DoorKey-5x5-v0", range(2))):
        env = MiniGridEnv(env_id=env_id)
        for seed in seeds:
            env.reset(seed=seed)
            gold = env.gold_actions()
            results = play(env, gold)
            last = results[-1]
            assert last.terminated and last.reward == 1.0 and last.info["success"], (env_id, seed)
            steps = len(results)
            assert last.info["native_reward"] == pytest.approx(1 - 0.9 * steps / env._env.max_steps, abs=EXACT)
            assert sum(r.reward for r in results) == 1.0


def test_bfs_gold_is_shortest_on_an_empty_room():
    env = MiniGridEnv(env_id="MiniGrid-Empty-5x5-v0")
    env.reset(seed=0)
    # from (1,1) facing east to (3,3): 2 forward, turn right, 2 forward
    assert env.gold_actions() == ["go forward", "go forward", "turn right", "go forward", "go forward"]


def test_snapshot_keeps_the_random_generator_of_moving_obstacles():
    env = MiniGridEnv(env_id="MiniGrid-Dynamic-Obstacles-6x6-v0")
    env.reset(seed=3)
    env.step("turn left")
    snap = env.snapshot()
    actions = ["turn right", "go forward", "turn right", "go forward", "turn left", "go forward"]
    first = [(r.observation.text, r.reward, r.terminated) for r in play(env, actions)]
    env.restore(snap)
    assert [(r.observation.text, r.reward, r.terminated) for r in play(env, actions)] == first
    env.restore(snap)
    assert [(r.observation.text, r.reward, r.terminated) for r in play(env, actions)] == first


def test_garbage_does_not_spend_a_minigrid_step():
    env = MiniGridEnv(env_id="BabyAI-GoToRedBallGrey-v0")
    obs = env.reset(seed=1)
    before = env._env.step_count
    r = env.step("fly to the moon")
    assert r.info["invalid_action"] and "Unknown action" in r.observation.text and not r.done
    assert env._env.step_count == before and obs.text in r.observation.text
    assert env.step("left").info["invalid_action"] is False  # an alias of "turn left"
    with pytest.raises(ConfigError, match="unknown MiniGrid env id"):
        MiniGridEnv(env_id="MiniGrid-NoSuchRoom-v0")


def test_conformance():
    report = check_env(lambda: make("minigrid", env_id="BabyAI-GoToLocal-v0"), seed=4)
    assert report.passed, report.failures()
    assert report.gold_success is True
