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

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ttsearch.envs.base import SUCCESS_REWARD, Env, Observation, StepResult
from ttsearch.envs.errors import ConfigError, EnvError
from ttsearch.envs.validation import observation_problem, step_result_problem

GARBAGE_ACTIONS: tuple[str, ...] = (
    "", "   ", "xyzzy plugh", "🙃 ünïcödé ☃", "north\nsouth\n", "{\"tool\": null}", "a" * 5000,
)
FALLBACK_ACTIONS: tuple[str, ...] = ("look", "north", "south", "east", "west", "inventory", "help")
MAX_STEPS_TO_DONE = 500
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


class _CheckFailed(Exception):
    """Raised inside a check to fail it with a message."""


def _describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _short(text: Any, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_observation(obs: Any, where: str) -> Observation:
    """The same boundary check as ``ttsearch run`` (``envs.validation``), as a failed check."""
    problem = observation_problem(obs)
    if problem is not None:
        raise _CheckFailed(f"{where}: {problem}")
    return obs


def _check_result(result: Any, where: str) -> StepResult:
    problem = step_result_problem(result)
    if problem is not None:
        raise _CheckFailed(f"{where}: {problem}")
    return result


class _Clock:
    """Times every env call; the watchdog of :func:`check_env` reads ``current`` to spot a hang."""

    def __init__(self) -> None:
        self.timings: dict[str, list[float]] = {}
        self.current: tuple[str, float] | None = None

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        self.current = (name, start)
        try:
            return fn(*args)
        finally:
            self.current = None
            self.timings.setdefault(name, []).append(time.perf_counter() - start)


def _key(result: StepResult) -> tuple:
    """What must be identical between two reproductions of a step (info is not compared)."""
    obs = result.observation
    return (obs.text, obs.admissible_actions, result.reward, result.terminated, result.truncated)


class _Checker:
    def __init__(self, factory: Callable[[], Env], first: Env, *, seed: int, n_random_steps: int,
                 fresh_envs: bool, clock: _Clock):
        self.factory, self.env, self.seed, self.clock = factory, first, seed, clock
        self.n_random_steps, self.fresh_envs = n_random_steps, fresh_envs
        self.extra_envs: list[Env] = []
        self.gold: list[str] | None = None

    # -- helpers --
    def reset(self, env: Env, seed: int) -> Any:
        return self.clock.call("reset", lambda: env.reset(seed=seed))

    def step(self, env: Env, action: str) -> Any:
        return self.clock.call("step", env.step, action)

    def choose(self, rng: random.Random, obs: Observation) -> str:
        pool = list(obs.admissible_actions or ()) or list(self.gold or ()) or list(FALLBACK_ACTIONS)
        return pool[rng.randrange(len(pool))]

    def rollout(self, env: Env, obs: Observation, rng: random.Random, n: int,
                actions: list[str] | None = None) -> tuple[list[str], list[StepResult]]:
        """From ``obs``, play ``actions`` (or ``n`` drawn from ``rng``) until done."""
        played: list[str] = []
        results: list[StepResult] = []
        for i in range(n if actions is None else len(actions)):
            action = self.choose(rng, obs) if actions is None else actions[i]
            result = _check_result(self.step(env, action), f"step({_short(action, 30)}) #{i + 1}")
            played.append(action)
            results.append(result)
            obs = result.observation
            if result.done:
                break
        return played, results

    def second_env(self) -> Env:
        if not self.fresh_envs:
            return self.env
        env = self.clock.call("construct", self.factory)
        self.extra_envs.append(env)
        return env

    # -- checks --
    def check_reset(self) -> str:
        first = _check_observation(self.reset(self.env, self.seed), f"reset(seed={self.seed})")
        again = _check_observation(self.reset(self.env, self.seed), f"reset(seed={self.seed}) again")
        if (first.text, first.admissible_actions) != (again.text, again.admissible_actions):
            raise _CheckFailed(f"reset(seed={self.seed}) twice gave different first observations: "
                               f"{_short(first.text)} vs {_short(again.text)}")
        n = "no" if first.admissible_actions is None else len(first.admissible_actions)
        return f"text of {len(first.text)} chars, {n} admissible actions"

    def check_step_types(self) -> str:
        rng = random.Random(self.seed)
        steps = episodes = 0
        obs = self.reset(self.env, self.seed)
        while steps < self.n_random_steps:
            action = self.choose(rng, obs)
            result = _check_result(self.step(self.env, action), f"step({_short(action, 30)}) #{steps + 1}")
            steps += 1
            obs = result.observation
            if result.done:
                episodes += 1
                obs = self.reset(self.env, self.seed + episodes)
        return f"{steps} random steps, {episodes} episode(s) ended"

    def check_garbage(self) -> str:
        flagged = 0
        for action in GARBAGE_ACTIONS:
            self.reset(self.env, self.seed)
            try:
                result = _check_result(self.step(self.env, action), f"step({_short(action, 20)})")
            except _CheckFailed:
                raise
            except Exception as err:
                raise _CheckFailed(f"step({_short(action, 20)}) raised {_describe_error(err)}; "
                                   "answer invalid actions with feedback instead") from err
            flagged += bool(result.info.get("invalid_action"))
        return (f"{len(GARBAGE_ACTIONS)} garbage actions answered; "
                f"{flagged} flagged info['invalid_action']")

    def check_step_after_done(self) -> tuple[bool, str]:
        obs = self.reset(self.env, self.seed)
        how = "random actions"
        if self.gold:
            _, results = self.rollout(self.env, obs, random.Random(self.seed), 0, actions=self.gold)
            how = "the gold path"
        else:
            _, results = self.rollout(self.env, obs, random.Random(self.seed), MAX_STEPS_TO_DONE)
        if not results or not results[-1].done:
            return False, f"episode did not end within {len(results)} steps of {how}; not checked"
        try:
            after = self.step(self.env, self.choose(random.Random(self.seed), results[-1].observation))
        except EnvError as err:
            return True, f"raises EnvError after done ({err})"
        except Exception as err:
            raise _CheckFailed(f"step after done raised {_describe_error(err)}; raise EnvError "
                               "or return a done StepResult") from err
        after = _check_result(after, "step after done")
        if not after.done:
            raise _CheckFailed("step after done returned a StepResult that is not done")
        return True, "returns a done StepResult after done"

    def check_determinism(self) -> str:
        """Lockstep episodes (seeds seed, seed+1, ...) until n_random_steps steps were compared."""
        other = self.second_env()
        rng = random.Random(self.seed + 1)
        steps = episodes = 0
        while steps < self.n_random_steps and episodes < self.n_random_steps:
            seed = self.seed + episodes
            # Sequential, not interleaved: with an instance, ``other`` is the same env.
            a_obs = self.reset(self.env, seed)
            played, a_results = self.rollout(self.env, a_obs, rng, self.n_random_steps - steps)
            b_obs = self.reset(other, seed)
            if (a_obs.text, a_obs.admissible_actions) != (b_obs.text, b_obs.admissible_actions):
                raise _CheckFailed(f"first observations differ for seed {seed}")
            _, b_results = self.rollout(other, b_obs, rng, 0, actions=played)
            for i, (a, b) in enumerate(zip(a_results, b_results, strict=False)):
                if _key(a) != _key(b):
                    raise _CheckFailed(f"seed {seed}, step {i + 1} ({_short(played[i], 30)}) differs: "
                                       f"{_short(_key(a))} vs {_short(_key(b))}")
            if len(a_results) != len(b_results):
                raise _CheckFailed(f"seed {seed}: one episode ended earlier than the other")
            steps += len(a_results)
            episodes += 1
        where = "two envs" if self.fresh_envs else "one env, episodes replayed"
        return f"{steps} steps in {episodes} episode(s) identical ({where})"

    def check_snapshot(self, k: int = 8, rounds: int = 3) -> str:
        """Snapshot after a prefix of 0, 1, 2... random steps; replay k steps twice from it."""
        env, replayed = self.env, 0
        for prefix_len in range(rounds):
            rng = random.Random(self.seed + 2 + prefix_len)
            obs = self.reset(env, self.seed)
            _, prefix = self.rollout(env, obs, rng, prefix_len)
            if prefix and prefix[-1].done:
                continue  # the episode already ended: nothing to branch from
            obs = prefix[-1].observation if prefix else obs
            snap = self.clock.call("snapshot", env.snapshot)
            played, first = self.rollout(env, obs, rng, k)
            replayed += len(first)
            for label in ("first", "second"):
                self.clock.call("restore", env.restore, snap)
                _, replay = self.rollout(env, obs, rng, 0, actions=played)
                for i, (a, b) in enumerate(zip(first, replay, strict=False)):
                    if _key(a) != _key(b):
                        raise _CheckFailed(
                            f"after the {label} restore (snapshot after {prefix_len} steps), replayed "
                            f"step {i + 1} ({_short(played[i], 30)}) differs: {_short(_key(a))} vs "
                            f"{_short(_key(b))}; the snapshot must hold the whole state, random "
                            "generator included")
                if len(first) != len(replay):
                    raise _CheckFailed(f"after the {label} restore the replay ended at a different step")
        return f"{replayed} steps replayed exactly after restore (twice each, {rounds} snapshots)"

    def check_gold(self) -> tuple[bool | None, str]:
        obs = self.reset(self.env, self.seed)
        gold = self.clock.call("gold_actions", self.env.gold_actions)
        if gold is None:
            return None, "env has no gold_actions()"
        gold = list(gold)
        if not all(isinstance(a, str) for a in gold):
            raise _CheckFailed("gold_actions() must be a sequence of str")
        self.gold = gold
        _, results = self.rollout(self.env, obs, random.Random(self.seed), 0, actions=gold)
        total = math.fsum(r.reward for r in results)
        success = total >= SUCCESS_REWARD
        return success, (f"{len(results)}/{len(gold)} gold actions played, total reward {total:g}"
                         + ("" if success else f" < {SUCCESS_REWARD:g}: the gold path fails"))


def _guarded(name: str, fn: Callable[[], Any], *, required: bool = True) -> CheckResult:
    try:
        detail = fn()
    except _CheckFailed as err:
        return CheckResult(name, False, str(err), required)
    except Exception as err:  # an env bug is a failed check, not a crash of the checker
        return CheckResult(name, False, f"raised {_describe_error(err)}", required)
    return CheckResult(name, True, str(detail), required)


def _speed(clock: _Clock, slow_s: float) -> tuple[CheckResult, dict[str, dict[str, Any]]]:
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
    clock = _Clock()
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
                clock: _Clock, *, seed: int, n_random_steps: int, play_gold: bool, label: str | None) -> None:
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
        checks.append(CheckResult("construct", False, f"raised {_describe_error(err)}"))
        return
    state["label"] = label or type(first).__name__
    checker = _Checker(factory, first, seed=seed, n_random_steps=n_random_steps, fresh_envs=fresh, clock=clock)
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
