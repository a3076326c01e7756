"""What an env returns, checked at the boundary: one line naming the env, task and field.

    validate_observation(env.reset(seed=0), where="maze/maze-1 reset()")
    validate_step_result(env.step("north"), where="maze/maze-1 step(3)")

A malformed value (a non-string observation text, a NaN reward, both ``terminated`` and
``truncated``) raises :class:`MalformedOutput` (an :class:`EnvError`) here, instead of failing
deep inside prompt rendering or a scorer. ``check_env`` and the run's env guard use these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ttsearch.envs.base import Observation, StepResult
from ttsearch.envs.errors import EnvError


class MalformedOutput(EnvError):
    """An env returned a value that breaks the Env contract (``envs/base.py``)."""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_observation(obs: Any, *, where: str) -> Observation:
    """``obs`` if it is a well-formed Observation, else MalformedOutput naming the field."""
    if not isinstance(obs, Observation):
        raise MalformedOutput(f"{where} returned {type(obs).__name__}, not an Observation")
    if not isinstance(obs.text, str):
        raise MalformedOutput(f"{where}: Observation.text is {type(obs.text).__name__}, not str")
    acts = obs.admissible_actions
    if acts is not None and not (isinstance(acts, tuple) and all(isinstance(a, str) for a in acts)):
        raise MalformedOutput(f"{where}: admissible_actions must be None or a tuple of str, got {_short(acts)}")
    if not isinstance(obs.info, Mapping):
        raise MalformedOutput(f"{where}: Observation.info is {type(obs.info).__name__}, not a Mapping")
    return obs


def validate_step_result(result: Any, *, where: str) -> StepResult:
    """``result`` if it is a well-formed StepResult, else MalformedOutput naming the field."""
    if not isinstance(result, StepResult):
        raise MalformedOutput(f"{where} returned {type(result).__name__}, not a StepResult")
    validate_observation(result.observation, where=where)
    if isinstance(result.reward, bool) or not isinstance(result.reward, (int, float)) \
            or not math.isfinite(result.reward):
        raise MalformedOutput(f"{where}: reward must be a finite float, got "
                              f"{type(result.reward).__name__} {result.reward!r}")
    for flag in ("terminated", "truncated"):
        value = getattr(result, flag)
        if not isinstance(value, bool):
            raise MalformedOutput(f"{where}: {flag} must be a bool, got {type(value).__name__} {value!r}")
    if result.terminated and result.truncated:
        raise MalformedOutput(f"{where}: terminated and truncated are both True; truncated means the "
                              "episode was cut while the state was not terminal")
    if not isinstance(result.info, Mapping):
        raise MalformedOutput(f"{where}: StepResult.info is {type(result.info).__name__}, not a Mapping")
    return result
