"""AdapterEnv bookkeeping shared by the benchmark adapters: limits, hangs, exact reward sums."""

from __future__ import annotations

import threading

import pytest

from ttsearch.envs import EnvError
from ttsearch.envs.adapters.base import AdapterEnv, Outcome, exact_increment


class Counter(AdapterEnv):
    """A toy backend: 'inc' adds 1 to a counter, 'hang' blocks, 'win' ends the game."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.release = threading.Event()
        self.killed = 0
        self.hang_on_reset = False

    def _start(self, seed):
        if self.hang_on_reset:
            self.release.wait(5)
        self.n = seed
        return Outcome(f"n={self.n}", admissible=("inc", "win"))

    def _act(self, action):
        if action == "hang":
            self.release.wait(5)
        if action == "inc":
            self.n += 1
            return Outcome(f"n={self.n}", total=self.n / 10)
        if action == "win":
            return Outcome("won", total=1.0, terminated=True)
        return Outcome("what?", invalid=True)

    def _kill(self):
        self.killed += 1


def test_exact_increment_makes_float_sums_hit_the_target():
    # 0.1 + 0.2 != 0.3 in floating point: the increments must absorb the rounding.
    acc = 0.0
    for target in (0.1, 0.3, 0.6, 0.7, 1.0):
        r = exact_increment(acc, target)
        acc += r
        assert acc == target
    assert sum([0.1, 0.2]) != 0.3  # the problem exact_increment exists for


def test_totals_add_up_exactly_and_terminated_wins_over_the_step_limit():
    env = Counter(max_steps=3)
    env.reset(seed=0)
    results = [env.step("inc"), env.step("inc"), env.step("win")]
    assert sum(r.reward for r in results) == 1.0
    assert results[-1].terminated and not results[-1].truncated
    assert [r.info["invalid_action"] for r in results] == [False, False, False]


def test_step_limit_truncates_and_the_finished_episode_stays_finished():
    env = Counter(max_steps=2)
    env.reset(seed=5)
    assert env.step("nonsense").info["invalid_action"] is True
    last = env.step("inc")
    assert last.truncated and not last.terminated and "step limit" in last.info["truncation"]
    again = env.step("inc")
    assert again.truncated and again.reward == 0.0 and again.info["episode_over"]
    assert env.actions_taken == ("nonsense", "inc")


def test_a_hanging_step_ends_the_episode_as_failed_and_kills_the_backend():
    env = Counter(max_steps=10, step_timeout_s=0.2)
    env.reset(seed=0)
    result = env.step("hang")
    env.release.set()
    assert result.truncated and not result.terminated and result.reward == 0.0
    assert "timeout" in result.info["failure"] and env.killed == 1
    assert env.step("inc").info["episode_over"]
    env.release.clear()
    assert env.reset(seed=0).text == "n=0"  # a fresh start works


def test_a_hanging_reset_raises_and_step_before_reset_raises():
    env = Counter(step_timeout_s=0.2)
    with pytest.raises(EnvError, match="before reset"):
        env.step("inc")
    env.hang_on_reset = True
    with pytest.raises(EnvError, match="hung"):
        env.reset(seed=0)
    env.release.set()
