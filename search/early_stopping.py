"""Uncertainty-based early stopping: spend less compute when the score says the outcome is decided.

    make_controller("trajectory_best_of_n", n=16, early_stop=AdaptiveN(wave=4, delta=0.1))
    make_controller("trajectory_best_of_n", n=16, early_stop=DeepConf(warmup=4, percentile=50))
    make_controller("step_best_of_n", k=8, early_stop=ConfidenceGate(signal="policy_prob", threshold=0.9))
    make_controller("step_best_of_n", k=8, early_stop="adaptive")          # by name, defaults
    result.early_stop     # EarlyStopReport: triggers, skipped candidates, estimated tokens saved

Three rules:

(a) **AdaptiveN** — sample in waves; after each wave (once ``min_samples`` scores are in) estimate
    the probability that the samples not yet drawn would change the pick, and stop when it is
    at most ``delta``. Model: the scores drawn so far are a sample of a Normal(μ, σ) (σ their
    standard deviation, floored at ``sigma_floor``); one more sample beats the leader's score L
    with p = 1 − Φ((L − μ)/σ); R more samples change the pick with 1 − (1 − p)^R. Identical
    scores (σ = 0, no floor) mean nothing drawn so far could be beaten: a tie never changes the
    pick. ``min_samples`` keeps a few early samples from deciding alone. With ``patience`` the
    search also stops once the pick (the leading candidate's action, or the leading rollout) has
    stayed the same for that many consecutive waves — the agreement rule. Used by trajectory best-of-N (waves of rollouts) and step best-of-N (waves of
    candidates at each turn).
(b) **DeepConf** — DeepConf's online filter with the step score in place of token confidence:
    the first ``warmup`` rollouts run to the end; the threshold is the ``percentile``-th
    percentile of their *running-min* step scores (each rollout's lowest step score); every later
    rollout is pruned as soon as its running min falls below the threshold, and pruned rollouts
    are not picked. A fixed ``threshold`` (calibrated offline with :func:`calibrate_threshold`)
    skips the warm-up; beam search prunes beams below it.
(c) **ConfidenceGate** — before searching a turn, decode the greedy candidate; when the choice is
    clear — its whole-turn policy probability (``policy_prob``), its step score (``step_score``)
    or the first token's top-1 minus top-2 probability (``top_margin``) is at least
    ``threshold`` — act on it and skip the search of that turn; otherwise search with the greedy
    candidate as one of the K (K − 1 samples), so a gated search never samples more candidates
    than the plain one (it spends one more model-call pair per turn).

Each rule reports what it saved: an :class:`EarlyStopReport` in ``SearchResult.early_stop`` with
the skipped candidates and an estimate of the tokens the un-stopped controller would have spent
(skipped candidates × this search's own mean tokens per candidate). The benchmarks measure the
real saving by running the controller both ways.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ttsearch.envs.errors import ConfigError, unknown_choice


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(frozen=True, slots=True)
class AdaptiveN:
    """(a) Stop sampling once more samples are unlikely to change the pick (module docstring)."""

    wave: int = 4
    delta: float = 0.1
    min_samples: int = 4
    sigma_floor: float = 0.0
    patience: int | None = None
    name = "adaptive"
    top_logprobs = 0  # every rule declares the top log-probs per token it reads

    def __post_init__(self) -> None:
        if self.wave < 1 or self.min_samples < 1:
            raise ConfigError(f"adaptive: wave and min_samples must be >= 1, got {self.wave}, {self.min_samples}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"adaptive: delta must be in (0, 1), got {self.delta}")
        if not self.sigma_floor >= 0:
            raise ConfigError(f"adaptive: sigma_floor must be >= 0, got {self.sigma_floor}")
        if self.patience is not None and (isinstance(self.patience, bool) or self.patience < 1):
            raise ConfigError(f"adaptive: patience must be an int >= 1 or None, got {self.patience}")

    def change_probability(self, scores: Sequence[float], leader: float, remaining: int) -> float:
        """P(at least one of ``remaining`` further samples scores above ``leader``)."""
        if remaining <= 0:
            return 0.0
        values = np.asarray(scores, dtype=float)
        sigma = max(float(values.std()) if len(values) > 1 else 0.0, self.sigma_floor)
        if sigma == 0.0:
            return 0.0 if leader >= values.mean() else 1.0
        p_one = 1.0 - _phi((leader - float(values.mean())) / sigma)
        return 1.0 - (1.0 - p_one) ** remaining

    def should_stop(self, scores: Sequence[float], leader: float, remaining: int, *, stable_waves: int = 0) -> bool:
        """``stable_waves``: consecutive waves after which the pick stayed the same."""
        if len(scores) < self.min_samples:
            return False
        if self.patience is not None and stable_waves >= self.patience:
            return True
        return self.change_probability(scores, leader, remaining) <= self.delta


@dataclass(frozen=True, slots=True)
class DeepConf:
    """(b) Calibrate a running-min threshold on warm-up rollouts, prune below it (module docstring)."""

    warmup: int = 4
    percentile: float = 10.0
    threshold: float | None = None
    name = "deepconf"
    top_logprobs = 0

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ConfigError(f"deepconf: warmup must be >= 1, got {self.warmup}")
        if not 0 <= self.percentile <= 100:
            raise ConfigError(f"deepconf: percentile must be in [0, 100], got {self.percentile}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ConfigError(f"deepconf: threshold must be a finite number, got {self.threshold}")

    def calibrate(self, running_mins: Sequence[float]) -> float:
        return self.threshold if self.threshold is not None else calibrate_threshold(running_mins, self.percentile)


def calibrate_threshold(running_mins: Sequence[float], percentile: float) -> float:
    """The ``percentile``-th percentile of warm-up rollouts' running-min step scores."""
    values = [float(v) for v in running_mins]
    if not values:
        raise ConfigError("deepconf: no warm-up rollout had a step score to calibrate on; raise warmup")
    return float(np.percentile(values, percentile, method="linear"))


