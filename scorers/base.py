"""The scorer contract: a number for a candidate step, and one for a whole trajectory.

A scorer reads only token-level data already produced by the engines (one pass per model), so
every baseline costs nothing extra:

    scorer = make_scorer("progress_advantage", beta=1.0, token_agg="mean", step_agg="mean")
    step_score = scorer.score_step(candidate)          # Candidate or Step
    traj_score = scorer.score_trajectory(trajectory.steps)

Higher is better for every scorer. ``requires`` says which fields must be present
("reference_logprobs", "top_logprobs", "token_kl", "decisive_span"); search asks the engines
for exactly those.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from ttsearch.envs.errors import BackendError, ConfigError
from ttsearch.scorers.aggregation import aggregate_steps


@runtime_checkable
class TokenData(Protocol):
    """What a scorer reads: satisfied by both ``agents.Candidate`` and ``envs.Step``."""

    @property
    def policy_logprobs(self) -> tuple[float, ...]: ...

    @property
    def reference_logprobs(self) -> tuple[float, ...] | None: ...

    @property
    def top_logprobs(self) -> tuple[tuple[float, ...], ...] | None: ...


TOKEN_FIELDS = ("reference_logprobs", "top_logprobs", "token_kl", "decisive_span")
"""The optional token fields a scorer may require (plus "text" for reward models)."""


@runtime_checkable
class Scorer(Protocol):
    """Scores steps and trajectories; higher means more likely to lead to success.

    What a scorer needs from the engines is declared, so search asks for exactly that:
    ``requires`` names the optional token fields it reads (:data:`TOKEN_FIELDS`;
    "text" for reward models), ``top_logprobs`` how many top log-probs per
    token (0 when none), and ``scores_candidates`` whether it can score a bare candidate step
    (False for reward models, which read the whole trajectory).
    """

    name: str
    requires: frozenset[str]
    top_logprobs: int
    scores_candidates: bool

    def score_step(self, step: TokenData) -> float:
        """Score one step (one assistant turn) from its action tokens' data."""
        ...

    def score_trajectory(self, steps: Sequence[TokenData]) -> float:
        """Score a whole (possibly partial) trajectory: the step aggregation of step scores."""
        ...


def token_needs(scorers: Iterable[Scorer]) -> tuple[bool, int]:
    """(a reference pass is needed, top log-probs per token needed) to feed every scorer."""
    scorers = list(scorers)
    reference = any("reference_logprobs" in s.requires for s in scorers)
    return reference, max((s.top_logprobs for s in scorers), default=0)


def token_fields(scorers: Iterable[Scorer]) -> frozenset[str]:
    """Every optional token field some scorer requires (``Agent.propose``/``rescore`` options)."""
    return frozenset(f for s in scorers for f in s.requires)


# --- Shared helpers for the concrete scorers (additions; the protocols above are the contract) ---

_ENGINE_HINTS = {
    "reference_logprobs": "score candidates with the reference model "
    "(Agent.propose(..., score_reference=True))",
    "top_logprobs": "sample with top_logprobs=20 (SamplingParams(top_logprobs=20) or "
    "Agent.propose(..., top_logprobs=20))",
    "token_kl": "record each token's KL(π_θ‖π_ref) (Agent.propose(..., token_kl=True) or "
    "Agent.rescore(..., token_kl=True); the embedded engine returns the rows it needs)",
}
"""Which engine option produces each optional field: named in the error when it is missing."""


def require_field(scorer: str, step: TokenData, field: str) -> Sequence:
    """Return ``step.<field>``, checked present and aligned with ``policy_logprobs``.

    Missing -> ConfigError naming the engine option that produces it; a length different
    from the policy span -> BackendError (the engines scored other tokens than were generated).
    """
    value = getattr(step, field, None)
    if value is None:
        raise ConfigError(f"{scorer} needs {field}: {_ENGINE_HINTS.get(field, 'provide it')}")
    n_policy = len(step.policy_logprobs)
    if len(value) != n_policy:
        raise BackendError(
            f"{scorer}: {field} has {len(value)} positions but the action span has {n_policy} "
            "policy tokens; score exactly the generated token ids (never re-tokenised text)"
        )
    return value


class StepAggregatingScorer:
    """Base for scorers whose trajectory score is a step aggregation of their step scores.

    Subclasses set ``name``, ``requires`` and ``step_agg`` and implement ``score_step``.
    """

    name: str = ""
    requires: frozenset[str] = frozenset()
    top_logprobs: int = 0
    scores_candidates: bool = True
    step_agg: str = "mean"

    def score_step(self, step: TokenData) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step_scores(self, steps: Sequence[TokenData]) -> tuple[float, ...]:
        """The score of every step, in order (what failure attribution reads)."""
        return tuple(self.score_step(step) for step in steps)

    def score_trajectory(self, steps: Sequence[TokenData]) -> float:
        return aggregate_steps(self.step_scores(steps), self.step_agg)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({fields})"

    def _config(self) -> dict:
        return {}
