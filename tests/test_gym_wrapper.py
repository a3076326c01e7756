"""GymTextEnv over tiny custom gymnasium envs: the env's own outputs are the truth."""

from __future__ import annotations

import threading

import gymnasium as gym
import pytest

from ttsearch.envs import EnvError, GymTextEnv, check_env


class CoinCorridor(gym.Env):
    """Text observations; action 1 = right, 0 = left; each step flips a coin with np_random."""

    metadata = {"render_modes": []}

    def __init__(self, length: int = 3, max_steps: int = 6):
        self.length, self.max_steps = length, max_steps
        self.observation_space = gym.spaces.Text(max_length=200)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.t = 0
        return "pos 0", {"start": True}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        self.t += 1
        coin = "heads" if self.np_random.random() < 0.5 else "tails"
        terminated = self.pos == self.length
        truncated = self.t >= self.max_steps  # may coincide with terminated (gymnasium allows it)
        return f"pos {self.pos} coin {coin}", float(terminated), terminated, truncated, {"coin": coin}


class IntObs(CoinCorridor):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Discrete(10)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        _, reward, terminated, truncated, info = super().step(action)
        return self.pos, reward, terminated, truncated, info


class Unpicklable(CoinCorridor):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


NAMES = {"left": 0, "right": 1}


def wrap(gym_env=None, **kw) -> GymTextEnv:
    kw.setdefault("action_to_gym", NAMES.__getitem__)
    return GymTextEnv(gym_env or CoinCorridor(), deterministic=True,
                      admissible_actions=lambda obs, info: tuple(NAMES),
                      gold_actions=["right"] * 3, system_prompt="go right", **kw)


def test_wrapper_passes_check_env_with_gold():
    report = check_env(wrap)
    assert report.passed, report.failures()
    assert report.gold_success is True
    assert report.check("snapshot").required


def test_steps_match_the_gym_env_itself():
    env, raw = wrap(), CoinCorridor()
    obs = env.reset(seed=11)
    raw_obs, raw_info = raw.reset(seed=11)
    assert obs.text == raw_obs and obs.admissible_actions == ("left", "right") and obs.info == raw_info
    for action in ["right", "left", "right", "right"]:
        got = env.step(action)
        want = raw.step(NAMES[action])
        assert (got.observation.text, got.reward, got.terminated, got.truncated) == want[:4]
        assert isinstance(got.reward, float) and got.info == want[4]
    assert env.system_prompt == "go right"


def test_invalid_action_is_feedback_and_consumes_nothing():
    env = wrap()
    env.reset(seed=0)
    env.step("right")
    bad = env.step("jump")
    assert bad.info["invalid_action"] is True and "KeyError" in bad.info["error"]
    assert bad.reward == 0.0 and not bad.done
    assert bad.observation.text.startswith("Invalid action 'jump'") and "pos 1 coin" in bad.observation.text
    assert env.gym_env.t == 1  # the gym env was not stepped


def test_default_discrete_converter():
    env = GymTextEnv(CoinCorridor())
    env.reset(seed=0)
    assert env.step(" 1 ").observation.text.startswith("pos 1")
    for bad in ("right", "2", "-1", ""):
        assert env.step(bad).info["invalid_action"] is True
    assert env.gym_env.t == 1


def test_terminal_step_is_not_also_truncated():
    env = wrap(CoinCorridor(length=3, max_steps=3))
    env.reset(seed=0)
    results = [env.step("right") for _ in range(3)]
    assert results[-1].terminated and not results[-1].truncated and results[-1].reward == 1.0
    with pytest.raises(EnvError, match="call reset"):
        env.step("right")


def test_snapshot_restores_the_gym_rng():
    env = wrap(CoinCorridor(length=50, max_steps=100))
    env.reset(seed=4)
    env.step("right")
    snap = env.snapshot()
    actions = ["right", "left", "right", "right", "left", "right", "right", "left"]
    first = [env.step(a).observation.text for a in actions]
    for _ in range(2):
        env.restore(snap)
        assert [env.step(a).observation.text for a in actions] == first
    coins = {text.split()[-1] for text in first}
    assert coins == {"heads", "tails"}  # the replay really covered random outcomes


def test_obs_to_text_and_missing_converter():
    env = GymTextEnv(IntObs(), action_to_gym=NAMES.__getitem__, obs_to_text=lambda o: f"cell {o}")
    assert env.reset(seed=0).text == "cell 0"
    assert env.step("right").observation.text == "cell 1"
    with pytest.raises(EnvError, match="obs_to_text"):
        GymTextEnv(IntObs()).reset(seed=0)


def test_undeepcopyable_env_branches_by_replay():
    env = wrap(Unpicklable())
    assert env.supports_snapshot is False
    report = check_env(lambda: wrap(Unpicklable()))
    assert report.passed and not report.check("snapshot").required


def test_gym_make_wrappers_and_bad_object():
    gym.register("TtsearchCoinCorridor-v0", entry_point=CoinCorridor, max_episode_steps=4,
                 disable_env_checker=True)
    try:
        env = wrap(gym.make("TtsearchCoinCorridor-v0", length=10, max_steps=100))
        assert env.name == "TtsearchCoinCorridor-v0"
        env.reset(seed=0)
        flags = [env.step("right").truncated for _ in range(4)]
        assert flags == [False, False, False, True]  # gymnasium's TimeLimit, passed through
        assert check_env(lambda: wrap(gym.make("TtsearchCoinCorridor-v0"))).passed
    finally:
        gym.registry.pop("TtsearchCoinCorridor-v0", None)
    with pytest.raises(EnvError, match="reset\\(\\) and step\\(\\)"):
        GymTextEnv(object())
