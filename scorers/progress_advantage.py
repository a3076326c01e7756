"""Progress advantage: the policy/reference log-ratio as a step and trajectory score (docs/design.md, "Progress advantage").

    pa = ProgressAdvantage(beta=1.0, token_agg="mean", step_agg="mean")
    a_t = pa.score_step(candidate)                    # β·(mean lp_θ − mean lp_ref) over the action span
    score = pa.score_trajectory(trajectory.steps)     # mean of the step scores
    t = decisive_step(pa.step_scores(trajectory.steps))   # failure attribution: argmin cumulative PA

Two ways to combine the two models' token log-probs, which differ for ``min``/``max``:

- ``mode="aggregate_then_subtract"`` (the paper's): ``A_t = β·(agg(lp_θ) − agg(lp_ref))``;
- ``mode="per_token_ratio"``: ``A_t = β·agg(lp_θ,i − lp_ref,i)``.

For mean, sum and last the two are equal. An action span with no tokens scores 0.

Two variants beside it, measured rather than assumed (issue 15):

- ``span="decisive"``: only the tokens the parser says decide the action (the move word, the
  tool call, the final number; ``Step.decisive_span``). A step that did not parse has no
  decisive token and scores 0; a parser that does not locate actions leaves the whole span.
- :class:`ProgressAdvantageCentered` (``progress_advantage_centered``): per token,
  ``β·(lp_θ,j − lp_ref,j − KL(π_θ‖π_ref)_j)``, then the token aggregation. Under π* the
  per-step mean of β·log π*/π_ref is β·KL(π*‖π_ref)(s) > 0 — a bias that rewards states where
  the policy overrides its reference most; centring makes each token's term zero-mean under the
  policy (``Q*(s,a) − E_{a'~π*} Q*(s,a')`` for one-token actions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.aggregation import aggregate_tokens, check_step_agg, check_token_agg
from ttsearch.scorers.base import StepAggregatingScorer, TokenData, require_field

PA_MODES = ("aggregate_then_subtract", "per_token_ratio")
PA_SPANS = ("action", "decisive")


def _check_beta(beta: float) -> float:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ConfigError(f"beta must be a finite number > 0 (the KL coefficient), got {beta!r}")
    return float(beta)


def _check_span(span: str) -> str:
    if span not in PA_SPANS:
        raise ConfigError(unknown_choice("progress-advantage span", span, PA_SPANS))
    return span


def scored_slice(step: TokenData, span: str) -> slice:
    """The action tokens a PA variant reads: all of them, or the decisive ones (module docstring)."""
    if span == "decisive":
        decisive = getattr(step, "decisive_span", None)
        if decisive is not None:
            return slice(int(decisive[0]), int(decisive[1]))
    return slice(0, len(step.policy_logprobs))


class ProgressAdvantage(StepAggregatingScorer):
    """``A_t = β·(log π_θ(a|s) − log π_ref(a|s))`` with configurable token/step aggregation."""

    name = "progress_advantage"
    requires = frozenset({"reference_logprobs"})

    def __init__(self, *, beta: float = 1.0, token_agg: str = "mean", step_agg: str = "mean",
                 mode: str = "aggregate_then_subtract", span: str = "action") -> None:
        if mode not in PA_MODES:
            raise ConfigError(unknown_choice("progress-advantage mode", mode, PA_MODES))
        self.beta = _check_beta(beta)
        self.token_agg = check_token_agg(token_agg)
        self.step_agg = check_step_agg(step_agg)
        self.mode = mode
        self.span = _check_span(span)
        if span == "decisive":
            self.requires = self.requires | {"decisive_span"}

    def score_step(self, step: TokenData) -> float:
        ref = require_field("ProgressAdvantage", step, "reference_logprobs")
        part = scored_slice(step, self.span)
        policy, ref = step.policy_logprobs[part], ref[part]
        if not policy:
            return 0.0
        if self.mode == "aggregate_then_subtract":
            diff = aggregate_tokens(policy, self.token_agg) - aggregate_tokens(ref, self.token_agg)
        else:
            diff = aggregate_tokens([p - r for p, r in zip(policy, ref, strict=True)], self.token_agg)
        return self.beta * diff

    def _config(self) -> dict:
        return {"beta": self.beta, "token_agg": self.token_agg, "step_agg": self.step_agg,
                "mode": self.mode, "span": self.span}


class ProgressAdvantageCentered(StepAggregatingScorer):
    """``β·agg_j(lp_θ,j − lp_ref,j − KL_j)``: PA minus the policy's own expected log-ratio at
    each token (module docstring). Needs ``token_kl`` (exact on the embedded engine)."""

    name = "progress_advantage_centered"
    requires = frozenset({"reference_logprobs", "token_kl"})

    def __init__(self, *, beta: float = 1.0, token_agg: str = "mean", step_agg: str = "mean",
                 span: str = "action") -> None:
        self.beta = _check_beta(beta)
        self.token_agg = check_token_agg(token_agg)
        self.step_agg = check_step_agg(step_agg)
        self.span = _check_span(span)
        if span == "decisive":
            self.requires = self.requires | {"decisive_span"}

    def score_step(self, step: TokenData) -> float:
        ref = require_field("ProgressAdvantageCentered", step, "reference_logprobs")
        kl = require_field("ProgressAdvantageCentered", step, "token_kl")
        part = scored_slice(step, self.span)
        values = [p - r - k for p, r, k in zip(step.policy_logprobs[part], ref[part], kl[part], strict=True)]
        return self.beta * aggregate_tokens(values, self.token_agg) if values else 0.0

    def _config(self) -> dict:
        return {"beta": self.beta, "token_agg": self.token_agg, "step_agg": self.step_agg, "span": self.span}


# --- failure attribution over a trajectory's step scores -------------------------------------

DECISIVE_METHODS = ("min_cumulative", "sharpest_drop", "sharpest_abs_drop")


def cumulative(step_scores: Sequence[float]) -> tuple[float, ...]:
    """Running sums ``C_t = A_0 + … + A_t`` (``C_t`` estimates return − V*(s₀) after step t)."""
    out: list[float] = []
    total = 0.0
    for score in step_scores:
        total += float(score)
        out.append(total)
    return tuple(out)


def _argmin(values: Sequence[float]) -> int:
    # First index on ties: the earliest step that reaches the minimum is blamed.
    return min(range(len(values)), key=lambda i: (values[i], i))


def decisive_step(step_scores: Sequence[float], method: str = "min_cumulative") -> int:
    """Predict the 0-based index of the decisive (first fatal) step from its step scores.

    - ``"min_cumulative"``: ``argmin_t C_t`` with ``C_t = A_0 + … + A_t`` (the paper's default).
    - ``"sharpest_drop"``: ``argmin_t A_t`` when some ``A_t < 0``; otherwise step 0.
    - ``"sharpest_abs_drop"``: the step ``t ≥ 1`` with the largest decrease from its
      predecessor, ``A_{t-1} − A_t`` (the index is that of the *later* step, where the score
      fell). When no consecutive pair decreases (including every length-1 trajectory), step 0.

    Ties go to the earliest step. An empty sequence raises ConfigError (there is no step to blame).
    """
    scores = [float(s) for s in step_scores]
    if method not in DECISIVE_METHODS:
        raise ConfigError(unknown_choice("decisive-step method", method, DECISIVE_METHODS))
    if not scores:
        raise ConfigError("decisive_step needs at least one step score; the trajectory is empty")
    if method == "min_cumulative":
        return _argmin(cumulative(scores))
    if method == "sharpest_drop":
        return _argmin(scores) if min(scores) < 0 else 0
    drops = [scores[t - 1] - scores[t] for t in range(1, len(scores))]
    if not drops or max(drops) <= 0:
        return 0
    best = max(range(len(drops)), key=lambda i: (drops[i], -i))
    return best + 1
