"""The environment contract: the small API every adapter implements.

An :class:`Env` is a text environment bound to one task. Its docstrings are the spec;
``ttsearch.envs.check_env`` verifies an implementation against them.

    env = make("maze", layout_seed=7)           # or Task.make()
    obs = env.reset(seed=0)                     # Observation(text, admissible_actions, info)
    result = env.step("north")                  # StepResult(observation, reward, terminated, truncated, info)
    if env.supports_snapshot:
        snap = env.snapshot(); env.step("east"); env.restore(snap)   # branch

Actions are strings. ``step`` must accept *any* string: an action it cannot execute is answered
with the environment's own invalid-action feedback (``info["invalid_action"] = True``), never
an exception. ``terminated`` means the MDP reached a terminal state (goal, pit, task done);
``truncated`` means the episode was cut (step limit) while the state was not terminal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

SUCCESS_REWARD = 1.0
"""An episode succeeds when its total reward reaches this value (docs/design.md, "The paper's definitions": success = reward ≥ 1)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What the agent sees: the text, and the admissible actions where the env knows them."""

    text: str
    admissible_actions: tuple[str, ...] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one ``Env.step``."""

    observation: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass(frozen=True, slots=True)
class Task:
    """One episode to play: which environment (a registry spec), how to build it, how to seed it.

    ``Task.make()`` builds a fresh environment for this task; ``env.reset(seed=task.seed)``
    starts the episode. ``id`` is unique within ``env`` and stable across runs (results are
    keyed by it).
    """

    env: str
    id: str
    seed: int = 0
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    split: str = "test"

    def make(self) -> Env:
        from ttsearch.envs.registry import (
            make,  # the registry imports this module (a cycle at the top)
        )

        return make(self.env, **dict(self.kwargs))


@dataclass(frozen=True, slots=True)
class Step:
    """One agent turn: the observation it acted on, the action it took, and what came of it.

    ``action_text`` is the model's whole message; ``action`` is what was parsed from it and
    sent to the env (the raw text when parsing failed, so the env answers with its own
    invalid-action feedback and ``parse_error`` says why). Token-level fields hold the exact
    ids the policy generated for the *scored span* (the action tokens) with both models'
    log-probs of those ids in the context the policy saw.
    """

    observation: Observation
    action_text: str
    action: str
    result: StepResult
    action_token_ids: tuple[int, ...] = ()
    policy_logprobs: tuple[float, ...] = ()
    reference_logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[tuple[float, ...], ...] | None = None
    parse_error: str | None = None
    generated_token_ids: tuple[int, ...] = ()
    """Every token the policy generated this turn (span plus format/stop tokens): replayed
    verbatim when the history is rendered again, so the context stays token-exact."""
    scores: Mapping[str, float] = field(default_factory=dict)
    token_kl: tuple[float, ...] | None = None
    """Per action token j: KL(π_θ(·|s, y<j) ‖ π_ref(·|s, y<j)), the policy's divergence from its
    reference at that position (what the KL-centred progress advantage subtracts)."""
    decisive_span: tuple[int, int] | None = None
    """Token indices [start, end) of the action span that decide the action, as the parser
    located them; (0, 0) when the parser found nothing decisive (a parse error), None when it
    does not say."""

    @property
    def reward(self) -> float:
        return self.result.reward


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A whole episode: the task, the first observation, and the steps taken."""

    task: Task
    initial_observation: Observation
    steps: tuple[Step, ...] = ()
    system_prompt: str = ""

    @property
    def total_reward(self) -> float:
        return float(sum(step.reward for step in self.steps))

    @property
    def success(self) -> bool:
        return self.total_reward >= SUCCESS_REWARD

    @property
    def terminated(self) -> bool:
        return bool(self.steps) and self.steps[-1].result.terminated

    @property
    def truncated(self) -> bool:
        return bool(self.steps) and self.steps[-1].result.truncated

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    @property
    def observation(self) -> Observation:
        """The latest observation: where the next action is taken from."""
        return self.steps[-1].result.observation if self.steps else self.initial_observation

    def extended(self, step: Step) -> Trajectory:
        return Trajectory(self.task, self.initial_observation, (*self.steps, step), self.system_prompt)

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(step.action for step in self.steps)


class Env(ABC):
    """A text environment bound to one task (Gymnasium-style reset/step over strings).

    Subclasses implement ``reset`` and ``step``; they opt in to branching by overriding
    ``snapshot``/``restore`` (and ``supports_snapshot`` follows automatically), and declare
    ``deterministic = True`` when the same seed and the same actions always give the same
    observations and rewards (then search can branch by replaying from ``reset``).
    """

    metadata: ClassVar[Mapping[str, Any]] = {}
    deterministic: ClassVar[bool] = False
    """True when reset(seed) + the same actions reproduce the same episode exactly."""

    system_prompt: str = ""
    """Instructions for the agent: the task, the action format, the valid actions."""

    has_final_answer: ClassVar[bool] = False
    """True when an episode ends with a final answer: the last executed action (e.g. reasoning
    tasks' ``answer: 5``), which trajectory best-of-N can vote on (``selection="majority"``)."""

    action_parser: ClassVar[str | None] = None
    """The parser (``"package.module:Class"``) its messages need where a run config leaves the
    default ``parser: plain``: tool-calling envs read the whole message (``ToolCallParser``),
    which a first-line parser would cut to ``<tool_call>``."""

    max_steps: int | None = None
    """The turn limit after which the env truncates an episode itself, where it has one. Search
    controllers given ``horizon="auto"`` keep enough budget back to finish within it."""

    @abstractmethod
    def reset(self, *, seed: int | None = None) -> Observation:
        """Start (or restart) the episode; the same seed gives the same first observation."""

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Execute one action (any string; invalid ones get the env's feedback, not an error)."""

    def snapshot(self) -> Any:
        """Return an opaque copy of the whole env state (including its random generator)."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshot()")

    def restore(self, snapshot: Any) -> None:
        """Put the env back exactly into a state returned by ``snapshot``."""
        raise NotImplementedError(f"{type(self).__name__} does not support restore()")

    @property
    def supports_snapshot(self) -> bool:
        return type(self).snapshot is not Env.snapshot and type(self).restore is not Env.restore

    def gold_actions(self) -> Sequence[str] | None:
        """An expert action sequence that succeeds from ``reset(seed)``, where the env has one."""
        return None

    def close(self) -> None:
        """Release external resources (processes, files). Safe to call twice."""
