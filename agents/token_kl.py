"""Per-token KL(π_θ ‖ π_ref) over an action span, from the two models' whole log-prob rows.

    kl = exact_token_kl(policy_rows, reference_rows)     # one float per span token
    # rows: float arrays [tokens, vocab] of log-probs (Sample / TokenScores .full_logprobs)

At action token j the KL-centred progress advantage subtracts
``KL(π_θ(·|s, y<j) ‖ π_ref(·|s, y<j)) = Σ_v π_θ(v) (log π_θ(v) − log π_ref(v))``: the expected
log-ratio of the token the policy draws there (docs/design.md, "Progress advantage": the per-step mean of β·log π*/π_ref is
β·KL, so subtracting it leaves Q* − E_{a'~π*} Q*). It is exact over the whole vocabulary: the
embedded engine returns each position's row from the logits it computes anyway
(``Backend.supports_full_logprobs``); SGLang returns only top-k log-probs and is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ttsearch.envs.errors import BackendError


def exact_token_kl(policy_rows: Any, reference_rows: Any) -> tuple[float, ...]:
    """``KL(p_j ‖ q_j)`` for each row j, summed in float64 (terms with ``p_j(v) = 0`` are 0)."""
    lp = np.asarray(policy_rows, dtype=np.float64)
    lq = np.asarray(reference_rows, dtype=np.float64)
    if len(lp) == 0 and len(lq) == 0:
        return ()  # an empty span (the turn was only its stop token)
    if lp.shape != lq.shape or lp.ndim != 2:
        raise BackendError(f"per-token KL needs two [tokens, vocab] log-prob arrays of one shape, got "
                           f"{lp.shape} and {lq.shape}; both models must share one vocabulary")
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):  # p = 0 where lp = -inf: the term is 0 by convention
        terms = np.where(p > 0, p * (lp - lq), 0.0)
    return tuple(float(v) for v in terms.sum(axis=1))


def check_full_rows(policy: Any, reference: Any) -> None:
    """A one-line BackendError unless both engines return whole log-prob rows."""
    lacking = [b.name for b in (policy, reference) if not getattr(b, "supports_full_logprobs", False)]
    if lacking:
        raise BackendError(
            f"per-token KL(π_θ‖π_ref) (progress_advantage_centered) needs whole log-prob rows, which "
            f"{', '.join(lacking)} cannot return (SGLang gives top-k only); serve the pair with the "
            "embedded engine (engine: {kind: transformers})")
