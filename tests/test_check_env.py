"""check_env against a correct env, deliberately broken ones, the maze, and the CLI."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import pytest

from ttsearch.benchmarks import cli
from ttsearch.envs import REGISTRY, Env, EnvError, Observation, StepResult, check_env, make
from ttsearch.envs.registry import EnvEntry

WEATHER = ("sun", "rain", "fog", "snow", "wind", "hail", "mist", "storm")


class LineEnv(Env):
    """Walk right from 0 to ``goal``; each step's text shows a 'weather' word from the env's RNG."""

    deterministic = True
    ACTIONS = ("left", "right", "wait")

    def __init__(self, goal: int = 3, max_steps: int = 8):
        self.goal, self.max_steps = goal, max_steps
        self._rng = random.Random(0)
        self._pos = self._t = 0
        self._done = False

    def _weather(self) -> str:
        return self._rng.choice(WEATHER)

    def reset(self, *, seed: int | None = None) -> Observation:
        self._rng = random.Random(seed)
        self._pos, self._t, self._done = 0, 0, False
        return Observation("pos 0", self.ACTIONS)

    def step(self, action: str) -> StepResult:
        if self._done:
            raise EnvError("episode over; call reset()")
        self._t += 1
        info: dict[str, Any] = {}
        if action in self.ACTIONS:
            self._pos = max(0, self._pos + {"left": -1, "right": 1, "wait": 0}[action])
            prefix = ""
        else:
            info["invalid_action"] = True
            prefix = "I don't understand. "
        terminated = self._pos == self.goal
        truncated = not terminated and self._t >= self.max_steps
        self._done = terminated or truncated
        text = f"{prefix}pos {self._pos} weather {self._weather()}"
        return StepResult(Observation(text, self.ACTIONS), 1.0 if terminated else 0.0,
                          terminated, truncated, info)

    def snapshot(self) -> Any:
        return (self._pos, self._t, self._done, self._rng.getstate())

    def restore(self, snapshot: Any) -> None:
        self._pos, self._t, self._done, state = snapshot
        self._rng.setstate(state)

    def gold_actions(self) -> Sequence[str] | None:
        return ["right"] * self.goal


class UnseededWeather(LineEnv):
    """Claims determinism but draws the weather from OS entropy."""

    def _weather(self) -> str:
        return random.SystemRandom().choice(WEATHER)


class HonestUnseeded(UnseededWeather):
    """Same noise, but honest: not deterministic and no snapshot."""

    deterministic = False
    snapshot = Env.snapshot
    restore = Env.restore


class ForgetfulSnapshot(LineEnv):
    """Snapshot keeps the position but forgets the random generator."""

    def snapshot(self) -> Any:
        return (self._pos, self._t, self._done)

    def restore(self, snapshot: Any) -> None:
        self._pos, self._t, self._done = snapshot


class RaisesOnGarbage(LineEnv):
    def step(self, action: str) -> StepResult:
        if action not in self.ACTIONS:
            raise ValueError(f"bad action {action!r}")
        return super().step(action)


class IntReward(LineEnv):
    def step(self, action: str) -> StepResult:
        r = super().step(action)
        return StepResult(r.observation, int(r.reward), r.terminated, r.truncated, r.info)


class BothFlags(LineEnv):
    def step(self, action: str) -> StepResult:
        r = super().step(action)
        return StepResult(r.observation, r.reward, r.terminated, r.terminated, r.info)


class KeepsGoingAfterDone(LineEnv):
    def step(self, action: str) -> StepResult:
        self._done = False
        r = super().step(action)
        return StepResult(r.observation, r.reward, False, False, r.info) if self._t > 3 else r


class WrongGold(LineEnv):
    def gold_actions(self) -> Sequence[str] | None:
        return ["left"] * self.goal


class ResetRaises(LineEnv):
    def reset(self, *, seed: int | None = None) -> Observation:
        raise RuntimeError("no display")


def _failed(report) -> set[str]:
    return {c.name for c in report.failures()}


def test_correct_env_passes_every_check():
    report = check_env(LineEnv)
    assert report.passed, report.failures()
    assert report.gold_success is True
    assert [c.name for c in report.checks] == ["reset", "step_types", "garbage_action",
                                               "step_after_done", "determinism", "snapshot",
                                               "gold", "close", "speed"]
    assert all(c.passed and c.required for c in report.checks[:-1])
    assert report.check("speed").passed and not report.check("speed").required and not report.slow
    assert report.env == "LineEnv"
    assert "7 flagged info['invalid_action']" in report.check("garbage_action").detail
    assert "raises EnvError" in report.check("step_after_done").detail


def test_instance_works_too():
    report = check_env(LineEnv(), seed=5, n_random_steps=7)
    assert report.passed, report.failures()
    assert "one env" in report.check("determinism").detail


def test_nondeterminism_claiming_determinism_fails_determinism():
    report = check_env(UnseededWeather)
    assert not report.passed
    assert "determinism" in _failed(report)
    assert report.check("reset").passed  # the first observation is not random
    assert "differs" in report.check("determinism").detail


def test_honest_nondeterministic_env_passes_with_info():
    report = check_env(HonestUnseeded)
    det = report.check("determinism")
    assert not det.passed and not det.required and det.detail.startswith("info")
    snap = report.check("snapshot")
    assert not snap.required and "neither snapshot nor determinism" in snap.detail
    assert report.passed


def test_snapshot_forgetting_rng_fails_snapshot_only():
    report = check_env(ForgetfulSnapshot)
    assert _failed(report) == {"snapshot"}
    assert "random generator" in report.check("snapshot").detail


def test_raising_on_garbage_fails_garbage_action_only():
    report = check_env(RaisesOnGarbage)
    assert _failed(report) == {"garbage_action"}
    assert "ValueError: bad action" in report.check("garbage_action").detail


@pytest.mark.parametrize(("env_cls", "needle"), [(IntReward, "reward must be a finite float"),
                                                  (BothFlags, "both True")])
def test_bad_step_types_fail(env_cls, needle):
    report = check_env(env_cls)
    assert "step_types" in _failed(report)
    assert needle in report.check("step_types").detail


def test_step_after_done_must_stay_done_or_raise():
    report = check_env(KeepsGoingAfterDone)
    assert "step_after_done" in _failed(report)
    assert "not done" in report.check("step_after_done").detail


def test_failing_gold_path_fails():
    report = check_env(WrongGold)
    assert report.gold_success is False
    assert _failed(report) == {"gold"}
    assert check_env(WrongGold, play_gold=False).passed


def test_crashing_envs_become_failed_checks():
    report = check_env(ResetRaises)
    assert not report.passed
    assert "RuntimeError: no display" in report.check("reset").detail

    def broken_factory():
        raise OSError("missing game file")

    report = check_env(broken_factory)
    assert not report.passed and report.checks[0].name == "construct"
    assert "OSError: missing game file" in report.checks[0].detail


def test_builtin_maze_passes_and_gold_succeeds():
    report = check_env(make("maze", layout_seed=0))
    assert report.passed, report.failures()
    assert report.gold_success is True
    report = check_env(lambda: make("maze", layout_seed=0, slip=0.3), seed=0)
    assert report.check("determinism").passed and report.check("snapshot").passed


# --- CLI --------------------------------------------------------------------------------------

@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``cli.main`` with a few test environments registered."""
    monkeypatch.setitem(REGISTRY, "line-test", EnvEntry(f"{__name__}:LineEnv", description="test line"))
    monkeypatch.setitem(REGISTRY, "forgetful-test", EnvEntry(f"{__name__}:ForgetfulSnapshot"))
    monkeypatch.setitem(REGISTRY, "broken-test", EnvEntry("no_such_module_xyz:Env"))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_cli_check_env_json(run_cli):
    code, out, _ = run_cli("check-env", "line-test", "--json", "--seed", "3", "--kwargs", '{"goal": 2}')
    data = json.loads(out)
    assert code == 0
    assert data["env"] == "line-test" and data["passed"] is True and data["gold_success"] is True
    assert {"name", "passed", "detail"} <= set(data["checks"][0])
    assert "2/2 gold actions" in next(c for c in data["checks"] if c["name"] == "gold")["detail"]

    code, out, _ = run_cli("check-env", "forgetful-test", "--json")
    data = json.loads(out)
    assert code == 1 and data["passed"] is False
    assert [c["name"] for c in data["checks"] if not c["passed"]] == ["snapshot"]


def test_cli_check_env_table_and_user_errors(run_cli):
    code, out, _ = run_cli("check-env", "line-test")
    assert code == 0 and "determinism" in out and "passed" in out
    code, _, err = run_cli("check-env", "no-such-env")
    assert code == 2 and "unknown environment 'no-such-env'" in err
    code, _, err = run_cli("check-env", "line-test", "--kwargs", "{goal: 2}")
    assert code == 2 and "--kwargs must be a JSON object" in err


def test_cli_envs_lists_registry(run_cli):
    code, out, _ = run_cli("envs", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["maze"]["importable"] is True and rows["maze"]["factory"] == REGISTRY["maze"].factory
    assert rows["line-test"]["description"] == "test line"
    assert rows["broken-test"]["importable"] is False and "no_such_module_xyz" in rows["broken-test"]["error"]
    code, out, _ = run_cli("envs")
    assert code == 0 and "line-test" in out
