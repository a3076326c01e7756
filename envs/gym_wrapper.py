"""Adapt a Gymnasium environment with text observations (or converters) to a ttsearch Env.

    import gymnasium as gym
    from ttsearch.envs import GymTextEnv, check_env

    env = GymTextEnv(
        MyGymEnv(),                                   # any gymnasium.Env
        action_to_gym={"left": 0, "right": 1}.__getitem__,   # str -> gym action (raise = invalid)
        obs_to_text=lambda obs: f"position {obs}",    # gym obs -> str (omit when obs is str)
        system_prompt="Answer left or right.",
        deterministic=True,                           # same seed + actions -> same episode
    )
    assert check_env(env).passed

Behaviour:

- ``reset(seed)`` calls ``gym_env.reset(seed=seed)``. ``step(text)`` converts the text with
  ``action_to_gym`` (default: the text itself; for a ``Discrete`` action space, a decimal
  integer). When the converter raises or the result is outside ``action_space``, the gym env
  is *not* stepped: the agent gets invalid-action feedback (``info["invalid_action"] = True``),
  reward 0, the previous state, and no step is consumed.
- Gymnasium lets a time limit flag a terminal step as truncated too; the ttsearch contract
  keeps them apart, so ``terminated`` wins and ``truncated`` is reported False.
- ``step`` after the episode ended raises :class:`EnvError` (call ``reset``).
- ``snapshot``/``restore`` deep-copy the gym env, which copies its ``np_random`` generator, so
  stochastic outcomes replay exactly. Envs that cannot be deep-copied (open processes,
  sockets) report ``supports_snapshot == False`` and branch by replay instead.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ttsearch.envs.base import Env, Observation, StepResult
from ttsearch.envs.errors import EnvError


class GymTextEnv(Env):
    """A ttsearch :class:`Env` over a ``gymnasium.Env`` (see the module docstring)."""

    def __init__(self, gym_env: Any, *, action_to_gym: Callable[[str], Any] | None = None,
                 obs_to_text: Callable[[Any], str] | None = None, system_prompt: str = "",
                 deterministic: bool = False,
                 admissible_actions: Callable[[Any, Mapping[str, Any]], Sequence[str] | None] | None = None,
                 gold_actions: Sequence[str] | None = None) -> None:
        for method in ("reset", "step"):
            if not callable(getattr(gym_env, method, None)):
                raise EnvError(f"GymTextEnv needs a gymnasium.Env with reset() and step(); "
                               f"{type(gym_env).__name__} has no {method}()")
        self.gym_env = gym_env
        self.action_to_gym = action_to_gym
        self.obs_to_text = obs_to_text
        self.system_prompt = system_prompt
        self.deterministic = deterministic  # per instance: it depends on the wrapped env
        self._admissible = admissible_actions
        self._gold = tuple(gold_actions) if gold_actions is not None else None
        self.metadata = dict(getattr(gym_env, "metadata", None) or {})
        self._last: Observation | None = None
        self._done = False
        self._snapshot_ok: bool | None = None
        self._closed = False

    @property
    def name(self) -> str:
        spec = getattr(self.gym_env, "spec", None)
        return getattr(spec, "id", None) or type(getattr(self.gym_env, "unwrapped", self.gym_env)).__name__

    # -- conversions --
    def _observation(self, raw: Any, info: Mapping[str, Any]) -> Observation:
        if self.obs_to_text is not None:
            text = self.obs_to_text(raw)
        elif isinstance(raw, str):
            text = raw
        else:
            raise EnvError(f"{self.name} observations are {type(raw).__name__}, not str; "
                           "pass obs_to_text=... to GymTextEnv")
        if not isinstance(text, str):
            raise EnvError(f"obs_to_text returned {type(text).__name__}, not str")
        actions = self._admissible(raw, info) if self._admissible is not None else None
        return Observation(text, tuple(actions) if actions is not None else None, dict(info))

    def _convert_action(self, action: str) -> Any:
        """The gym action for ``action``; raises ValueError when it is not a valid action."""
        space = getattr(self.gym_env, "action_space", None)
        if self.action_to_gym is not None:
            gym_action = self.action_to_gym(action)
        elif type(space).__name__ == "Discrete":
            text = action.strip()
            if not text.lstrip("-").isdigit():
                raise ValueError(f"expected an integer action, got {action.strip()[:40]!r}")
            gym_action = int(text)
        else:
            gym_action = action
        if space is not None and hasattr(space, "contains") and not space.contains(gym_action):
            raise ValueError(f"{gym_action!r} is not in the action space {space}")
        return gym_action

    # -- Env API --
    def reset(self, *, seed: int | None = None) -> Observation:
        raw, info = self.gym_env.reset(seed=seed)
        self._last = self._observation(raw, info or {})
        self._done = False
        return self._last

    def step(self, action: str) -> StepResult:
        if self._last is None:
            raise EnvError(f"{self.name}: step() called before reset()")
        if self._done:
            raise EnvError(f"{self.name}: step() called after the episode ended; call reset() first")
        try:
            gym_action = self._convert_action(action)
        except Exception as err:  # any converter failure is the agent's invalid action
            reason = f"{type(err).__name__}: {err}"
            text = f"Invalid action {action.strip()[:40]!r} ({reason}).\n{self._last.text}"
            feedback = Observation(text, self._last.admissible_actions, self._last.info)
            return StepResult(feedback, 0.0, False, False, {"invalid_action": True, "error": reason})
        raw, reward, terminated, truncated, info = self.gym_env.step(gym_action)
        terminated = bool(terminated)
        truncated = bool(truncated) and not terminated
        reward = float(reward)
        if not math.isfinite(reward):
            raise EnvError(f"{self.name} returned a non-finite reward {reward}")
        self._last = self._observation(raw, info or {})
        self._done = terminated or truncated
        return StepResult(self._last, reward, terminated, truncated, dict(info or {}))

    @property
    def supports_snapshot(self) -> bool:
        if self._snapshot_ok is None:
            try:
                copy.deepcopy(self.gym_env)
                self._snapshot_ok = True
            except Exception:
                self._snapshot_ok = False
        return self._snapshot_ok

    def snapshot(self) -> Any:
        try:
            return (copy.deepcopy(self.gym_env), self._last, self._done)
        except Exception as err:
            raise EnvError(f"{self.name} cannot be deep-copied ({err}); branch by replay instead") from err

    def restore(self, snapshot: Any) -> None:
        gym_env, self._last, self._done = snapshot
        # Copy again so the same snapshot can be restored many times.
        self.gym_env = copy.deepcopy(gym_env)

    def gold_actions(self) -> Sequence[str] | None:
        return self._gold

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.gym_env.close()
