"""τ²-bench adapter: gold actions score 1.0 under tau2's own evaluator; its own loop agrees.

Building a tau2 environment loads its database (0.1-0.9 s), and each scored episode builds two
more inside tau2's evaluator, so the gold test plays a fixed sample (every 10th task: 5 airline,
12 retail); all 164 tasks were checked once by hand (see the adapter's report).
"""

from __future__ import annotations

import random
import time

import pytest

pytest.importorskip("tau2")

from ttsearch.envs import EnvError, list_tasks  # noqa: E402
from ttsearch.envs.adapters.tau2 import LocalModelUser, ScriptedUser, Tau2Env  # noqa: E402
from ttsearch.envs.adapters.tool_calls import parse_turn  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play


def test_task_lists():
    tasks = list_tasks("tau2")
    assert sum(t.id.startswith("airline/") for t in tasks) == 50
    assert sum(t.id.startswith("retail/") for t in tasks) == 114
    assert len(list_tasks("tau2", split="train")) + len(list_tasks("tau2", split="tau2_test")) == 164


def test_gold_actions_score_one_on_a_sample_of_airline_and_retail():
    sample = list_tasks("tau2")[::10]
    failures = []
    for task in sample:
        env = task.make()
        env.reset(seed=task.seed)
        last = play(env, env.gold_actions())[-1]
        if not (last.terminated and last.reward == 1.0 and last.info["termination_reason"] == "user_stop"):
            failures.append((task.id, last.reward, dict(last.info)))
    assert len(sample) == 17 and not failures, failures


def _tau2_own_reward(env: Tau2Env, actions: list[str]) -> float:
    """Run tau2's own Orchestrator with an agent replaying ``actions`` and our scripted user."""
    from tau2.agent.base import LocalAgent
    from tau2.data_model.message import AssistantMessage, ToolCall
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.orchestrator.orchestrator import Orchestrator
    from tau2.registry import registry

    class ReplayAgent(LocalAgent):
        def __init__(self, tools, domain_policy):
            super().__init__(tools, domain_policy)
            self.queue, self.count = list(actions), 0

        def get_init_state(self, message_history=None):
            return None

        def generate_next_message(self, message, state):
            turn = parse_turn(self.queue.pop(0))
            calls = [ToolCall(id=f"t{self.count + i}", name=c.name, arguments=dict(c.arguments))
                     for i, c in enumerate(turn.tool_calls)] or None
            self.count += len(calls or [])
            return AssistantMessage(role="assistant", content=turn.content or None, tool_calls=calls), state

    environment = registry.get_env_constructor(env.domain)()
    agent = ReplayAgent(environment.get_tools(), environment.get_policy())
    user = ScriptedUser(str(env.task.user_scenario), opening=env.user.opening)
    run = Orchestrator(env.domain, agent, user, environment, env.task).run()
    return evaluate_simulation(run, env.task, EvaluationType.ALL, solo_mode=False, domain=env.domain).reward


@pytest.mark.parametrize("drop", [None, "write", "communicate"])
def test_reward_agrees_with_tau2s_own_orchestrator(drop):
    env = Tau2Env("retail/19")  # 7 gold actions, one write, two amounts to communicate
    env.reset(seed=0)
    actions = list(env.gold_actions())
    assert env.task.evaluation_criteria.communicate_info
    if drop == "write":
        actions = [a for a in actions if "return_delivered_order_items" not in a]
    elif drop == "communicate":
        actions[-1] = "Thank you for contacting us. ###STOP###"
    ours = play(env, actions)[-1]
    expected = 1.0 if drop is None else 0.0
    assert ours.terminated and ours.reward == expected == _tau2_own_reward(env, actions)


def test_local_model_user_sees_tau2s_user_prompt_and_flipped_roles():
    seen = []

    def generate(messages):
        seen.append(messages)
        return "I want to cancel my trip. ###STOP###" if len(seen) > 1 else "Hi, I need help with a booking."

    env = Tau2Env("airline/1", user=LocalModelUser(generate=generate))
    obs = env.reset(seed=0)
    assert obs.text == "Hi, I need help with a booking."
    system, greeting = seen[0][0], seen[0][1]
    assert system["role"] == "system" and "<scenario>" in system["content"] and "Raj Sanchez" in system["content"]
    assert greeting == {"role": "user", "content": "Hi! How can I help you today?"}  # the agent, flipped
    last = env.step("Sure, what is your user id?")
    assert last.terminated and last.info["termination_reason"] == "user_stop"
    assert seen[1][-1] == {"role": "user", "content": "Sure, what is your user id?"}


