"""The slippery maze: a small stochastic grid MDP with irreversible pits, solvable exactly.

    env = make("maze", layout_seed=7)        # one layout per seed; slip=0.1 by default
    obs = env.reset(seed=0)                  # seeds the slip generator
    env.step("north")                        # north | east | south | west

Each step the agent moves in the chosen direction with probability ``1 - slip`` and slips to
one of the two perpendicular directions with probability ``slip / 2`` each. Moving into a wall
or the border leaves it in place. Entering the goal ends the episode with reward 1; entering a
pit ends it with reward 0 (irreversible failure). After ``max_steps`` steps the episode is
truncated. Any other action text costs a step, leaves the agent in place, and is answered with
the invalid-action feedback (``invalid_feedback=False``: with the plain map instead, so that the
observation is a function of the cell alone and a history-free prompt stays Markov — the setting of
the SmolLM2 maze pair, whose reference says something other than a move most of the time).

The environment is the ground truth for Proposition 1 and for failure attribution:
``ttsearch.envs.maze.solver`` computes the exact optimal values and the exact KL-regularised
soft Q*/V*/A* of every layout. Layouts are split by a hash of their *content* (not their
seed), so a held-out (``split="test"``) layout never appears in training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import EnvError, unknown_choice
from ttsearch.envs.maze.layout import (
    ACTIONS,
    GOAL,
    MOVES,
    PIT,
    SPLITS,
    Layout,
    describe,
    generate_layout,
    transitions,
)
from ttsearch.envs.maze.solver import solve

SYSTEM_PROMPT = "Slippery maze: reach goal G, avoid pits O, walls # block. Reply with one word: north, east, south or west."


class SlipperyMaze(Env):
    """The slippery maze for one layout (see the module docstring)."""

    metadata = {"actions": ACTIONS}
    deterministic = True  # stochastic, but fully determined by reset(seed) + actions
    system_prompt = SYSTEM_PROMPT

    def __init__(self, layout_seed: int = 0, *, size: int = 5, slip: float = 0.1, n_walls: int = 3,
                 n_pits: int = 2, max_steps: int = 20, gamma: float = 0.95, layout: Layout | None = None,
                 invalid_feedback: bool = True):
        """``layout`` overrides the generated one (hand-made mazes); ``gamma`` is for the solvers."""
        if not 0.0 <= slip <= 1.0:
            raise EnvError(f"slip must be a probability in [0, 1], got {slip}")
        if max_steps < 1:
            raise EnvError(f"max_steps must be >= 1, got {max_steps}")
        if not 0.0 < gamma <= 1.0:
            raise EnvError(f"gamma must be in (0, 1], got {gamma}")
        self.layout_seed = layout_seed
        self._kwargs = dict(size=size, slip=slip, n_walls=n_walls, n_pits=n_pits, max_steps=max_steps,
                            gamma=gamma, layout=layout, invalid_feedback=invalid_feedback)
        self.layout = layout or generate_layout(layout_seed, size=size, n_walls=n_walls, n_pits=n_pits)
        self.slip, self.max_steps, self.gamma = slip, max_steps, gamma
        self.invalid_feedback = invalid_feedback
        self._rng = np.random.default_rng(0)
        self._pos = self.layout.start
        self._t = 0
        self._done = False

    @property
    def position(self) -> tuple[int, int]:
        return self._pos

    def _observation(self) -> Observation:
        return Observation(describe(self.layout, self._pos), admissible_actions=ACTIONS,
                           info={"position": self._pos, "t": self._t})

    def reset(self, *, seed: int | None = None) -> Observation:
        self._rng = np.random.default_rng(seed)
        self._pos, self._t, self._done = self.layout.start, 0, False
        return self._observation()

    def step(self, action: str) -> StepResult:
        if self._done:
            raise EnvError("step() called after the episode ended; call reset() first")
        self._t += 1
        move = action.strip().lower()
        info: dict[str, Any] = {}
        if move in MOVES:
            intended = transitions(self.layout, self._pos, move, 0.0)[0][1]
            outcomes = transitions(self.layout, self._pos, move, self.slip)
            index = self._rng.choice(len(outcomes), p=[p for p, _ in outcomes])
            self._pos = outcomes[index][1]
            info["slipped"] = self._pos != intended
        else:
            info["invalid_action"] = True
        cell = self.layout.cell(self._pos)
        terminated = cell in (GOAL, PIT)
        reward = 1.0 if cell == GOAL else 0.0
        truncated = not terminated and self._t >= self.max_steps
        self._done = terminated or truncated
        observation = self._observation()
        if info.get("invalid_action") and self.invalid_feedback:
            observation = Observation(
                f"Invalid action {action.strip()[:40]!r}. Valid actions: {', '.join(ACTIONS)}.\n" + observation.text,
                admissible_actions=ACTIONS, info=observation.info,
            )
        info["cell"] = cell
        return StepResult(observation, reward, terminated, truncated, info)

    def snapshot(self) -> Any:
        return (self._pos, self._t, self._done, self._rng.bit_generator.state)

    def restore(self, snapshot: Any) -> None:
        self._pos, self._t, self._done, rng_state = snapshot
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = rng_state

    def gold_actions(self) -> Sequence[str] | None:
        """Play the optimal policy from reset(seed=0) (the slips are part of that seed)."""

        solution = solve(self.layout, slip=self.slip, gamma=self.gamma)
        replay = SlipperyMaze(self.layout_seed, **self._kwargs)
        replay.reset(seed=0)
        actions: list[str] = []
        while len(actions) < self.max_steps:
            action = solution.optimal_action(replay.position)
            actions.append(action)
            result = replay.step(action)
            if result.done:
                return actions if result.reward >= 1.0 else None
        return None


def maze_tasks(*, split: str = "test", start: int = 0, episode_seed: int = 0, **kwargs: Any) -> Iterator[Task]:
    """Layouts of one split, in seed order (endless): ``Task(env="maze", id="maze-<seed>")``."""
    if split not in SPLITS:
        raise EnvError(unknown_choice("maze split", split, SPLITS))
    geometry = {k: kwargs[k] for k in ("size", "n_walls", "n_pits") if k in kwargs}
    seed = start
    while True:
        if generate_layout(seed, **geometry).split == split:
            yield Task(env="maze", id=f"maze-{seed}", seed=episode_seed + seed,
                       kwargs={"layout_seed": seed, **kwargs}, split=split)
        seed += 1
