"""Compute budget, exact usage ledger, and the rule that no controller ever exceeds a limit.

    budget = Budget(tokens=384, env_steps=200)     # tokens = generated + scored; None = unlimited
    budget = Budget.parse("generated_tokens=256,wall_seconds=30")  # CLI form
    ledger = Ledger(agent, budget, scores_reference=True)
    allowance = ledger.afford(n_states=4, k=8)      # the biggest batch that fits, worst case
    if not allowance:                               # nothing fits: stop with allowance.limit
        ...
    usage = ledger.usage()                          # exact: deltas of the engines' EngineStats

How "never exceed" is kept: before every batched ``propose`` the controller asks
:meth:`Ledger.afford` for the batch it wants. The worst case of one call is charged up front —
``states × k × max_new_tokens`` generated tokens, as many scored tokens when the reference
scores the candidates (both count toward ``tokens``), one model call for sampling plus one for scoring, and the env steps the
caller declares — and the batch is shrunk (fewer candidates per state first, then fewer
states) until that worst case fits what is left. Token, call and env-step limits are therefore
never exceeded. ``wall_seconds`` is checked before each call; a call already running is not
interrupted, so the wall limit can be overrun by at most one call.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from ttsearch.agents.base import EngineStats, Proposer
from ttsearch.envs.errors import ConfigError, unknown_choice

LIMITS = ("tokens", "generated_tokens", "scored_tokens", "model_calls", "env_steps", "wall_seconds")
_COUNTS = LIMITS[:-1]


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-search limits; ``None`` means unlimited. ``tokens`` caps generated + scored tokens
    together (the compute the benchmarks compare at "equal token budget")."""

    tokens: int | None = None
    generated_tokens: int | None = None
    scored_tokens: int | None = None
    model_calls: int | None = None
    env_steps: int | None = None
    wall_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"budget {name} must be an int >= 0 or None (unlimited), got {value!r}")
        wall = self.wall_seconds
        if wall is not None and (isinstance(wall, bool) or not isinstance(wall, (int, float))
                                 or not math.isfinite(wall) or wall <= 0):
            raise ConfigError(f"budget wall_seconds must be a finite number > 0 or None, got {wall!r}")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``"generated_tokens=256,env_steps=100"`` -> Budget (an empty string: unlimited)."""
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, raw = item.partition("=")
            name = name.strip()
            if not sep:
                raise ConfigError(f"budget item {item!r} must look like name=value, e.g. generated_tokens=256")
            if name not in LIMITS:
                raise ConfigError(unknown_choice("budget limit", name, LIMITS))
            try:
                values[name] = float(raw) if name == "wall_seconds" else int(raw)
            except ValueError:
                raise ConfigError(f"budget {name} must be a number, got {raw.strip()!r}") from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def check_feasible(self, *, max_new_tokens: int, scores_reference: bool, env_steps: int = 1) -> None:
        """Raise a one-line ConfigError when not even the smallest call (one state, one
        candidate) fits: such a search could not take a single step."""
        need = {
            "tokens": max_new_tokens * (2 if scores_reference else 1),
            "generated_tokens": max_new_tokens,
            "scored_tokens": max_new_tokens if scores_reference else 0,
            "model_calls": 2 if scores_reference else 1,
            "env_steps": env_steps,
        }
        for name, minimum in need.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                why = {
                    "tokens": f"one candidate may generate max_new_tokens={max_new_tokens}"
                              + (" and have as many scored" if scores_reference else ""),
                    "generated_tokens": f"one candidate may generate max_new_tokens={max_new_tokens}",
                    "scored_tokens": f"the reference scores up to max_new_tokens={max_new_tokens} per candidate",
                    "model_calls": "one proposal is a policy call" + (" plus a reference call" if scores_reference else ""),
                    "env_steps": "acting once takes an env step",
                }[name]
                raise ConfigError(f"impossible budget: {name}={value} is smaller than one call ({why}); "
                                  f"raise it to at least {minimum}" + (" or lower max_new_tokens" if "tokens" in name else ""))


@dataclass(frozen=True, slots=True)
class Usage:
    """What one search used, exactly (engine counters are deltas of ``EngineStats``)."""

    generated_tokens: int = 0
    scored_tokens: int = 0
    model_calls: int = 0
    env_steps: int = 0
    wall_seconds: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0
    replayed_steps: int = 0
    """Env steps spent re-playing an action prefix to branch (included in ``env_steps``)."""
    proposals: int = 0
    candidates: int = 0

    @property
    def tokens(self) -> int:
        """Generated plus reference-scored tokens: the compute the benchmarks compare."""
        return self.generated_tokens + self.scored_tokens

    def exceeded(self, budget: Budget, *, include_wall: bool = False) -> list[str]:
        """Names of the limits this usage is over (wall time only when asked)."""
        names = LIMITS if include_wall else _COUNTS
        return [n for n in names if getattr(budget, n) is not None and getattr(self, n) > getattr(budget, n)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokens"] = self.tokens
        return out

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(Usage)})


@dataclass(frozen=True, slots=True)
class Allowance:
    """The batch a controller may send: ``states`` states × ``k`` candidates (0 = nothing fits).

    ``limit`` names the budget limit that forced a smaller batch (or refused it); None when
    the whole request fits.
    """

    states: int
    k: int
    limit: str | None = None

    def __bool__(self) -> bool:
        return self.states > 0

    @property
    def shrunk(self) -> bool:
        return self.limit is not None and self.states > 0


class Ledger:
    """The exact, mutable meter of one search (see the module docstring)."""

    def __init__(self, agent: Proposer, budget: Budget, *, scores_reference: bool):
        self.agent = agent
        self.budget = budget
        self.scores_reference = scores_reference
        self.max_new_tokens = int(agent.max_new_tokens)
        if self.max_new_tokens < 1:
            raise ConfigError(f"the agent's max_new_tokens must be >= 1, got {self.max_new_tokens}")
        self._policy0 = agent.policy_stats.snapshot()
        ref = agent.reference_stats
        # One engine serving both roles must be counted once.
        self._ref_is_policy = ref is None or ref is agent.policy_stats
        self._ref0 = None if self._ref_is_policy else ref.snapshot()
        self.env_steps = 0
        self.replayed_steps = 0
        self.proposals = 0
        self.candidates = 0
        self._start = time.perf_counter()

    # -- measuring ------------------------------------------------------------------------
    def engine_delta(self) -> EngineStats:
        delta = self.agent.policy_stats.minus(self._policy0)
        if not self._ref_is_policy:
            ref = self.agent.reference_stats.minus(self._ref0)
            delta = EngineStats(**{n: getattr(delta, n) + getattr(ref, n) for n in EngineStats.__slots__})
        return delta

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def usage(self) -> Usage:
        d = self.engine_delta()
        return Usage(
            generated_tokens=d.generated_tokens, scored_tokens=d.scored_tokens, model_calls=d.calls,
            env_steps=self.env_steps, wall_seconds=self.elapsed(), prompt_tokens=d.prompt_tokens,
            cached_tokens=d.cached_tokens, computed_tokens=d.computed_tokens,
            replayed_steps=self.replayed_steps, proposals=self.proposals, candidates=self.candidates,
        )

    def remaining(self, name: str) -> float:
        limit = getattr(self.budget, name)
        if limit is None:
            return math.inf
        if name == "wall_seconds":
            return limit - self.elapsed()
        if name == "env_steps":
            return limit - self.env_steps
        d = self.engine_delta()
        used = {"tokens": d.generated_tokens + d.scored_tokens, "generated_tokens": d.generated_tokens,
                "scored_tokens": d.scored_tokens, "model_calls": d.calls}[name]
        return limit - used

    # -- planning -------------------------------------------------------------------------
    def _first_violation(self, states: int, per_state: int, env_per_state: int, env_per_candidate: int,
                         room: dict[str, float]) -> str | None:
        cands = states * per_state
        cost = {
            "tokens": cands * self.max_new_tokens * (2 if self.scores_reference else 1),
            "model_calls": 2 if self.scores_reference else 1,
            "generated_tokens": cands * self.max_new_tokens,
            "scored_tokens": cands * self.max_new_tokens if self.scores_reference else 0,
            "env_steps": states * env_per_state + cands * env_per_candidate,
        }
        for name in ("model_calls", "tokens", "generated_tokens", "scored_tokens", "env_steps"):
            if cost[name] > room[name]:
                return name
        return None

    def afford(self, n_states: int, k: int, *, greedy: bool = False, env_per_state: int = 0,
               env_per_candidate: int = 0, env_reserved: int = 0, reserve_steps: int = 0) -> Allowance:
        """The largest batch ``<= n_states × k`` whose worst case fits (module docstring).

        ``env_per_state``/``env_per_candidate`` are the env steps the caller will take after
        the call (e.g. 1 per state to execute one chosen action, or the branching cost per
        candidate to execute them all); ``env_reserved`` are steps already promised to earlier
        candidates not yet executed. Greedy proposals make one candidate per state.

        ``reserve_steps`` keeps back the worst case of that many one-candidate turns (tokens,
        calls, one env step each) so the episode can still be finished after this call; when
        not even one candidate fits beside the reserve, one candidate is allowed from it.
        """
        if reserve_steps > 0:
            per_step = self._step_cost()
            kept = self._afford(n_states, k, greedy, env_per_state, env_per_candidate,
                                env_reserved, {n: reserve_steps * c for n, c in per_step.items()})
            if kept:
                return kept
            one = self._afford(1, 1, greedy, env_per_state, env_per_candidate, env_reserved, {})
            return Allowance(one.states, one.k, one.limit or kept.limit) if one else one
        return self._afford(n_states, k, greedy, env_per_state, env_per_candidate, env_reserved, {})

    def _step_cost(self) -> dict[str, int]:
        """Worst case of one one-candidate turn."""
        ref = 1 if self.scores_reference else 0
        return {"tokens": self.max_new_tokens * (1 + ref), "generated_tokens": self.max_new_tokens,
                "scored_tokens": self.max_new_tokens * ref, "model_calls": 1 + ref, "env_steps": 1}

    def _afford(self, n_states: int, k: int, greedy: bool, env_per_state: int, env_per_candidate: int,
                env_reserved: int, reserve: dict[str, int]) -> Allowance:
        if n_states <= 0:
            return Allowance(0, 0, None)
        if self.remaining("wall_seconds") <= 0:
            return Allowance(0, 0, "wall_seconds")
        room = {n: self.remaining(n) - reserve.get(n, 0) for n in _COUNTS}
        room["env_steps"] -= env_reserved
        per = 1 if greedy else max(1, k)
        first = self._first_violation(n_states, per, env_per_state, env_per_candidate, room)
        if first is None:
            return Allowance(n_states, per)
        if self._first_violation(1, 1, env_per_state, env_per_candidate, room) is not None:
            return Allowance(0, 0, self._first_violation(1, 1, env_per_state, env_per_candidate, room))
        # Fewer candidates per state first (keep every state), then fewer states.
        for kk in range(per - 1, 0, -1):
            if self._first_violation(n_states, kk, env_per_state, env_per_candidate, room) is None:
                return Allowance(n_states, kk, first)
        for ss in range(n_states - 1, 0, -1):
            if self._first_violation(ss, 1, env_per_state, env_per_candidate, room) is None:
                return Allowance(ss, 1, first)
        return Allowance(1, 1, first)  # unreachable: (1, 1) fits, checked above

    def can_step(self, n: int = 1) -> bool:
        return self.remaining("env_steps") >= n

    def charge_env(self, n: int = 1, *, replay: bool = False) -> None:
        self.env_steps += n
        if replay:
            self.replayed_steps += n

    def check_within(self) -> None:
        """Internal invariant: the worst-case planning makes this impossible to trip."""
        over = self.usage().exceeded(self.budget)
        if over:  # pragma: no cover - a bug in a controller, not a user error
            raise AssertionError(f"search exceeded its budget on {over}: {self.usage()}")
