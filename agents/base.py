"""The model-engine contract: what search needs from an LLM, in token ids.

A :class:`Backend` serves one model. Everything is token ids in, token ids and log-probs out,
so that the ids the policy generated are exactly the ids the reference scores (docs/design.md, "Engines").

    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=0, top_logprobs=20)
    samples = policy.sample([prompt_ids], n=8, params=params)[0]    # 8 Samples from one prefix
    scores = reference.score([ScoreRequest(prompt_ids, s.token_ids) for s in samples])

Implementations: ``TransformersBackend`` (embedded, CPU/GPU) and ``SGLangBackend`` (server or
in-process engine). Both report their work in :class:`EngineStats` so the search budget ledger
is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ttsearch.envs.base import Observation, Step, StepResult, Trajectory
from ttsearch.envs.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample continuations. ``seed`` makes sampling reproducible per request."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    top_logprobs: int = 0
    """Also return the top-k log-probs at each generated position (certainty baselines)."""
    full_logprobs: bool = False
    """Also return each generated position's whole log-prob row over the vocabulary (what an
    exact per-token KL needs); only engines with ``supports_full_logprobs`` can."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.top_logprobs < 0:
            raise ConfigError("top_k and top_logprobs must be >= 0")


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated continuation.

    ``token_ids`` include the stop token when generation stopped on one (``finish_reason ==
    "stop"``). ``logprobs[i]`` is log p(token_ids[i] | prefix, token_ids[:i]) under the model's
    unmodified distribution (temperature 1, no truncation), whatever the sampling settings.
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    top_logprobs: tuple[tuple[float, ...], ...] | None = None
    finish_reason: str = "stop"  # "stop" | "length"
    full_logprobs: Any = None
    """With ``SamplingParams(full_logprobs=True)``: a float32 numpy array [len(token_ids),
    vocab] of log-probs (row i: the model's whole distribution at generated position i)."""


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """Score ``continuation_ids`` given ``prefix_ids`` (teacher forcing)."""

    prefix_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    top_logprobs: int = 0
    full_logprobs: bool = False
    """Also return every continuation position's whole log-prob row (``TokenScores.full_logprobs``);
    only engines with ``supports_full_logprobs`` can."""


@dataclass(frozen=True, slots=True)
class TokenScores:
    """Per-token log-probs of a scored continuation (same length as the continuation)."""

    logprobs: tuple[float, ...]
    top_logprobs: tuple[tuple[float, ...], ...] | None = None
    full_logprobs: Any = None
    """With ``ScoreRequest(full_logprobs=True)``: a float32 numpy array [len(continuation),
    vocab] of log-probs (the model's whole distribution at each continuation position)."""


@dataclass(slots=True)
class EngineStats:
    """Cumulative work done by an engine; the search budget ledger reads deltas of it."""

    calls: int = 0
    generated_tokens: int = 0
    scored_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0
    evictions: int = 0
    cache_bytes: int = 0

    def snapshot(self) -> EngineStats:
        return EngineStats(**{name: getattr(self, name) for name in self.__slots__})

    def add(self, other: EngineStats) -> None:
        """Add ``other``'s counts (``cache_bytes`` is a level, not a count: it is left alone)."""
        for name in self.__slots__:
            if name != "cache_bytes":
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def minus(self, earlier: EngineStats) -> EngineStats:
        return EngineStats(
            **{name: getattr(self, name) - getattr(earlier, name) for name in self.__slots__}
        )


@runtime_checkable
class Backend(Protocol):
    """One model behind an engine. All methods are batched: one call, many requests."""

    name: str
    stats: EngineStats

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Token ids that end an assistant turn."""
        ...

    @property
    def supports_top_logprobs(self) -> bool: ...

    @property
    def has_prefix_cache(self) -> bool: ...

    @property
    def supports_full_logprobs(self) -> bool:
        """Whether ``SamplingParams(full_logprobs=True)`` and ``ScoreRequest(full_logprobs=True)``
        are served: whole log-prob rows, in-process (the exact per-token KL reads them)."""
        ...

    def sample(
        self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams,
        stats: EngineStats | None = None,
    ) -> list[list[Sample]]:
        """For each prompt, draw ``n`` continuations (one shared prefix, batched). The call's
        own cost is added to ``stats`` when given (and to ``self.stats`` always)."""
        ...

    def score(self, requests: Sequence[ScoreRequest], *, stats: EngineStats | None = None) -> list[TokenScores]:
        """Log-probs of each continuation given its prefix, batched; cost added to ``stats``."""
        ...

    def clear_cache(self) -> None:
        """Drop every cached prefix (after a weight update, or to start cold)."""
        ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """A candidate action for one state: the policy's sample, parsed, with both models' scores.

    Scorers read ``policy_logprobs``, ``reference_logprobs`` and ``top_logprobs`` over the
    *scored span* (``action_token_ids``: the action tokens, without the turn's stop token).
    """

    action_text: str
    action: str
    action_token_ids: tuple[int, ...]
    policy_logprobs: tuple[float, ...]
    reference_logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[tuple[float, ...], ...] | None = None
    parse_error: str | None = None
    generated_token_ids: tuple[int, ...] = ()
    """Everything the policy generated for this turn (the span plus stop/format tokens)."""
    extra: dict = field(default_factory=dict, compare=False)
    token_kl: tuple[float, ...] | None = None
    """Per span token: KL(π_θ ‖ π_ref) of the two models' next-token distributions there
    (``Agent.propose(..., token_kl=True)``)."""
    decisive_span: tuple[int, int] | None = None
    """[start, end) token indices within the span that decide the action, as the parser says
    (``Agent.propose(..., decisive_spans=True)``); (0, 0): nothing decisive; None: unknown."""


@runtime_checkable
class Proposer(Protocol):
    """Turns states into scored candidate actions: what every search controller calls.

    ``ttsearch.agents.Agent`` implements it over a ``ModelPair``: it renders each state (a
    partial :class:`~ttsearch.envs.Trajectory`) to token ids with the chat template, samples
    ``k`` continuations per state from the policy in one batched call, scores all of them
    with the reference in one batched call (when ``score_reference``), and parses each into
    an env action. Deterministic for a given ``seed``.
    """

    @property
    def max_new_tokens(self) -> int:
        """Upper bound on generated tokens per candidate (controllers budget with it)."""
        ...

    @property
    def policy_stats(self) -> EngineStats: ...

    @property
    def reference_stats(self) -> EngineStats | None: ...

    def propose(
        self,
        states: Sequence[Trajectory],
        *,
        k: int,
        seed: int,
        greedy: bool = False,
        score_reference: bool = True,
        top_logprobs: int = 0,
        token_kl: bool = False,
        decisive_spans: bool = False,
    ) -> list[list[Candidate]]:
        """``k`` candidates for each state (``greedy``: one argmax decode per state);
        ``token_kl`` / ``decisive_spans`` fill those candidate fields (a scorer that
        ``requires`` them asks; search passes them only then)."""
        ...


def step_from_candidate(observation: Observation, candidate: Candidate, result: StepResult) -> Step:
    """Record an executed candidate as a trajectory :class:`Step` (all token data kept)."""
    return Step(
        observation=observation,
        action_text=candidate.action_text,
        action=candidate.action,
        result=result,
        action_token_ids=candidate.action_token_ids,
        policy_logprobs=candidate.policy_logprobs,
        reference_logprobs=candidate.reference_logprobs,
        top_logprobs=candidate.top_logprobs,
        parse_error=candidate.parse_error,
        generated_token_ids=candidate.generated_token_ids,
        token_kl=candidate.token_kl,
        decisive_span=candidate.decisive_span,
    )
