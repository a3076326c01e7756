"""The env guard (``envs/guard.py``) shows the wrapped env's own description to search and the runner."""

from __future__ import annotations

from ttsearch.envs.base import Env, Observation, StepResult
from ttsearch.envs.guard import DESCRIBING_ATTRIBUTES, GuardedEnv


class AnsweringEnv(Env):
    """Every describing attribute set away from the base class's default."""

    metadata = {"name": "answering"}
    deterministic = True
    has_final_answer = True
    action_parser = "ttsearch.agents.parsing:ToolCallParser"

    def __init__(self):
        self.system_prompt = "Answer with `answer: N`."
        self.max_steps = 3

    def reset(self, *, seed=None):
        return Observation("2 + 3?", ())

    def step(self, action):
        return StepResult(Observation("done", ()), reward=float(action == "answer: 5"), terminated=True,
                          truncated=False)


def test_every_describing_attribute_is_the_wrapped_envs_own():
    env = AnsweringEnv()
    guarded = GuardedEnv(env, where="answering/0")
    for name in DESCRIBING_ATTRIBUTES:
        assert getattr(guarded, name) == getattr(env, name) != getattr(Env, name, None), name
    assert guarded.step("answer: 5").reward == 1.0


def test_a_voting_best_of_n_accepts_a_guarded_env_with_final_answers():
    """The bug this guards against: ``selection="majority"`` refused every env under the run's guard."""
    from ttsearch.search.trajectory_bon import TrajectoryBestOfN

    controller = TrajectoryBestOfN(n=2, selection="majority")
    controller._check_answers(GuardedEnv(AnsweringEnv(), where="answering/0"))  # raises ConfigError if refused