def test_scripted_user_confirms_then_stops():
    user = ScriptedUser("scenario", opening="Hello, I need to return an order.", replies=("yes",), max_user_turns=3)
    env = Tau2Env("retail/1", user=user)
    assert env.reset(seed=0).text == "Hello, I need to return an order."
    assert env.step("Can you confirm?").observation.text == "yes"
    assert env.step("Anything else?").observation.text == "yes"
    last = env.step("Goodbye.")
    assert last.terminated and last.info["termination_reason"] == "user_stop"


def test_branching_replays_from_a_fresh_environment():
    env = Tau2Env("retail/0")
    env.reset(seed=0)
    gold = env.gold_actions()
    play(env, gold[:4])
    snap = env.snapshot()
    first = play(env, gold[4:])
    assert first[-1].reward == 1.0
    for _ in range(2):
        env.restore(snap)
        again = play(env, gold[4:])
        assert [(r.observation.text, r.reward, r.done) for r in again] == \
               [(r.observation.text, r.reward, r.done) for r in first]


def test_malformed_empty_and_failing_calls():
    env = Tau2Env("airline/0", max_errors=3)
    env.reset(seed=0)
    bad = env.step('<tool_call>{"name": "get_user_details", "arguments": {"user_id": </tool_call>')
    assert bad.info["invalid_action"] and "could not be parsed" in bad.observation.text and not bad.done
    empty = env.step("   ")
    assert empty.info["invalid_action"] and not empty.done
    error = env.step('<tool_call>{"name": "get_user_details", "arguments": {"user_id": "nobody"}}</tool_call>')
    assert error.observation.text.startswith("<tool_response>\nError:")  # the third error: too many
    assert error.terminated and error.reward == 0.0 and error.info["termination_reason"] == "too_many_errors"
    with pytest.raises(EnvError):
        env.step("hello")


def test_max_steps_truncates():
    env = Tau2Env("airline/0", max_steps=4)
    env.reset(seed=0)  # step 1: the user's opening
    call = '<tool_call>{"name": "list_all_airports", "arguments": {}}</tool_call>'
    assert not env.step(call).done  # steps 2-3
    last = env.step(call)  # steps 4-5
    assert last.truncated and not last.terminated and last.reward == 0.0
    assert last.info["termination_reason"] == "max_steps"


def test_a_hanging_tool_ends_the_episode_as_failed(monkeypatch):
    env = Tau2Env("airline/0", step_timeout_s=0.2)
    env.reset(seed=0)
    monkeypatch.setattr(env._env, "get_response", lambda call: time.sleep(3))
    result = env.step('<tool_call>{"name": "list_all_airports", "arguments": {}}</tool_call>')
    assert result.terminated and result.reward == 0.0 and "timeout" in result.info


def test_a_hanging_user_ends_the_episode_as_failed():
    env = Tau2Env("airline/1", user=LocalModelUser(generate=lambda m: time.sleep(3) if len(m) > 2 else "Hi."),
                  user_timeout_s=0.2)
    env.reset(seed=0)
    result = env.step("How can I help?")
    assert result.terminated and result.reward == 0.0 and "tau2 user did not return" in result.info["timeout"]


def test_random_and_garbage_rollout_completes():
    env = Tau2Env("retail/3", max_steps=30)
    rng = random.Random(2)
    env.reset(seed=0)
    pool = [*env.gold_actions()[:-1], "", "<tool_call>", "Could you repeat that?",
            '<tool_call>{"name": "get_order_details", "arguments": {"order_id": 5}}</tool_call>']
    for episode in range(2):
        env.reset(seed=episode)
        for _ in range(100):
            result = env.step(rng.choice(pool))
            if result.done:
                break
        assert result.done


def test_check_env_passes():
    report = check_env(lambda: Tau2Env("retail/1"), n_random_steps=8)
    assert report.passed, report.failures()
    assert report.gold_success is True
