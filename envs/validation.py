"""What an environment hands back, checked where it crosses into ttsearch.

    obs = check_observation(env.reset(seed=task.seed), env="keydoor", task="kd-0", where="reset(seed=0)")
    result = check_step_result(env.step(action), env="keydoor", task="kd-0", where="step 3 ('north')")

Both return their argument unchanged when it keeps the :class:`~ttsearch.envs.base.Env`
contract and raise a one-line :class:`EnvError` naming the env, the task, the call and the
field otherwise, so a malformed env fails at the boundary (an error row of ``ttsearch run``, a
failed check of ``check_env``) and never deep inside prompt rendering. The checks are the
contract's types, nothing more:

- ``Observation``: ``text`` is a ``str``; ``admissible_actions`` is None or a tuple of ``str``;
  ``info`` is a Mapping.
- ``StepResult``: its ``observation`` as above; ``reward`` a finite ``float``;
  ``terminated``/``truncated`` ``bool`` and never both True (truncated means cut while *not*
  terminal); ``info`` a Mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ttsearch.envs.base import Observation, StepResult
from ttsearch.envs.errors import EnvError


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _origin(env: str | None, task: str | None, where: str) -> str:
    parts = [f"env {env!r}" if env else "", f"task {task!r}" if task else "", where]
    return " ".join(p for p in parts if p)


def _fail(env: str | None, task: str | None, where: str, problem: str) -> EnvError:
    return EnvError(f"{_origin(env, task, where)}: {problem}")


def observation_problem(obs: Any, *, field: str = "Observation") -> str | None:
    """What is wrong with ``obs`` as an Observation (None when nothing is)."""
    if not isinstance(obs, Observation):
        return f"returned {type(obs).__name__} {_short(obs, 40)}, not an Observation"
    if not isinstance(obs.text, str):
        return (f"{field}.text is {type(obs.text).__name__} {_short(obs.text, 40)}, not str; "
                "render the observation as text")
    acts = obs.admissible_actions
    if acts is not None and not (isinstance(acts, tuple) and all(isinstance(a, str) for a in acts)):
        return f"{field}.admissible_actions must be None or a tuple of str, got {_short(acts)}"
    if not isinstance(obs.info, Mapping):
        return f"{field}.info is {type(obs.info).__name__}, not a Mapping"
    return None


def step_result_problem(result: Any) -> str | None:
    """What is wrong with ``result`` as a StepResult (None when nothing is)."""
    if not isinstance(result, StepResult):
        return f"returned {type(result).__name__} {_short(result, 40)}, not a StepResult"
    problem = observation_problem(result.observation, field="StepResult.observation")
    if problem is not None:
        return problem
    reward = result.reward
    if not isinstance(reward, float) or not math.isfinite(reward):
        return (f"StepResult.reward must be a finite float, got {type(reward).__name__} {reward!r}"
                + ("; return float(reward)" if isinstance(reward, int) and not isinstance(reward, bool) else ""))
    for flag in ("terminated", "truncated"):
        value = getattr(result, flag)
        if not isinstance(value, bool):
            return f"StepResult.{flag} must be a bool, got {type(value).__name__} {value!r}"
    if result.terminated and result.truncated:
        return ("StepResult.terminated and .truncated are both True; truncated means the episode was "
                "cut while the state was not terminal")
    if not isinstance(result.info, Mapping):
        return f"StepResult.info is {type(result.info).__name__}, not a Mapping"
    return None


def check_observation(obs: Any, *, env: str | None = None, task: str | None = None,
                      where: str = "reset") -> Observation:
    """``obs`` when it is a well-typed Observation; else a one-line EnvError (module docstring)."""
    problem = observation_problem(obs)
    if problem is not None:
        raise _fail(env, task, where, problem)
    return obs


def check_step_result(result: Any, *, env: str | None = None, task: str | None = None,
                      where: str = "step") -> StepResult:
    """``result`` when it is a well-typed StepResult; else a one-line EnvError (module docstring)."""
    problem = step_result_problem(result)
    if problem is not None:
        raise _fail(env, task, where, problem)
    return result
