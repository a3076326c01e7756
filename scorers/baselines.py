"""Baseline scorers from the paper (docs/design.md, "The paper's definitions"), all computed from data the engines already return.

    PolicyLogProb(token_agg="mean", step_agg="mean")   # agg lp_θ of the action span
    ReferenceLogProb()                                 # agg lp_ref (needs reference_logprobs)
    SelfCertainty(k=20, sign="deepconf")               # needs top_logprobs (sample with top_logprobs=20)
    SelfCertainty(k=20, sign="paper")                  # the PA paper's reference code: +mean
    DeepConfTail(k=20), DeepConfBottom10(k=20)         # step confidence = mean token self-certainty
    Entropy(k=20)                                      # − mean token entropy (top-k approximation)
    Random(seed=0)                                     # deterministic noise: the chance baseline

Token self-certainty, "the mean of the top-20 token log-probs", comes with two signs, named by
the ``sign`` option of ``SelfCertainty``, ``DeepConfTail`` and ``DeepConfBottom10``:

- ``sign="deepconf"`` (default; DeepConf's token confidence): ``c_i = −(1/k) Σ_{j≤k} log p_i(j)``
  over the k most likely tokens at position i. Higher means more certain: a peaked distribution
  has tiny runner-up probabilities, whose very negative log-probs make ``c_i`` large; a flat one
  gives ``c_i ≈ log V``.
- ``sign="paper"`` (the PA paper's reference code, ``log_probs.topk(k).values.mean()``, higher
  picked): ``c_i = +(1/k) Σ_{j≤k} log p_i(j)``, exactly ``−1×`` the DeepConf value: it ranks
  *flat* distributions highest. Reports show both, labelled, since the paper's tables use it.

When fewer than k alternatives were returned, the mean is over those present.

Higher is better for every scorer.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence

from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.aggregation import aggregate_tokens, check_step_agg, check_token_agg
from ttsearch.scorers.base import StepAggregatingScorer, TokenData, require_field

SIGNS = ("deepconf", "paper")
"""Self-certainty signs: DeepConf's −mean of the top-k log-probs, the PA paper's +mean."""


def _check_sign(sign: str) -> str:
    if sign not in SIGNS:
        raise ConfigError(unknown_choice("self-certainty sign", sign, SIGNS))
    return sign


def _check_k(k: int) -> int:
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k (number of top log-probs per token) must be an int >= 1, got {k!r}")
    return k


def token_self_certainty(top: Sequence[float], k: int = 20) -> float:
    """DeepConf token confidence ``−mean`` of the (up to) ``k`` largest log-probs; 0.0 if none."""
    best = sorted((float(v) for v in top), reverse=True)[:k]
    return -math.fsum(best) / len(best) if best else 0.0


def token_entropy_topk(top: Sequence[float], k: int = 20) -> float:
    """Entropy estimate ``−Σ_{j≤k} p_j log p_j`` from the k largest log-probs (truncated sum).

    The tail beyond the top k is dropped, not renormalised: the estimate is exact when the
    top k hold all the mass and otherwise misses the tail's ``−Σ p log p`` share (so it is a
    lower bound of the true entropy). Renormalising instead would inflate confident
    distributions' entropy whenever the tail is small, which is the common case.
    """
    best = sorted((float(v) for v in top), reverse=True)[:k]
    return -math.fsum(math.exp(v) * v for v in best if v > -math.inf)


class PolicyLogProb(StepAggregatingScorer):
    """Step score = token aggregation of the policy's log-probs over the action span."""

    name = "policy_logprob"
    requires: frozenset[str] = frozenset()

    def __init__(self, *, token_agg: str = "mean", step_agg: str = "mean") -> None:
        self.token_agg = check_token_agg(token_agg)
        self.step_agg = check_step_agg(step_agg)

    def score_step(self, step: TokenData) -> float:
        return aggregate_tokens(step.policy_logprobs, self.token_agg)

    def _config(self) -> dict:
        return {"token_agg": self.token_agg, "step_agg": self.step_agg}


class ReferenceLogProb(PolicyLogProb):
    """Step score = token aggregation of the reference's log-probs of the policy's tokens."""

    name = "reference_logprob"
    requires = frozenset({"reference_logprobs"})

    def score_step(self, step: TokenData) -> float:
        return aggregate_tokens(require_field("ReferenceLogProb", step, "reference_logprobs"),
                                self.token_agg)


