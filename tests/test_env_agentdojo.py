"""AgentDojo adapter: gold paths reach full utility on every user task, scored by AgentDojo itself."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

pytest.importorskip("agentdojo")

from agentdojo.agent_pipeline.ground_truth_pipeline import GroundTruthPipeline  # noqa: E402

from ttsearch.envs import EnvError, list_tasks, make  # noqa: E402
from ttsearch.envs.adapters.agentdojo import AgentDojoEnv  # noqa: E402
from ttsearch.envs.adapters.tool_calls import ToolCall, format_tool_calls  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play


def test_gold_path_reaches_full_utility_on_every_user_task_of_every_suite():
    tasks = list_tasks("agentdojo")
    assert Counter(t.id.split("/")[0] for t in tasks) == {"workspace": 40, "travel": 20, "banking": 16, "slack": 21}
    failures = []
    for task in tasks:
        env = task.make()
        env.reset(seed=task.seed)
        results = play(env, env.gold_actions())
        last = results[-1]
        if not (last.terminated and last.reward == 1.0 and last.info["utility"]):
            failures.append((task.id, last.reward, dict(last.info)))
    assert not failures, failures


@pytest.mark.parametrize("task_id", ["banking/user_task_3", "slack/user_task_2", "travel/user_task_19"])
def test_reward_agrees_with_agentdojo_running_its_own_ground_truth_pipeline(task_id):
    env = AgentDojoEnv(task_id)
    env.reset(seed=0)
    ours = play(env, env.gold_actions())[-1].reward
    utility, _ = env.suite.run_task_with_pipeline(GroundTruthPipeline(env.user_task), env.user_task,
                                                  injection_task=None, injections={})
    assert utility is True and ours == 1.0


def test_a_missing_state_change_fails_the_utility_check():
    env = AgentDojoEnv("banking/user_task_3")
    env.reset(seed=0)
    gold = list(env.gold_actions())
    assert '"send_money"' in gold[1]
    result = play(env, [gold[0], gold[2]])[-1]  # read the transactions, never send the refund
    assert result.terminated and result.reward == 0.0 and result.info["utility"] is False


def test_security_run_carries_the_injection_and_scores_the_attack():
    env = make("agentdojo", task="banking/user_task_3", injection_task="injection_task_1")
    env.reset(seed=0)
    first = env.step(env.gold_actions()[0])
    assert "<INFORMATION>" in first.observation.text  # the attack text sits in the data the agent reads
    env.reset(seed=0)
    attack = [format_tool_calls([ToolCall(c.function, dict(c.args))])
              for c in env.injection_task.ground_truth(env._pre_env.model_copy(deep=True))]
    last = play(env, [*attack, "Done."])[-1]
    assert last.info["security"] is True and last.reward == 0.0
    env.reset(seed=0)
    last = play(env, env.gold_actions())[-1]
    assert last.info["security"] is False and last.reward == 1.0
    assert len(list_tasks("agentdojo", injections=True)) == 40 * 14 + 20 * 7 + 16 * 9 + 21 * 5


def test_branching_round_trip():
    env = AgentDojoEnv("slack/user_task_2")
    env.reset(seed=0)
    gold = env.gold_actions()
    env.step(gold[0])
    snap = env.snapshot()
    first = play(env, gold[1:])
    assert first[-1].reward == 1.0
    for _ in range(2):
        env.restore(snap)
        again = play(env, gold[1:])
        assert [(r.observation.text, r.reward, r.done) for r in again] == \
               [(r.observation.text, r.reward, r.done) for r in first]
    env.restore(snap)  # branch differently: answer without inviting Dora
    assert env.step("I could not do it.").reward == 0.0


def test_malformed_and_unknown_calls_get_feedback_not_exceptions():
    env = AgentDojoEnv("workspace/user_task_0")
    env.reset(seed=0)
    bad = env.step('<tool_call>{"name": "search_calendar_events", "arguments": {"query": </tool_call>')
    assert bad.info["invalid_action"] and "could not be parsed" in bad.observation.text and not bad.done
    unknown = env.step('<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>')
    assert "Invalid tool launch_rockets provided." in unknown.observation.text and unknown.info["tool_errors"] == 1
    wrong_args = env.step('<tool_call>{"name": "search_calendar_events", "arguments": {"nope": 1}}</tool_call>')
    assert "ValidationError" in wrong_args.observation.text and not wrong_args.done
    assert env.step("That is all I found.").terminated  # plain text: the final answer
    with pytest.raises(EnvError):
        env.step("one more")


def test_turn_limit_truncates_and_still_scores_the_state_reached():
    gold = AgentDojoEnv("banking/user_task_3").gold_actions()  # one call per turn
    env = AgentDojoEnv("banking/user_task_3", max_turns=2)
    env.reset(seed=0)
    assert len(env.gold_actions()) == 2  # with 2 turns the gold path packs both calls into one
    assert not env.step(gold[0]).done
    last = env.step(gold[1])  # the refund is sent on the last allowed turn
    assert last.truncated and not last.terminated and last.reward == 1.0  # AgentDojo scores the state


def test_a_hanging_tool_ends_the_episode_as_failed(monkeypatch):
    env = AgentDojoEnv("banking/user_task_3", step_timeout_s=0.2)
    env.reset(seed=0)
    monkeypatch.setattr(env._runtime, "run_function", lambda *a, **k: time.sleep(3))
    start = time.perf_counter()
    result = env.step(env.gold_actions()[0])
    assert time.perf_counter() - start < 2.5
    assert result.terminated and result.reward == 0.0 and "did not return within 0.2 s" in result.info["timeout"]


def test_random_and_garbage_rollout_completes():
    env = AgentDojoEnv("travel/user_task_1")
    rng = random.Random(0)
    pool = [*env.reset(seed=0).text.split()[:3], "", "<tool_call>", '{"name": 3}', *env.gold_actions()[:-1],
            '<tool_call>{"name": "get_all_hotels_in_city", "arguments": {"city": 42}}</tool_call>']
    for _ in range(5):
        env.reset(seed=0)
        for _ in range(env.max_turns):
            result = env.step(rng.choice(pool))
            assert isinstance(result.reward, float)
            if result.done:
                break
        assert result.done


def test_check_env_passes():
    report = check_env(lambda: AgentDojoEnv("workspace/user_task_0"))
    assert report.passed, report.failures()
    assert report.gold_success is True
