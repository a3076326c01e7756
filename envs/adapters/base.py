"""Shared machinery for the benchmark adapters (TextWorld, ScienceWorld, MiniGrid, ...).

An adapter subclasses :class:`AdapterEnv` and implements three hooks; the base class does the
bookkeeping every adapter needs the same way:

    class MyEnv(AdapterEnv):
        def _start(self, seed): ...            # backend reset -> Outcome (text, admissible, info)
        def _act(self, action): ...            # backend step  -> Outcome (text, reward, terminated, invalid, ...)
        def _kill(self): ...                   # drop a backend that hung (optional)

    env = MyEnv(max_steps=50, step_timeout_s=30)
    obs = env.reset(seed=3)                    # the seed selects the game instance
    result = env.step("go north")              # StepResult; never raises for a bad action

What it guarantees:
- ``max_steps`` counts every agent turn (invalid ones too); reaching it truncates the episode
  unless the turn ended it (terminated wins).
- every backend call runs under ``step_timeout_s``: a hang ends the episode as failed
  (``truncated=True``, ``info["failure"]`` says why) and the backend is dropped; the next
  ``reset`` builds a fresh one. A hang during ``reset`` raises :class:`EnvError`.
- stepping a finished episode returns the last observation again, reward 0, the same
  terminated/truncated flags, ``info["episode_over"] = True`` and ``info["invalid_action"] = True``.
- ``info["invalid_action"]`` is always present (True when the backend said so).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ttsearch.envs.base import Env, Observation, StepResult
from ttsearch.envs.errors import EnvError

T = TypeVar("T")

DEFAULT_STEP_TIMEOUT_S = 60.0


def cache_root() -> Path:
    """Where generated games and downloaded-by-user data are cached (``$TTSEARCH_CACHE``)."""
    base = os.environ.get("TTSEARCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ttsearch")
    return Path(base)


def normalize_command(text: str) -> str:
    """Lower-case, single spaces, stripped: how text games compare typed commands."""
    return " ".join(str(text).lower().split())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a backend hook returns: the new observation and what the step did."""

    text: str
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    """The backend cut the episode itself (its own time limit)."""
    invalid: bool = False
    admissible: tuple[str, ...] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    total: float | None = None
    """The episode's cumulative reward after this step (e.g. score / max score). When given,
    ``reward`` is ignored and the step reward is chosen so that the float sum of the episode's
    rewards, added up in order from 0, equals ``total`` exactly (so ``total == 1`` is success)."""


class StepTimeout(Exception):
    """A backend call did not return within the time limit."""


