"""ScienceWorld adapter: the simulator's own gold path and score, valid actions only on demand."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("scienceworld")
if shutil.which("java") is None:
    pytest.skip("ScienceWorld needs Java >= 11 (apt-get install openjdk-17-jre-headless)", allow_module_level=True)

from ttsearch.envs import ConfigError, EnvError, make  # noqa: E402
from ttsearch.envs.adapters.scienceworld import ScienceWorldEnv  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play

TASK, VARIATION = "lifespan-longest-lived", 1  # an 8-step gold path



@pytest.fixture(scope="module")
def env():
    e = ScienceWorldEnv(task=TASK)
    yield e
    e.close()


def test_gold_path_scores_100_and_replay_reproduces_it(env):
    first_obs = env.reset(seed=VARIATION)
    assert first_obs.text.startswith("Your task is to find the animal with the longest life span")
    assert first_obs.admissible_actions is None  # not computed on the hot path
    gold = env.gold_actions()
    assert env.actions_taken == ()  # generating the gold path left the episode where it was
    results = play(env, gold)
    assert results[-1].terminated and results[-1].info["score"] == 100 and results[-1].info["success"]
    assert sum(r.reward for r in results) == 1.0
    assert [r.info["score"] for r in results] == [round(100 * sum(x.reward for x in results[: i + 1]))
                                                  for i in range(len(results))]
    # replay branching: a fresh reset + the same actions gives the same texts and rewards
    again_obs = env.reset(seed=VARIATION)
    again = play(env, gold)
    assert again_obs.text == first_obs.text
    assert [(r.observation.text, r.reward) for r in again] == [(r.observation.text, r.reward) for r in results]


def test_garbage_and_valid_actions_on_demand(env):
    env.reset(seed=VARIATION)
    result = env.step("xyzzy plugh")
    assert result.observation.text.startswith("No known action matches that input.")
    assert result.info["invalid_action"] and not result.done and result.reward == 0.0
    valid = env.admissible_actions()
    assert len(valid) > 100 and all(isinstance(a, str) for a in valid)
    assert any(a.startswith("open door") for a in valid) and any(a.startswith("focus on") for a in valid)
    assert env.admissible_actions() is valid  # cached for the state
    env.step("look around")
    assert env.admissible_actions() is not valid


def test_bad_task_and_variation_are_reported(env):
    bad = ScienceWorldEnv(task="boil-water-quickly")
    with pytest.raises(ConfigError, match="unknown ScienceWorld task"):
        bad.reset(seed=0)
    assert bad._sw is None  # its JVM was stopped
    with pytest.raises(EnvError, match="variations 0.."):
        env.reset(seed=10_000)
    with pytest.raises(EnvError, match="before reset"):
        env.step("look around")  # a failed reset leaves no episode behind


@pytest.mark.slow  # ~10 JVM starts: ~30-60 s on 2 shared cores
def test_conformance():
    report = check_env(lambda: make("scienceworld", task=TASK), seed=VARIATION, n_random_steps=5)
    assert report.passed, report.failures()
    assert report.gold_success is True
