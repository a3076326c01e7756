"""TextWorldExpress adapter: TWX's own gold paths, scores and parser, over its bundled JVM."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("textworld_express")
if shutil.which("java") is None:
    pytest.skip("TextWorldExpress needs Java >= 11 (apt-get install openjdk-17-jre-headless)", allow_module_level=True)

from ttsearch.envs import list_tasks, make  # noqa: E402
from ttsearch.envs.adapters.textworld_express import TextWorldExpressEnv  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play

from tolerances import EXACT  # noqa: E402


@pytest.fixture(scope="module")
def twc():
    env = TextWorldExpressEnv(game="twc", fold="test")
    yield env
    env.close()


def test_gold_paths_solve_with_twx_scores(twc):
    for seed in list_tasks("textworld_express", game="twc", split="test", n=2):
        twc.reset(seed=seed.seed)
        results = play(twc, twc.gold_actions())
        assert results[-1].terminated and results[-1].info["success"] and not results[-1].info["failure"]
        # TWX's normalised score is the running total of the rewards, and it ends at exactly 1
        running = 0.0
        for r in results:
            running += r.reward
            assert running == pytest.approx(r.info["score"], abs=EXACT)
        assert running == 1.0
        assert not any(r.info["invalid_action"] for r in results)


def test_replay_in_the_same_jvm_reproduces_the_episode(twc):
    seed = list_tasks("textworld_express", game="twc", split="test", n=1)[0].seed
    first_obs = twc.reset(seed=seed)
    gold = twc.gold_actions()
    first = [(r.observation.text, r.reward, r.done) for r in play(twc, gold)]
    again_obs = twc.reset(seed=seed)
    assert again_obs.text == first_obs.text and again_obs.admissible_actions == first_obs.admissible_actions
    assert [(r.observation.text, r.reward, r.done) for r in play(twc, gold)] == first
    assert first_obs.text.startswith(twc.task_description)


def test_garbage_gets_twx_feedback(twc):
    twc.reset(seed=3)
    result = twc.step("xyzzy plugh")
    assert result.observation.text.startswith("Unknown action") and result.info["invalid_action"]
    assert not result.done and result.reward == 0.0


def test_coin_conformance():
    report = check_env(lambda: make("textworld_express", game="coin", fold="test"), seed=20000, n_random_steps=8)
    assert report.passed, report.failures()
    assert report.gold_success is True