GATE_SIGNALS = ("policy_prob", "step_score", "top_margin")


@dataclass(frozen=True, slots=True)
class ConfidenceGate:
    """(c) Act greedily when the greedy candidate is clearly right, search otherwise."""

    signal: str = "policy_prob"
    threshold: float = 0.9
    name = "gate"

    def __post_init__(self) -> None:
        if self.signal not in GATE_SIGNALS:
            raise ConfigError(unknown_choice("gate signal", self.signal, GATE_SIGNALS))
        if not math.isfinite(self.threshold):
            raise ConfigError(f"gate: threshold must be a finite number, got {self.threshold}")

    @property
    def top_logprobs(self) -> int:
        return 2 if self.signal == "top_margin" else 0

    def confidence(self, candidate: Any, step_score: float | None) -> float:
        if self.signal == "policy_prob":
            return math.exp(math.fsum(candidate.policy_logprobs))
        if self.signal == "step_score":
            if step_score is None:
                raise ConfigError("gate signal 'step_score' needs a scorer that scores steps")
            return step_score
        top = candidate.top_logprobs
        if not top or len(top[0]) < 2:
            return 1.0 if top else 0.0  # one possible token: certain; no data: not confident
        return math.exp(top[0][0]) - math.exp(top[0][1])

    def confident(self, candidate: Any, step_score: float | None) -> bool:
        return self.confidence(candidate, step_score) >= self.threshold


EARLY_STOPS: dict[str, type] = {"adaptive": AdaptiveN, "deepconf": DeepConf, "gate": ConfidenceGate}
EarlyStop = AdaptiveN | DeepConf | ConfidenceGate


def make_early_stop(spec: Any) -> EarlyStop | None:
    """None, a rule object, a name (defaults) or ``{"name": ..., **options}`` -> a rule."""
    if spec is None or isinstance(spec, (AdaptiveN, DeepConf, ConfidenceGate)):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"early_stop must be a rule, a name or {{'name': ..., options}}, got {spec!r}")
    options = dict(spec)
    name = options.pop("name")
    if name not in EARLY_STOPS:
        raise ConfigError(unknown_choice("early-stopping rule", name, EARLY_STOPS))
    cls = EARLY_STOPS[name]
    valid = [f for f in cls.__dataclass_fields__]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"early-stopping rule {name!r} got unknown option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(valid)}")
    return cls(**options)


def describe(rule: EarlyStop | None) -> str | None:
    """A short label such as ``gate(policy_prob>=0.9)``, or None."""
    if rule is None:
        return None
    params = ",".join(f"{k}={v}" for k, v in asdict(rule).items() if v is not None)
    return f"{rule.name}({params})"


@dataclass(frozen=True, slots=True)
class EarlyStopReport:
    """What an early-stopping rule did in one search."""

    rule: str
    triggers: int
    """How often it fired (confident turns, stopped sampling loops, pruned rollouts/beams)."""
    skipped_candidates: int
    """Candidates the un-stopped controller would have sampled and scored that this one did not."""
    used_tokens: int
    saved_tokens_estimate: float
    """``skipped_candidates`` × this search's mean generated+scored tokens per candidate."""
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unstopped_tokens_estimate(self) -> float:
        return self.used_tokens + self.saved_tokens_estimate

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["detail"] = dict(self.detail)
        out["unstopped_tokens_estimate"] = self.unstopped_tokens_estimate
        return out


@dataclass(slots=True)
class EarlyStopMeter:
    """Mutable counters a controller fills; ``report`` turns them into an EarlyStopReport."""

    rule: EarlyStop
    triggers: int = 0
    skipped_candidates: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def report(self, usage: Any) -> EarlyStopReport:
        per_candidate = usage.tokens / usage.candidates if usage.candidates else 0.0
        saved = self.skipped_candidates * per_candidate
        return EarlyStopReport(describe(self.rule) or "", self.triggers, self.skipped_candidates, usage.tokens,
                               float(saved), dict(self.detail))
