"""Sokoban adapter: TextArena's own rules and reward; the BFS solver's gold paths solve its rooms."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("textarena")

from ttsearch.envs import EnvError, list_tasks  # noqa: E402
from ttsearch.envs.adapters.sokoban import ACTIONS, SokobanEnv, solve  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play


def room(rows: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hand-drawn room: # wall, _ floor, O target, X box, P player (TextArena's codes)."""
    codes = {"#": 0, "_": 1, "O": 2, "X": 4, "P": 5}
    state = np.array([[codes[c] for c in row] for row in rows])
    fixed = state.copy()
    fixed[(fixed == 4) | (fixed == 5)] = 1
    return fixed, state



def test_solver_on_hand_made_rooms():
    assert solve(*room(["#####", "#PXO#", "#####"]), 1, max_moves=5) == ["[right]"]
    # 3 pushes (down, right, right in some order) and 3 repositioning moves; no shorter way
    fixed, state = room(["######", "#P___#", "#_X__#", "#___O#", "######"])
    path = solve(fixed, state, 1, max_moves=20)
    assert path is not None and len(path) == 6
    assert solve(*room(["#####", "#XP_#", "#__O#", "#####"]), 1, max_moves=30) is None  # box stuck in a corner
    assert solve(*room(["######", "#P_XO#", "######"]), 1, max_moves=1) is None  # needs 2 moves


def test_gold_paths_solve_the_first_rooms_with_textarenas_reward():
    for task in list_tasks("sokoban", limit=12):
        env = task.make()
        env.reset(seed=task.seed)
        gold = env.gold_actions()
        assert gold is not None and len(gold) <= env.max_turns
        results = play(env, gold)
        assert results[-1].terminated and results[-1].reward == 1.0
        assert sum(r.reward for r in results) == 1.0 and not any(r.info["invalid_action"] for r in results)


def test_observations_and_invalid_moves_are_textarenas():
    env = SokobanEnv(0)
    obs = env.reset(seed=0)
    assert "You are solving the Sokoban puzzle" in obs.text and "Current Board:" in obs.text
    assert obs.admissible_actions == ACTIONS
    bad = env.step("go north please")
    assert bad.info["invalid_action"] and "does not follow the correct format" in bad.observation.text
    assert not bad.done
    second = env.step("nope")  # TextArena allows one invalid move; the second in a row ends the game
    assert second.terminated and second.info["invalid_action"] and second.reward < 1.0
    with pytest.raises(EnvError):
        env.step("[up]")


def test_turn_limit_truncates_with_the_partial_reward():
    env = SokobanEnv(0, max_turns=2)
    env.reset(seed=0)
    gold = SokobanEnv(0).gold_actions()
    opposite = {"[up]": "[down]", "[down]": "[up]", "[left]": "[right]", "[right]": "[left]"}
    moves = [m for m in ACTIONS if m != gold[0]]
    results = []
    for move in moves:  # find a legal move that pushes nothing, then walk back and forth
        probe = SokobanEnv(0, max_turns=2)
        probe.reset(seed=0)
        first = probe.step(move)
        if not first.info["invalid_action"] and "pushed" not in first.observation.text:
            results = play(env, [move, opposite[move], move, opposite[move]])
            break
    assert results, "no free move from the start"
    last = results[-1]
    assert last.truncated and not last.terminated and 0.0 <= last.reward < 1.0
    assert "turn limit" in last.info["reason"]


def test_branching_round_trip():
    env = SokobanEnv(3)
    env.reset(seed=0)
    gold = env.gold_actions()
    play(env, gold[:3])
    snap = env.snapshot()
    first = play(env, gold[3:])
    for _ in range(2):
        env.restore(snap)
        again = play(env, gold[3:])
        assert [(r.observation.text, r.reward, r.done) for r in again] == \
               [(r.observation.text, r.reward, r.done) for r in first]
    assert first[-1].reward == 1.0


def test_random_rollouts_complete():
    env = SokobanEnv(5)
    rng = random.Random(0)
    for episode in range(3):
        env.reset(seed=episode)
        for _ in range(200):
            result = env.step(rng.choice([*ACTIONS, "", "[w]", "left"]))
            if result.done:
                break
        assert result.done and 0.0 <= result.reward <= 1.0


def test_check_env_passes():
    report = check_env(lambda: SokobanEnv(1))
    assert report.passed, report.failures()
    assert report.gold_success is True
