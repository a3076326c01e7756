"""reasoning-gym adapter: multi-step episodes judged by each dataset's own score_answer."""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")

import reasoning_gym  # noqa: E402

from ttsearch.envs import ConfigError, make  # noqa: E402
from ttsearch.envs.adapters.reasoning_gym import ReasoningGymEnv, evaluate  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play


@pytest.mark.parametrize("dataset", ["countdown", "maze", "gsm_symbolic"])
def test_gold_paths_get_full_score_from_the_dataset(dataset):
    env = ReasoningGymEnv(dataset=dataset)
    for seed in range(8):
        obs = env.reset(seed=seed)
        entry = reasoning_gym.create_dataset(dataset, seed=seed, size=1)[0]
        assert obs.text.startswith(entry["question"])  # the item is the dataset's own
        results = play(env, env.gold_actions())
        assert not any(r.info["invalid_action"] for r in results), [r.observation.text for r in results]
        assert results[-1].terminated and results[-1].reward == 1.0 and results[-1].info["score"] == 1.0
        assert sum(r.reward for r in results[:-1]) == 0.0
        if dataset != "gsm_symbolic":
            assert len(results) > 1  # intermediate steps really happen


def test_countdown_steps_combine_numbers_and_wrong_answers_get_the_datasets_score():
    env = ReasoningGymEnv(dataset="countdown")
    env.reset(seed=0)
    entry = env.entry
    a, b = entry["metadata"]["numbers"][:2]
    r = env.step(f"{a} * {b}")
    assert f"= {a * b}." in r.observation.text and not r.info["invalid_action"]
    assert env.step("100000 + 1").info["invalid_action"]  # not available
    wrong = f"{a} + {b}"
    final = env.step(f"answer: {wrong}")
    assert final.terminated and final.reward == env._ds.score_answer(wrong, entry) < 1.0


def test_maze_walls_and_calculator():
    env = ReasoningGymEnv(dataset="maze")
    env.reset(seed=0)
    meta = env.entry["metadata"]
    r0, c0 = env._state["pos"]
    for d, (dr, dc) in {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}.items():
        blocked = meta["grid"][r0 + dr][c0 + dc] == meta["wall"]
        snap = env.snapshot()
        assert env.step(f"move {d}").info["invalid_action"] is blocked
        env.restore(snap)
        assert env._state["pos"] == (r0, c0)
    calc = ReasoningGymEnv(dataset="gsm_symbolic")
    calc.reset(seed=0)
    assert calc.step("calc: (12 + 30) * 3 / 4").observation.text.endswith("= 63/2 ≈ 31.5")
    assert calc.step("calc: __import__('os')").info["invalid_action"]
    assert evaluate("2 ** 10 - 24 // 5") == 1020


def test_snapshot_round_trip_and_garbage():
    env = ReasoningGymEnv(dataset="countdown")
    env.reset(seed=3)
    gold = env.gold_actions()
    env.step(gold[0])
    snap = env.snapshot()
    first = [(r.observation.text, r.reward) for r in play(env, gold[1:])]
    env.restore(snap)
    assert [(r.observation.text, r.reward) for r in play(env, gold[1:])] == first
    env.reset(seed=3)
    r = env.step("I think we should add things")
    assert r.info["invalid_action"] and not r.done and "Numbers available" in r.observation.text
    with pytest.raises(ConfigError):
        ReasoningGymEnv(dataset="no_such_dataset")


@pytest.mark.parametrize("dataset", ["countdown", "maze", "gsm_symbolic"])
def test_conformance(dataset):
    report = check_env(lambda: make("reasoning_gym", dataset=dataset), seed=5, n_random_steps=6)
    assert report.passed, report.failures()
    assert report.gold_success is True
