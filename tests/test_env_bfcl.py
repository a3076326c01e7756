"""BFCL v4 multi-turn adapter: ground truth passes BFCL's own multi_turn_checker on every entry."""

from __future__ import annotations

import random
import time

import pytest

pytest.importorskip("bfcl_eval")

from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils  # noqa: E402

from ttsearch.envs import EnvError, list_tasks  # noqa: E402
from ttsearch.envs.adapters.bfcl import CATEGORIES, BFCLEnv  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play


def test_ground_truth_passes_the_checker_on_all_800_entries():
    tasks = list_tasks("bfcl")
    assert len(tasks) == 800 and {t.id.rsplit("_", 1)[0] for t in tasks} == {f"multi_turn_{c}" for c in CATEGORIES}
    failures = []
    for task in tasks:
        env = task.make()
        env.reset(seed=task.seed)
        last = play(env, env.gold_actions())[-1]
        if not (last.terminated and last.reward == 1.0):
            failures.append((task.id, last.info))
    assert not failures, failures[:5]
    assert not [k for k in vars(multi_turn_utils) if k.startswith("ttsearch_")]  # globals cleaned up


@pytest.mark.parametrize("task_id", ["multi_turn_base_0", "multi_turn_long_context_7"])
def test_tool_outputs_match_bfcl_executing_the_ground_truth_itself(task_id):
    env = BFCLEnv(task_id)
    env.reset(seed=0)
    ours = [r.observation.text for r in play(env, env.gold_actions()) if "<tool_response>" in r.observation.text]
    theirs = []
    for turn in env.ground_truth:
        if turn:
            results, _ = multi_turn_utils.execute_multi_turn_func_call(
                turn, env.entry["initial_config"], env.entry["involved_classes"], "ttsearch_test_reference",
                task_id, long_context="long_context" in task_id)
            theirs.append("\n".join(f"<tool_response>\n{r}\n</tool_response>" for r in results))
    for key in [k for k in vars(multi_turn_utils) if k.startswith("ttsearch_test_reference")]:
        del vars(multi_turn_utils)[key]
    assert ours == theirs and len(ours) >= 3


def test_dropping_a_ground_truth_call_fails_the_checker():
    env = BFCLEnv("multi_turn_base_0")
    env.reset(seed=0)
    gold = env.gold_actions()
    first = gold[0]
    assert first.count("<tool_call>") >= 2
    cut = first[: first.rindex("<tool_call>")]  # the turn's last call is missing
    last = play(env, [cut, *gold[1:]])[-1]
    assert last.terminated and last.reward == 0.0 and last.info["checker"]["valid"] is False


def test_miss_func_adds_the_held_out_function_with_its_turn():
    env = BFCLEnv("multi_turn_miss_func_0")
    obs = env.reset(seed=0)
    held_out = env.entry["missed_function"]["3"][0]["name"]
    assert f'"name": "{held_out}"' not in env.system_prompt and obs.text.startswith("Move")
    texts = [r.observation.text for r in play(env, env.gold_actions())]
    added = [t for t in texts if "I have updated some more functions" in t]
    assert len(added) == 1 and f'"name": "{held_out}"' in added[0]


def test_unreadable_call_ends_the_user_turn_as_in_bfcl():
    env = BFCLEnv("multi_turn_base_0")
    env.reset(seed=0)
    result = env.step('<tool_call>{"name": "cd", "arguments": {"folder": </tool_call>')
    assert result.info["invalid_action"] and result.info["user_turn"] == 1 and not result.done
    assert result.observation.text == env.entry["question"][1][0]["content"]


def test_only_api_methods_with_identifier_arguments_are_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = BFCLEnv("multi_turn_base_0")
    env.reset(seed=0)
    result = env.step('<tool_call>{"name": "open", "arguments": {"file": "pwned.txt", "mode": "w"}}</tool_call>\n'
                      '<tool_call>{"name": "cd", "arguments": {"folder=\'x\');open(\'p2.txt\',\'w\'": 1}}</tool_call>\n'
                      '<tool_call>{"name": "pwd", "arguments": {}}</tool_call>')
    text = result.observation.text
    assert "name 'open' is not defined" in text and "invalid argument name" in text
    assert "current_working_directory" in text  # the legitimate call still ran
    assert not list(tmp_path.iterdir())
    assert env._results[0] == [["pwd()"]]  # only the real call reaches the checker


def test_more_than_twenty_steps_in_a_turn_force_quits():
    env = BFCLEnv("multi_turn_base_0")
    env.reset(seed=0)
    call = '<tool_call>{"name": "pwd", "arguments": {}}</tool_call>'
    results = [env.step(call) for _ in range(21)]
    assert not any(r.done for r in results[:20])
    assert results[-1].truncated and results[-1].reward == 0.0 and "force-quit" in results[-1].info["reason"]
    with pytest.raises(EnvError):
        env.step(call)


def test_branching_round_trip():
    env = BFCLEnv("multi_turn_base_2")
    env.reset(seed=0)
    gold = env.gold_actions()
    play(env, gold[:2])
    snap = env.snapshot()
    first = play(env, gold[2:])
    assert first[-1].reward == 1.0
    for _ in range(2):
        env.restore(snap)
        again = play(env, gold[2:])
        assert [(r.observation.text, r.reward, r.done) for r in again] == \
               [(r.observation.text, r.reward, r.done) for r in first]


def test_a_hanging_call_ends_the_episode_as_failed(monkeypatch):
    env = BFCLEnv("multi_turn_base_0", step_timeout_s=0.2)
    env.reset(seed=0)
    monkeypatch.setattr(multi_turn_utils, "execute_multi_turn_func_call", lambda *a, **k: time.sleep(3))
    result = env.step('<tool_call>{"name": "pwd", "arguments": {}}</tool_call>')
    assert result.terminated and result.reward == 0.0 and "timeout" in result.info


def test_random_and_garbage_rollout_completes():
    env = BFCLEnv("multi_turn_miss_param_4")
    rng = random.Random(1)
    env.reset(seed=0)
    pool = [*env.gold_actions(), "", "<tool_call>", '{"name": 1, "arguments": {}}', "🙃",
            '<tool_call>{"name": "cd", "arguments": {"folder": 12}}</tool_call>']
    for episode in range(4):
        env.reset(seed=episode)
        for _ in range(200):
            result = env.step(rng.choice(pool))
            if result.done:
                break
        assert result.done and result.reward in (0.0, 1.0)


def test_check_env_passes():
    report = check_env(lambda: BFCLEnv("multi_turn_miss_func_3"))
    assert report.passed, report.failures()
    assert report.gold_success is True
