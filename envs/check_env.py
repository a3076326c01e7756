"""Conformance checker: does an environment keep the :class:`~ttsearch.envs.base.Env` contract?

    from ttsearch.envs import check_env, make
    report = check_env(lambda: make("maze", layout_seed=0))    # a factory (best) or an Env
    assert report.passed, report.failures()
    print(report.gold_success)                                  # True / False / None (no gold path)

    $ ttsearch check-env maze --kwargs '{"layout_seed": 0}' --json

What is checked (every env call is guarded: an exception becomes a failed check, never a crash):

- ``reset``: returns an Observation with ``str`` text (tuple-of-str admissible actions or None,
  a Mapping info); ``reset(seed)`` twice gives the same first observation.
- ``step_types``: ``n_random_steps`` random actions; each returns a StepResult with a ``float``
  reward (finite), ``bool`` terminated/truncated, a Mapping info. ``terminated`` and
  ``truncated`` are never both True: unlike Gymnasium (where a time limit may flag a terminal
  step as truncated too), the contract says truncated means "cut while *not* terminal".
- ``garbage_action``: nonsense strings ("", unicode, 5000 characters, newlines) are answered
  with a well-typed StepResult, never an exception (``info["invalid_action"]`` is reported).
- ``step_after_done``: once an episode is over, ``step`` must raise :class:`EnvError` (the
  preferred answer) or return a StepResult that is still done. Anything else fails.
- ``determinism``: two envs (two factory calls; the same env twice when given an instance)
  reset with the same seed and fed the same random actions give identical observation text,
  admissible actions, rewards and flags (``info`` is not compared). Required only when
  ``env.deterministic`` is True; otherwise reported as information.
- ``snapshot``: when ``supports_snapshot``: snapshot mid-episode, step k random actions, restore,
  replay the same actions: the results must match, stochastic outcomes included (the snapshot
  must hold the random generator's state), and a second restore must work too.
- ``gold``: after ``reset(seed)``, play ``gold_actions()``; success = total reward >= 1. Fails
  when a gold path exists but does not succeed; information when there is none.
- ``close``: ``close()`` twice does not raise.
- ``speed`` (information): every env call is timed (``CheckReport.timings``); a ``reset``,
  ``step``, ``snapshot`` or ``restore`` slower than ``slow_s`` (default 1 s) is flagged, since a
  search repeats them hundreds of times per episode. With ``timeout_s``, a call that does not
  return in time fails the check in progress and the rest are not run.

Observations and step results are checked by :mod:`ttsearch.envs.validation`, the same
boundary check ``ttsearch run`` applies to every env call.

``CheckReport.passed`` is True when every *required* check passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ttsearch.envs.base import Env
from ttsearch.envs.env_checks import CallClock, CheckFailed, EnvChecker, describe_error
from ttsearch.envs.errors import ConfigError, EnvError

SLOW_CALL_S = 1.0
"""An env call slower than this is flagged: a search makes hundreds of them per episode."""
JUDGED_CALLS = ("reset", "step", "snapshot", "restore")
"""The calls a search repeats (judged against ``slow_s``); construct, gold_actions and close are
timed and reported but not flagged (a benchmark may build its game once per episode)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: its name, whether it passed, and what was seen.

    ``required=False`` marks information (e.g. determinism of an env that does not claim it):
    it is shown but does not affect :attr:`CheckReport.passed`.
    """

    name: str
    passed: bool
    detail: str = ""
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail,
                "required": self.required}


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The result of :func:`check_env`."""

    env: str
    passed: bool
    gold_success: bool | None
    checks: tuple[CheckResult, ...] = field(default_factory=tuple)
    timings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per env call ("reset", "step", "snapshot", ...): calls, mean_s, max_s, slow_calls."""
    slow_s: float = 1.0
    """The threshold above which a call counts as slow."""

    @property
    def slow(self) -> bool:
        """Some env call took longer than ``slow_s``."""
        return any(t["slow_calls"] for t in self.timings.values())

    def failures(self) -> list[CheckResult]:
        """The required checks that failed."""
        return [c for c in self.checks if c.required and not c.passed]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "passed": self.passed, "gold_success": self.gold_success,
                "checks": [c.to_dict() for c in self.checks], "slow": self.slow,
                "slow_threshold_s": self.slow_s, "timings": {k: dict(v) for k, v in self.timings.items()}}


def _guarded(name: str, fn: Callable[[], Any], *, required: bool = True) -> CheckResult:
    try:
        detail = fn()
    except CheckFailed as err:
        return CheckResult(name, False, str(err), required)
    except Exception as err:  # an env bug is a failed check, not a crash of the checker
        return CheckResult(name, False, f"raised {describe_error(err)}", required)
    return CheckResult(name, True, str(detail), required)


def _speed(clock: CallClock, slow_s: float) -> tuple[CheckResult, dict[str, dict[str, Any]]]:
    """Per-call timings and the (informational) ``speed`` check: is any call slower than ``slow_s``?"""
    timings = {name: {"calls": len(ts), "mean_s": round(sum(ts) / len(ts), 6), "max_s": round(max(ts), 6),
                      "slow_calls": sum(t > slow_s for t in ts) if name in JUDGED_CALLS else 0}
               for name, ts in clock.timings.items() if ts}
    slow = {name: t for name, t in timings.items() if t["slow_calls"]}
    if not timings:
        return CheckResult("speed", True, "no env call was made", required=False), timings
    judged = [name for name in timings if name in JUDGED_CALLS] or list(timings)
    slowest = max(judged, key=lambda name: timings[name]["max_s"])
    if not slow:
        t = timings[slowest]
        return CheckResult("speed", True, f"slowest call: {slowest} {t['max_s']:.3g} s (threshold {slow_s:g} s)",
                           required=False), timings
    parts = [f"{name} up to {t['max_s']:.3g} s ({t['slow_calls']} of {t['calls']} calls over {slow_s:g} s)"
             for name, t in sorted(slow.items(), key=lambda item: -item[1]["max_s"])]
    return CheckResult("speed", False, "SLOW: " + "; ".join(parts) + ": a search makes hundreds of env calls "
                       "per episode; make them faster (or expect long runs)", required=False), timings


def check_env(env_or_factory: Env | Callable[[], Env], *, seed: int = 0, n_random_steps: int = 20,
              play_gold: bool = True, name: str | None = None, slow_s: float = SLOW_CALL_S,
              timeout_s: float | None = None) -> CheckReport:
    """Check an environment against the contract (module docstring); never raises for env bugs.

    Pass a zero-argument factory to let the determinism check compare two separate envs; with
    an instance it compares two episodes of that one env. Every env call is timed: calls slower
    than ``slow_s`` fail the informational ``speed`` check (``CheckReport.timings`` has them all).
    With ``timeout_s`` the checks run on one worker thread (every env call on that same thread)
    and a call that does not return within ``timeout_s`` seconds fails the check in progress;
    the worker is abandoned (a daemon thread) and the later checks are not run.
    """
    if n_random_steps < 1:
        raise ConfigError(f"n_random_steps must be >= 1, got {n_random_steps}")
    if not slow_s > 0:
        raise ConfigError(f"slow_s must be > 0 seconds, got {slow_s}")
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"timeout_s must be > 0 seconds (or None: no limit), got {timeout_s}")
    clock = CallClock()
    checks: list[CheckResult] = []
    state: dict[str, Any] = {"check": "construct", "gold": None,
                             "label": name or getattr(env_or_factory, "__name__", "env")}

    def run() -> None:
        try:
            _run_checks(env_or_factory, checks, state, clock, seed=seed, n_random_steps=n_random_steps,
                        play_gold=play_gold, label=name)
        except BaseException as err:  # a checker bug: handed back to the caller's thread
            state["error"] = err

    if timeout_s is None:
        run()
    else:
        worker = threading.Thread(target=run, name="ttsearch-check-env", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.02)
            current = clock.current
            if current is not None and time.perf_counter() - current[1] > timeout_s:
                done = list(checks)  # the checks that finished before the hang
                done.append(CheckResult(state["check"], False, f"{current[0]}() did not return within "
                                        f"{timeout_s:g} s: the env hangs; the later checks were not run"))
                speed, timings = _speed(clock, slow_s)
                return CheckReport(state["label"], False, state["gold"], (*done, speed), timings, slow_s)
    if "error" in state:
        raise state["error"]
    speed, timings = _speed(clock, slow_s)
    passed = bool(checks) and all(c.passed for c in checks if c.required)
    return CheckReport(state["label"], passed, state["gold"], (*checks, speed), timings, slow_s)


def _run_checks(env_or_factory: Env | Callable[[], Env], checks: list[CheckResult], state: dict[str, Any],
                clock: CallClock, *, seed: int, n_random_steps: int, play_gold: bool, label: str | None) -> None:
    """Append every check's result to ``checks`` as it finishes (``state["check"]``: the one running)."""
    fresh = not isinstance(env_or_factory, Env)
    factory: Callable[[], Env] = env_or_factory if fresh else (lambda: env_or_factory)  # type: ignore[assignment,return-value]

    def guarded(name: str, fn: Callable[[], Any], *, required: bool = True) -> CheckResult:
        state["check"] = name
        return _guarded(name, fn, required=required)

    try:
        first = clock.call("construct", factory)
        if not isinstance(first, Env):
            raise EnvError(f"the factory built a {type(first).__name__}, not a ttsearch Env")
    except Exception as err:
        checks.append(CheckResult("construct", False, f"raised {describe_error(err)}"))
        return
    state["label"] = label or type(first).__name__
    checker = EnvChecker(factory, first, seed=seed, n_random_steps=n_random_steps, fresh_envs=fresh, clock=clock)
    checks.append(guarded("reset", checker.check_reset))

    gold_check: CheckResult | None = None
    if play_gold:
        outcome: dict[str, Any] = {}

        def gold() -> str:
            outcome["success"], detail = checker.check_gold()
            return detail

        gold_check = guarded("gold", gold)
        state["gold"] = gold_success = outcome.get("success")
        if gold_check.passed:
            gold_check = CheckResult("gold", gold_success is not False, gold_check.detail,
                                     required=gold_success is not None)

    checks.append(guarded("step_types", checker.check_step_types))
    checks.append(guarded("garbage_action", checker.check_garbage))
    reached: dict[str, bool] = {}

    def after_done() -> str:
        reached["done"], detail = checker.check_step_after_done()
        return detail

    result = guarded("step_after_done", after_done)
    if result.passed and not reached.get("done"):
        result = CheckResult(result.name, True, result.detail, required=False)
    checks.append(result)

    deterministic = bool(getattr(first, "deterministic", False))
    result = guarded("determinism", checker.check_determinism, required=deterministic)
    if not deterministic:
        result = CheckResult(result.name, result.passed,
                             f"info (env.deterministic is False): {result.detail}", required=False)
    checks.append(result)

    try:
        supports_snapshot = bool(first.supports_snapshot)
    except Exception:  # a broken property counts as "no snapshot"
        supports_snapshot = False
    if supports_snapshot:
        checks.append(guarded("snapshot", checker.check_snapshot))
    else:
        branch = "replay from reset(seed)" if deterministic else "nothing (neither snapshot nor determinism)"
        checks.append(CheckResult("snapshot", False, f"no snapshot(); search can branch by {branch}",
                                  required=False))
    if gold_check is not None:
        checks.append(gold_check)

    def close() -> str:
        for env in (first, *checker.extra_envs):
            clock.call("close", env.close)
            clock.call("close", env.close)
        return "close() twice is safe"

    checks.append(guarded("close", close))
