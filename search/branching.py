"""Branching an environment: step from any earlier state, by snapshot/restore or by replay.

    brancher = Brancher.open(env_factory, task, ledger, controller="beam")   # picks the mode
    obs, root = brancher.root()                    # reset(seed=task.seed)
    result, child = brancher.step(root, "north")   # from the root state
    result2, other = brancher.step(root, "east")   # back at the root: restore or replay

Modes: ``snapshot`` (the env's own ``snapshot()``/``restore()``) where supported, else
``replay`` (``reset(seed)`` and re-play the action prefix; needs ``env.deterministic``).
Replayed steps are env steps: they are charged to the ledger (and counted apart as
``replayed_steps``); a replay whose observation differs from the recorded one raises EnvError
(the env claimed determinism it does not have). An env with neither is refused with a
one-line EnvError naming the controllers that need no branching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError, EnvError, unknown_choice
from ttsearch.search.budget import Ledger

BRANCHING = ("auto", "snapshot", "replay")
NO_BRANCHING_CONTROLLERS = "greedy, step_best_of_n (no branching) or trajectory_best_of_n (reset only)"


@dataclass(frozen=True, slots=True)
class Handle:
    """A reachable env state: the actions from reset, the last observation text, a snapshot."""

    actions: tuple[str, ...]
    observation: str
    snapshot: Any = None
    done: bool = False


class Brancher:
    """Steps one env from any recorded state (see the module docstring)."""

    def __init__(self, env: Env, task: Task, ledger: Ledger, mode: str):
        self.env, self.task, self.ledger, self.mode = env, task, ledger, mode
        self._current: tuple[str, ...] | None = None  # the action prefix the env is in now

    @classmethod
    def open(cls, env_factory: Callable[[], Env], task: Task, ledger: Ledger, *, controller: str,
             branching: str = "auto") -> Brancher:
        if branching not in BRANCHING:
            raise ConfigError(unknown_choice("branching mode", branching, BRANCHING))
        env = env_factory()
        name = type(env).__name__
        if branching in ("auto", "snapshot") and env.supports_snapshot:
            return cls(env, task, ledger, "snapshot")
        if branching == "snapshot":
            env.close()
            raise EnvError(f"{controller}: branching='snapshot' but {name} has no snapshot()/restore(); "
                           "use branching='auto' or 'replay' (needs deterministic=True)")
        if getattr(env, "deterministic", False):
            return cls(env, task, ledger, "replay")
        env.close()
        raise EnvError(f"{controller} needs to branch the environment, but {name} has neither "
                       f"snapshot()/restore() nor deterministic=True (replay from reset); use "
                       f"{NO_BRANCHING_CONTROLLERS}, or implement snapshot/restore")

    def root(self) -> tuple[Observation, Handle]:
        obs = self.env.reset(seed=self.task.seed)
        self._current = ()
        return obs, Handle((), obs.text, self._snap())

    def _snap(self) -> Any:
        return self.env.snapshot() if self.mode == "snapshot" else None

    def cost(self, handle: Handle) -> int:
        """Worst-case env steps to take one action from ``handle`` (replay re-plays the prefix:
        even when the env stands at ``handle`` now, a sibling stepped first moves it away)."""
        return 1 if self.mode == "snapshot" else len(handle.actions) + 1

    def _goto(self, handle: Handle) -> None:
        if self._current == handle.actions:
            return
        if self.mode == "snapshot":
            self.env.restore(handle.snapshot)
            self._current = handle.actions
            return
        obs = self.env.reset(seed=self.task.seed)
        result = None
        for action in handle.actions:
            result = self.env.step(action)
            self.ledger.charge_env(1, replay=True)
        text = obs.text if result is None else result.observation.text
        if text != handle.observation:
            raise EnvError(f"{type(self.env).__name__} claims deterministic=True but replaying "
                           f"{len(handle.actions)} actions from reset(seed={self.task.seed}) gave a different "
                           "observation; set deterministic=False or implement snapshot/restore")
        self._current = handle.actions

    def step(self, handle: Handle, action: str) -> tuple[StepResult, Handle]:
        if handle.done:
            raise EnvError("cannot step from a finished episode state")  # a controller bug
        needed = 1 if self._current == handle.actions else self.cost(handle)
        if not self.ledger.can_step(needed):  # pragma: no cover - planning prevents it
            raise AssertionError("env step over budget: the controller did not plan for it")
        self._goto(handle)
        result = self.env.step(action)
        self.ledger.charge_env(1)
        actions = (*handle.actions, action)
        self._current = actions
        snap = None if result.done else self._snap()
        return result, Handle(actions, result.observation.text, snap, result.done)

    def close(self) -> None:
        self.env.close()