class SelfCertainty(StepAggregatingScorer):
    """Step score = token aggregation of token self-certainty ``c_i`` (module docstring: ``sign``)."""

    name = "self_certainty"
    requires = frozenset({"top_logprobs"})

    def __init__(self, *, k: int = 20, token_agg: str = "mean", step_agg: str = "mean",
                 sign: str = "deepconf") -> None:
        self.k = self.top_logprobs = _check_k(k)
        self.token_agg = check_token_agg(token_agg)
        self.step_agg = check_step_agg(step_agg)
        self.sign = _check_sign(sign)

    def score_step(self, step: TokenData) -> float:
        top = require_field(type(self).__name__, step, "top_logprobs")
        factor = 1.0 if self.sign == "deepconf" else -1.0
        return aggregate_tokens([factor * token_self_certainty(t, self.k) for t in top], self.token_agg)

    def _config(self) -> dict:
        return {"k": self.k, "token_agg": self.token_agg, "step_agg": self.step_agg, "sign": self.sign}


class DeepConfTail(SelfCertainty):
    """Trajectory score = confidence of the last step (step confidence = mean ``c_i``).

    DeepConf's tail confidence, with one agent turn as the window.
    """

    name = "deepconf_tail"

    def __init__(self, *, k: int = 20, sign: str = "deepconf") -> None:
        super().__init__(k=k, token_agg="mean", step_agg="last", sign=sign)

    def _config(self) -> dict:
        return {"k": self.k, "sign": self.sign}


class DeepConfBottom10(SelfCertainty):
    """Trajectory score = mean of the lowest ceil(10%) step confidences (DeepConf bottom-10%)."""

    name = "deepconf_bottom10"

    def __init__(self, *, k: int = 20, sign: str = "deepconf") -> None:
        super().__init__(k=k, token_agg="mean", step_agg="bottom10", sign=sign)

    def _config(self) -> dict:
        return {"k": self.k, "sign": self.sign}


class Entropy(StepAggregatingScorer):
    """Step score = − token aggregation of the top-k entropy estimate (see token_entropy_topk)."""

    name = "entropy"
    requires = frozenset({"top_logprobs"})

    def __init__(self, *, k: int = 20, token_agg: str = "mean", step_agg: str = "mean") -> None:
        self.k = self.top_logprobs = _check_k(k)
        self.token_agg = check_token_agg(token_agg)
        self.step_agg = check_step_agg(step_agg)

    def score_step(self, step: TokenData) -> float:
        top = require_field("Entropy", step, "top_logprobs")
        # Negate per token, then aggregate: "min" then means the most uncertain token.
        return aggregate_tokens([-token_entropy_topk(t, self.k) for t in top], self.token_agg)

    def _config(self) -> dict:
        return {"k": self.k, "token_agg": self.token_agg, "step_agg": self.step_agg}


def _step_key(step: TokenData) -> bytes:
    """Bytes identifying a step (independent of Python's randomised ``hash``). An executed step
    is named by its observation, tokens and action: not by its log-probs, whose last bits depend
    on what the engine's cache held, so a resumed or concurrent run draws the same number. A bare
    candidate (no observation yet) is named by its tokens, log-probs and action."""
    ids = tuple(getattr(step, "action_token_ids", ()) or ())
    observation = getattr(step, "observation", None)
    if observation is not None:
        context = observation.text.encode("utf-8", "surrogatepass")
    else:
        lps = tuple(step.policy_logprobs)
        context = struct.pack(f"<{len(lps)}d", *lps)
    action = str(getattr(step, "action", ""))
    return (struct.pack(f"<{len(ids)}q", *ids) + b"|" + context
            + b"|" + action.encode("utf-8", "surrogatepass"))


def _uniform(seed: int, payload: bytes) -> float:
    digest = hashlib.blake2b(payload, digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little") / 2**64


class Random(StepAggregatingScorer):
    """Uniform noise in [0, 1): a pure function of the seed and the step (see ``_step_key``).

    The trajectory score is a fresh uniform over the whole sequence of steps (not the mean of
    step scores, which would not be uniform), so best-of-N by ``Random`` is a uniform pick.
    """

    name = "random"
    requires: frozenset[str] = frozenset()

    def __init__(self, *, seed: int = 0) -> None:
        if not isinstance(seed, int):
            raise ConfigError(f"Random scorer seed must be an int, got {seed!r}")
        self.seed = seed

    def score_step(self, step: TokenData) -> float:
        return _uniform(self.seed, b"step|" + _step_key(step))

    def score_trajectory(self, steps: Sequence[TokenData]) -> float:
        return _uniform(self.seed, b"traj|" + b"||".join(_step_key(s) for s in steps))

    def _config(self) -> dict:
        return {"seed": self.seed}


__all__ = [
    "SIGNS", "DeepConfBottom10", "DeepConfTail", "Entropy", "PolicyLogProb", "Random", "ReferenceLogProb",
    "SelfCertainty", "token_entropy_topk", "token_self_certainty",
]
