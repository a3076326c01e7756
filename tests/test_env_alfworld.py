"""ALFWorld adapter on two small problems we wrote in ALFWorld's format (tests/data/alfworld)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("fast_downward")

from ttsearch.envs import EnvError, list_tasks, make  # noqa: E402
from ttsearch.envs.adapters.alfworld import ALFWorldEnv, list_games  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play

DATA = Path(__file__).parent / "data" / "alfworld"



@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = ALFWorldEnv(data_dir=str(DATA), cache_dir=str(tmp_path_factory.mktemp("alfworld")))
    yield e
    e.close()


def test_planner_gold_wins_both_games(env):
    tasks = {"Apple-None-Fridge": "put a apple in fridge", "Mug-None-CounterTop": "put a mug in countertop"}
    for seed, game in enumerate(env.games):
        obs = env.reset(seed=seed)
        assert obs.text.startswith("You are in the middle of a room.")
        assert next(v for k, v in tasks.items() if k in str(game)) in obs.text
        results = play(env, env.gold_actions())
        assert results[-1].terminated and results[-1].reward == 1.0 and results[-1].info["won"]
        assert sum(r.reward for r in results) == 1.0 and not any(r.info["invalid_action"] for r in results)


def test_replay_reproduces_and_garbage_changes_nothing(env):
    env.reset(seed=0)
    gold = env.gold_actions()
    first = [(r.observation.text, r.reward) for r in play(env, gold)]
    env.reset(seed=0)
    garbage = env.step("fly to the moon")
    assert garbage.observation.text == "Nothing happens." and garbage.info["invalid_action"] and not garbage.done
    env.reset(seed=0)
    assert [(r.observation.text, r.reward) for r in play(env, gold)] == first


def test_game_files_are_kept_as_alfworld_keeps_them(tmp_path):
    src = next(DATA.rglob("traj_data.json")).parent
    for name, solvable in (("ok", True), ("unsolvable", False)):
        folder = tmp_path / "split" / name / "trial_T1"
        folder.mkdir(parents=True)
        (folder / "traj_data.json").write_text((src / "traj_data.json").read_text())
        (folder / "game.tw-pddl").write_text(json.dumps({"pddl_domain": "", "grammar": "", "pddl_problem": "",
                                                        "solvable": solvable}))
    moved = tmp_path / "split" / "movable_recep" / "trial_T2"
    moved.mkdir(parents=True)
    (moved / "traj_data.json").write_text((src / "traj_data.json").read_text())
    (moved / "initial_state.pddl").write_text("")
    assert [p.parent.name for p in list_games(tmp_path / "split")] == ["ok"]
    assert list_games(tmp_path / "split", ("look_at_obj_in_light",)) == []
    with pytest.raises(EnvError, match="does not exist"):
        list_games(tmp_path / "nowhere")


def test_conformance(tmp_path):
    report = check_env(lambda: make("alfworld", data_dir=str(DATA), cache_dir=str(tmp_path)), seed=1, n_random_steps=6)
    assert report.passed, report.failures()
    assert report.gold_success is True
    assert len(list_tasks("alfworld", data_dir=str(DATA))) == 2
