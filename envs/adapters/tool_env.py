"""What the tool-calling benchmark adapters share: turn bookkeeping, parsing, tool timeouts.

    class MyBench(ToolCallingEnv):
        def reset(self, *, seed=None):
            self._start_episode()
            return Observation(first_user_message)
        def step(self, action):
            turn = self._begin_turn(action)                    # EnvError after done
            if isinstance(turn, str):                           # unreadable tool call
                return self._invalid(turn)
            value = self._call(lambda: tool(**args), what="tool get_x")   # ToolTimeout on a hang
            ...
            return self._result(obs, reward, terminated=..., info=...)    # max_turns -> truncated

An action is one assistant message in the :mod:`ttsearch.envs.adapters.tool_calls` format. A message
whose tool call cannot be read is answered with feedback (``info["invalid_action"] = True``)
and costs a turn. A tool call still running after ``step_timeout_s`` seconds ends the episode
as failed (reward 0, ``info["timeout"]`` says which call); the stuck call is left to finish in
a daemon thread, whose later writes only touch this finished episode's state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ttsearch.envs.adapters.tool_calls import EXPECTED, ParsedTurn, parse_turn
from ttsearch.envs.base import Env, Observation, StepResult
from ttsearch.envs.errors import ConfigError, EnvError, ParseError

T = TypeVar("T")


class ToolTimeout(EnvError):
    """A tool call did not return within the per-step timeout."""


def call_with_timeout(fn: Callable[[], T], timeout_s: float | None, *, what: str = "tool call") -> T:
    """``fn()``, or :class:`ToolTimeout` after ``timeout_s`` seconds (None: no limit)."""
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed back to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=run, name=f"ttsearch-{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ToolTimeout(f"{what} did not return within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class ToolCallingEnv(Env):
    """Base for adapters whose actions are assistant messages with tool calls."""

    deterministic = True
    action_parser = "ttsearch.agents.parsing:ToolCallParser"

    def __init__(self, *, max_turns: int | None, step_timeout_s: float | None):
        if max_turns is not None and max_turns < 1:
            raise ConfigError(f"max_turns must be >= 1 (or None), got {max_turns}")
        if step_timeout_s is not None and step_timeout_s <= 0:
            raise ConfigError(f"step_timeout_s must be > 0 (or None), got {step_timeout_s}")
        self.max_turns = max_turns
        self.max_steps = max_turns  # the Env contract's name for the turn limit
        self.step_timeout_s = step_timeout_s
        self._turns = 0
        self._done = True
        self._started = False

    # -- for subclasses --
    def _start_episode(self) -> None:
        self._turns, self._done, self._started = 0, False, True

    def _begin_turn(self, action: str) -> ParsedTurn | str:
        """Count the turn and parse it; a string is the feedback for an unreadable call."""
        if not self._started:
            raise EnvError(f"{type(self).__name__}.step() before reset(); call reset(seed=...) first")
        if self._done:
            raise EnvError(f"the {type(self).__name__} episode is over; call reset() to play again")
        self._turns += 1
        if not isinstance(action, str):
            return f"Invalid action: expected a text message, got {type(action).__name__}."
        try:
            return parse_turn(action)
        except ParseError as err:
            return (f"Error: your tool call could not be parsed ({err}). Call a function as "
                    f"{EXPECTED}, or answer in plain text without a tool call.")

    def _invalid(self, feedback: str, *, on_truncate: Callable[[], float] | None = None) -> StepResult:
        return self._result(Observation(feedback), 0.0, info={"invalid_action": True},
                            on_truncate=on_truncate)

    def _result(self, observation: Observation, reward: float, *, terminated: bool = False,
                truncated: bool = False, info: Mapping[str, Any] | None = None,
                on_truncate: Callable[[], float] | None = None) -> StepResult:
        """Wrap up a step; past ``max_turns`` a non-terminal step becomes truncated.

        ``on_truncate`` computes the benchmark's reward for an episode cut there (some
        benchmarks score the state reached at the limit; the default is no reward).
        """
        info = dict(info or {})
        if not terminated and self.max_turns is not None and self._turns >= self.max_turns:
            truncated = True
            info.setdefault("reason", f"max_turns={self.max_turns} reached")
            if on_truncate is not None:
                reward = on_truncate()
        if terminated or truncated:
            self._done = True
        info.setdefault("turn", self._turns)
        return StepResult(observation, float(reward), bool(terminated), bool(truncated and not terminated), info)

    def _timed_out(self, err: ToolTimeout, observation_text: str = "") -> StepResult:
        """End the episode as failed because a tool hung."""
        self._done = True
        text = observation_text or f"Error: {err}. The episode ended."
        return StepResult(Observation(text), 0.0, True, False,
                          {"timeout": str(err), "reason": f"tool timeout: {err}", "turn": self._turns})

    def _call(self, fn: Callable[[], T], *, what: str) -> T:
        return call_with_timeout(fn, self.step_timeout_s, what=what)