class _Runner:
    """Runs backend calls on one worker thread so a hang can be abandoned after a timeout."""

    def __init__(self) -> None:
        self._pool: cf.ThreadPoolExecutor | None = None

    def call(self, fn: Callable[[], T], timeout_s: float | None) -> T:
        if timeout_s is None or timeout_s <= 0:
            return fn()
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttsearch-env")
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=timeout_s)
        except cf.TimeoutError:
            # The worker is stuck in backend code we cannot interrupt: abandon it (and its pool).
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise StepTimeout(f"no answer within {timeout_s:g} s") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class AdapterEnv(Env):
    """Base class of the benchmark adapters: limits, timeouts, episode bookkeeping.

    The seed of ``reset`` selects the game instance (TextWorld game seed, ScienceWorld variation,
    MiniGrid layout seed, dataset item, ...); ``None`` replays the previous seed (0 at first).
    """

    deterministic = True

    def __init__(self, *, max_steps: int = 100, step_timeout_s: float | None = DEFAULT_STEP_TIMEOUT_S):
        if max_steps < 1:
            raise EnvError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self.step_timeout_s = step_timeout_s
        self._runner = _Runner()
        self._seed = 0
        self._started = False
        self._steps = 0
        self._done = False
        self._terminated = False
        self._truncated = False
        self._last: Observation | None = None
        self._actions: list[str] = []
        self._acc = 0.0

    # ---- hooks -------------------------------------------------------------------------
    def _start(self, seed: int) -> Outcome:
        raise NotImplementedError

    def _act(self, action: str) -> Outcome:
        raise NotImplementedError

    def _prepare(self, seed: int) -> None:
        """Untimed work before ``_start`` (generate or download-free build of a game file)."""

    def _kill(self) -> None:
        """Drop a backend that hung (kill its process); the next ``_start`` must rebuild it."""

    # ---- the Env API -------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return self._seed

    @property
    def actions_taken(self) -> tuple[str, ...]:
        """The actions sent since the last reset (what replay branching replays)."""
        return tuple(self._actions)

    def reset(self, *, seed: int | None = None) -> Observation:
        if seed is not None:
            if int(seed) < 0:
                raise EnvError(f"seed must be >= 0, got {seed}")
            self._seed = int(seed)
        self._started = False  # no episode until this reset succeeds
        self._prepare(self._seed)
        try:
            out = self._runner.call(lambda: self._start(self._seed), self.step_timeout_s)
        except StepTimeout as err:
            self._abandon()
            raise EnvError(f"{type(self).__name__}.reset(seed={self._seed}) hung: {err}; "
                           "raise step_timeout_s or check the backend") from None
        self._started = True
        self._steps = 0
        self._done = self._terminated = self._truncated = False
        self._actions = []
        self._acc = 0.0
        self._last = Observation(out.text, out.admissible, dict(out.info))
        return self._last

    def step(self, action: str) -> StepResult:
        if not self._started or self._last is None:
            raise EnvError(f"{type(self).__name__}.step() called before reset(); call env.reset(seed=...) first")
        action = "" if action is None else str(action)
        if self._done:
            info = {"invalid_action": True, "episode_over": True}
            return StepResult(self._last, 0.0, self._terminated, self._truncated, info)
        self._steps += 1
        self._actions.append(action)
        try:
            out = self._runner.call(lambda: self._act(action), self.step_timeout_s)
        except StepTimeout as err:
            self._abandon()
            reason = f"step timeout: {action!r} got {err}"
            self._done = self._truncated = True
            info = {"invalid_action": False, "failure": reason}
            obs = Observation(f"The environment stopped responding ({reason}).", None, info)
            self._last = obs
            return StepResult(obs, 0.0, False, True, info)
        info = {"invalid_action": bool(out.invalid), **dict(out.info)}
        terminated = bool(out.terminated)
        truncated = not terminated and (bool(out.truncated) or self._steps >= self.max_steps)
        if truncated and not out.truncated:
            info.setdefault("truncation", f"step limit {self.max_steps} reached")
        self._done = terminated or truncated
        self._terminated, self._truncated = terminated, truncated
        self._last = Observation(out.text, out.admissible, info)
        reward = float(out.reward) if out.total is None else exact_increment(self._acc, float(out.total))
        self._acc += reward
        return StepResult(self._last, reward, terminated, truncated, info)

    def close(self) -> None:
        self._runner.close()

    # ---- helpers for subclasses ----------------------------------------------------------
    def _abandon(self) -> None:
        try:
            self._kill()
        finally:
            self._runner = _Runner()

    def _bookkeeping(self) -> tuple[Any, ...]:
        """The base class's episode state (for subclasses that snapshot natively)."""
        return (self._seed, self._started, self._steps, self._done, self._terminated,
                self._truncated, self._last, tuple(self._actions), self._acc)

    def _restore_bookkeeping(self, state: Sequence[Any]) -> None:
        (self._seed, self._started, self._steps, self._done, self._terminated,
         self._truncated, self._last, actions, self._acc) = state
        self._actions = list(actions)


def exact_increment(acc: float, target: float) -> float:
    """The float ``r`` with ``acc + r == target`` exactly (the nearest one to ``target - acc``).

    Summing score differences in floating point drifts (0.1 + 0.2 != 0.3): a game won with
    the full score would total 0.9999999999999998 and not count as a success (reward >= 1).
    """
    r = target - acc
    for _ in range(64):
        total = acc + r
        if total == target:
            return r
        r = math.nextafter(r, math.inf if total < target else -math.inf)
    return target - acc
