"""TextWorld adapter: games generated offline by TextWorld's own challenge makers, judged by TextWorld.

Games are compiled once into the ttsearch cache ($TTSEARCH_CACHE, ~5 s each) and reused.
"""

from __future__ import annotations

import pytest

pytest.importorskip("textworld")
pytest.importorskip("jericho")

from ttsearch.envs import ConfigError, list_tasks, make  # noqa: E402
from ttsearch.envs.adapters.textworld import TextWorldEnv, clean_feedback  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play

from tolerances import EXACT

# jericho (TextWorld's z-machine) warns about games it has no walkthrough/action data for.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:jericho.*")

COIN = {"challenge": "tw-coin_collector", "settings": {"level": 5}}
SIMPLE = {"challenge": "tw-simple", "settings": {"rewards": "dense", "goal": "detailed"}}



@pytest.fixture(scope="module")
def simple_env():
    env = TextWorldEnv(**SIMPLE)
    yield env
    env.close()


def test_walkthrough_wins_with_textworlds_score_as_reward(simple_env):
    obs = simple_env.reset(seed=1)
    assert "$$" not in obs.text and obs.admissible_actions and "look" in obs.admissible_actions
    gold = simple_env.gold_actions()
    results = play(simple_env, gold)
    last = results[-1]
    assert last.terminated and last.info["won"] and not last.info["lost"]
    # dense rewards: every point TextWorld gives shows up, and the points add up to exactly 1
    assert sum(r.reward for r in results) == 1.0
    scores = [r.info["score"] for r in results]
    assert scores[-1] == last.info["max_score"] > 1
    assert [r.reward for r in results] == pytest.approx(
        [(b - a) / scores[-1] for a, b in zip([0, *scores[:-1]], scores, strict=True)], abs=EXACT)


def test_copy_snapshot_round_trip_reproduces_the_game(simple_env):
    simple_env.reset(seed=1)
    gold = simple_env.gold_actions()
    play(simple_env, gold[:2])
    snap = simple_env.snapshot()
    first = [(r.observation.text, r.reward, r.terminated) for r in play(simple_env, gold[2:])]
    for _ in range(2):  # the same snapshot restores twice
        simple_env.restore(snap)
        assert simple_env.actions_taken == tuple(gold[:2])
        again = [(r.observation.text, r.reward, r.terminated) for r in play(simple_env, gold[2:])]
        assert again == first
    # a branch does not leak into the other: restore, take a different action, restore, replay
    simple_env.restore(snap)
    simple_env.step("inventory")
    simple_env.restore(snap)
    assert [(r.observation.text, r.reward, r.terminated) for r in play(simple_env, gold[2:])] == first


def test_garbage_gets_the_games_own_answer(simple_env):
    simple_env.reset(seed=1)
    result = simple_env.step("xyzzy plugh")
    assert "not a verb I recognise" in result.observation.text
    assert result.info["invalid_action"] and result.reward == 0.0 and not result.done
    assert simple_env.step("").info["invalid_action"]


def test_coin_collector_gold_and_conformance():
    report = check_env(lambda: make("textworld", **COIN), seed=2, n_random_steps=8)
    assert report.passed, report.failures()
    assert report.gold_success is True


def test_settings_are_validated_and_task_ids_are_stable():
    with pytest.raises(ConfigError, match="unknown TextWorld challenge"):
        TextWorldEnv(challenge="tw-chess")
    with pytest.raises(ConfigError, match="tw-make tw-simple"):
        TextWorldEnv(challenge="tw-simple", settings={"rewards": "sometimes", "goal": "brief"})
    tasks = list_tasks("textworld", split="test", preset="coin", n=3)
    assert [t.id for t in tasks] == [f"tw-coin_collector/level5/seed{s}" for s in (200000, 200001, 200002)]
    assert clean_feedback("\n\n  ________  ____ \n | $$   \\$$ |\nHello.\n\n\n\nThere.\n>  -= Room =-0/1") == "Hello.\n\nThere."
