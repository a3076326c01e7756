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

``CheckReport.passed`` is True when every *required* check passed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ttsearch.envs.base import SUCCESS_REWARD, Env, Observation, StepResult
from ttsearch.envs.errors import ConfigError, EnvError

GARBAGE_ACTIONS: tuple[str, ...] = (
    "", "   ", "xyzzy plugh", "🙃 ünïcödé ☃", "north\nsouth\n", "{\"tool\": null}", "a" * 5000,
)
FALLBACK_ACTIONS: tuple[str, ...] = ("look", "north", "south", "east", "west", "inventory", "help")
MAX_STEPS_TO_DONE = 500


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

    def failures(self) -> list[CheckResult]:
        """The required checks that failed."""
        return [c for c in self.checks if c.required and not c.passed]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "passed": self.passed, "gold_success": self.gold_success,
                "checks": [c.to_dict() for c in self.checks]}


class _CheckFailed(Exception):
    """Raised inside a check to fail it with a message."""


def _describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _short(text: Any, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_observation(obs: Any, where: str) -> Observation:
    if not isinstance(obs, Observation):
        raise _CheckFailed(f"{where} returned {type(obs).__name__}, not an Observation")
    if not isinstance(obs.text, str):
        raise _CheckFailed(f"{where}: Observation.text is {type(obs.text).__name__}, not str")
    acts = obs.admissible_actions
    if acts is not None and not (isinstance(acts, tuple) and all(isinstance(a, str) for a in acts)):
        raise _CheckFailed(f"{where}: admissible_actions must be None or a tuple of str, got {_short(acts)}")
    if not isinstance(obs.info, Mapping):
        raise _CheckFailed(f"{where}: Observation.info is {type(obs.info).__name__}, not a Mapping")
    return obs


def _check_result(result: Any, where: str) -> StepResult:
    if not isinstance(result, StepResult):
        raise _CheckFailed(f"{where} returned {type(result).__name__}, not a StepResult")
    _check_observation(result.observation, where)
    if not isinstance(result.reward, float) or not math.isfinite(result.reward):
        raise _CheckFailed(f"{where}: reward must be a finite float, got "
                           f"{type(result.reward).__name__} {result.reward!r}")
    for flag in ("terminated", "truncated"):
        value = getattr(result, flag)
        if not isinstance(value, bool):
            raise _CheckFailed(f"{where}: {flag} must be a bool, got {type(value).__name__} {value!r}")
    if result.terminated and result.truncated:
        raise _CheckFailed(f"{where}: terminated and truncated are both True; truncated means the "
                           "episode was cut while the state was not terminal")
    if not isinstance(result.info, Mapping):
        raise _CheckFailed(f"{where}: StepResult.info is {type(result.info).__name__}, not a Mapping")
    return result


def _key(result: StepResult) -> tuple:
    """What must be identical between two reproductions of a step (info is not compared)."""
    obs = result.observation
    return (obs.text, obs.admissible_actions, result.reward, result.terminated, result.truncated)


class _Checker:
    def __init__(self, factory: Callable[[], Env], first: Env, *, seed: int, n_random_steps: int,
                 fresh_envs: bool):
        self.factory, self.env, self.seed = factory, first, seed
        self.n_random_steps, self.fresh_envs = n_random_steps, fresh_envs
        self.extra_envs: list[Env] = []
        self.gold: list[str] | None = None

    # -- helpers --
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
            result = _check_result(env.step(action), f"step({_short(action, 30)}) #{i + 1}")
            played.append(action)
            results.append(result)
            obs = result.observation
            if result.done:
                break
        return played, results

    def second_env(self) -> Env:
        if not self.fresh_envs:
            return self.env
        env = self.factory()
        self.extra_envs.append(env)
        return env

    # -- checks --
    def check_reset(self) -> str:
        first = _check_observation(self.env.reset(seed=self.seed), f"reset(seed={self.seed})")
        again = _check_observation(self.env.reset(seed=self.seed), f"reset(seed={self.seed}) again")
        if (first.text, first.admissible_actions) != (again.text, again.admissible_actions):
            raise _CheckFailed(f"reset(seed={self.seed}) twice gave different first observations: "
                               f"{_short(first.text)} vs {_short(again.text)}")
        n = "no" if first.admissible_actions is None else len(first.admissible_actions)
        return f"text of {len(first.text)} chars, {n} admissible actions"

    def check_step_types(self) -> str:
        rng = random.Random(self.seed)
        steps = episodes = 0
        obs = self.env.reset(seed=self.seed)
        while steps < self.n_random_steps:
            action = self.choose(rng, obs)
            result = _check_result(self.env.step(action), f"step({_short(action, 30)}) #{steps + 1}")
            steps += 1
            obs = result.observation
            if result.done:
                episodes += 1
                obs = self.env.reset(seed=self.seed + episodes)
        return f"{steps} random steps, {episodes} episode(s) ended"

    def check_garbage(self) -> str:
        flagged = 0
        for action in GARBAGE_ACTIONS:
            self.env.reset(seed=self.seed)
            try:
                result = _check_result(self.env.step(action), f"step({_short(action, 20)})")
            except _CheckFailed:
                raise
            except Exception as err:
                raise _CheckFailed(f"step({_short(action, 20)}) raised {_describe_error(err)}; "
                                   "answer invalid actions with feedback instead") from err
            flagged += bool(result.info.get("invalid_action"))
        return (f"{len(GARBAGE_ACTIONS)} garbage actions answered; "
                f"{flagged} flagged info['invalid_action']")

    def check_step_after_done(self) -> tuple[bool, str]:
        obs = self.env.reset(seed=self.seed)
        how = "random actions"
        if self.gold:
            _, results = self.rollout(self.env, obs, random.Random(self.seed), 0, actions=self.gold)
            how = "the gold path"
        else:
            _, results = self.rollout(self.env, obs, random.Random(self.seed), MAX_STEPS_TO_DONE)
        if not results or not results[-1].done:
            return False, f"episode did not end within {len(results)} steps of {how}; not checked"
        try:
            after = self.env.step(self.choose(random.Random(self.seed), results[-1].observation))
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
            a_obs = self.env.reset(seed=seed)
            played, a_results = self.rollout(self.env, a_obs, rng, self.n_random_steps - steps)
            b_obs = other.reset(seed=seed)
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
            obs = env.reset(seed=self.seed)
            _, prefix = self.rollout(env, obs, rng, prefix_len)
            if prefix and prefix[-1].done:
                continue  # the episode already ended: nothing to branch from
            obs = prefix[-1].observation if prefix else obs
            snap = env.snapshot()
            played, first = self.rollout(env, obs, rng, k)
            replayed += len(first)
            for label in ("first", "second"):
                env.restore(snap)
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
        obs = self.env.reset(seed=self.seed)
        gold = self.env.gold_actions()
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


def check_env(env_or_factory: Env | Callable[[], Env], *, seed: int = 0, n_random_steps: int = 20,
              play_gold: bool = True, name: str | None = None) -> CheckReport:
    """Check an environment against the contract (module docstring); never raises for env bugs.

    Pass a zero-argument factory to let the determinism check compare two separate envs; with
    an instance it compares two episodes of that one env.
    """
    if n_random_steps < 1:
        raise ConfigError(f"n_random_steps must be >= 1, got {n_random_steps}")
    fresh = not isinstance(env_or_factory, Env)
    factory: Callable[[], Env] = env_or_factory if fresh else (lambda: env_or_factory)  # type: ignore[assignment,return-value]
    try:
        first = factory()
        if not isinstance(first, Env):
            raise EnvError(f"the factory built a {type(first).__name__}, not a ttsearch Env")
    except Exception as err:
        label = name or getattr(env_or_factory, "__name__", "env")
        result = CheckResult("construct", False, f"raised {_describe_error(err)}")
        return CheckReport(label, False, None, (result,))
    label = name or type(first).__name__
    checker = _Checker(factory, first, seed=seed, n_random_steps=n_random_steps, fresh_envs=fresh)
    checks: list[CheckResult] = [_guarded("reset", checker.check_reset)]

    gold_success: bool | None = None
    gold_check: CheckResult | None = None
    if play_gold:
        outcome: dict[str, Any] = {}

        def gold() -> str:
            outcome["success"], detail = checker.check_gold()
            return detail

        gold_check = _guarded("gold", gold)
        gold_success = outcome.get("success")
        if gold_check.passed:
            gold_check = CheckResult("gold", gold_success is not False, gold_check.detail,
                                     required=gold_success is not None)

    checks.append(_guarded("step_types", checker.check_step_types))
    checks.append(_guarded("garbage_action", checker.check_garbage))
    reached: dict[str, bool] = {}

    def after_done() -> str:
        reached["done"], detail = checker.check_step_after_done()
        return detail

    result = _guarded("step_after_done", after_done)
    if result.passed and not reached.get("done"):
        result = CheckResult(result.name, True, result.detail, required=False)
    checks.append(result)

    deterministic = bool(getattr(first, "deterministic", False))
    result = _guarded("determinism", checker.check_determinism, required=deterministic)
    if not deterministic:
        result = CheckResult(result.name, result.passed,
                             f"info (env.deterministic is False): {result.detail}", required=False)
    checks.append(result)

    try:
        supports_snapshot = bool(first.supports_snapshot)
    except Exception:  # a broken property counts as "no snapshot"
        supports_snapshot = False
    if supports_snapshot:
        checks.append(_guarded("snapshot", checker.check_snapshot))
    else:
        branch = "replay from reset(seed)" if deterministic else "nothing (neither snapshot nor determinism)"
        checks.append(CheckResult("snapshot", False, f"no snapshot(); search can branch by {branch}",
                                  required=False))
    if gold_check is not None:
        checks.append(gold_check)

    def close() -> str:
        for env in (first, *checker.extra_envs):
            env.close()
            env.close()
        return "close() twice is safe"

    checks.append(_guarded("close", close))
    passed = all(c.passed for c in checks if c.required)
    return CheckReport(label, passed, gold_success, tuple(checks))
