"""Token and step aggregations (docs/design.md, "The paper's definitions"), shared by every scorer.

    from ttsearch.scorers.aggregation import aggregate_tokens, aggregate_steps
    aggregate_tokens([-0.1, -2.0, -0.3], "min")      # -2.0
    aggregate_steps([0.5, -1.0, 0.2], "bottom10")    # -1.0 (mean of the lowest ceil(10%) = 1 step)

Token aggregations turn one action span's per-token values into a step value: mean, sum, min,
max, last. Step aggregations turn step scores into a trajectory score: mean, sum, last, max,
min, bottom10 (mean of the lowest ``ceil(0.1 * n)`` steps). Every aggregation of an empty
sequence is ``0.0`` (an action span with no tokens scores 0; so does a trajectory with no
steps). Unknown names raise :class:`~ttsearch.envs.errors.ConfigError` listing the valid ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

from ttsearch.envs.errors import ConfigError, unknown_choice


def _mean(values: Sequence[float]) -> float:
    # fsum keeps sum == mean * len to the last bit for the short sequences we aggregate.
    return math.fsum(values) / len(values)


def _sum(values: Sequence[float]) -> float:
    return math.fsum(values)


def _last(values: Sequence[float]) -> float:
    return float(values[-1])


def _min(values: Sequence[float]) -> float:
    return float(min(values))


def _max(values: Sequence[float]) -> float:
    return float(max(values))


def bottom_fraction(values: Sequence[float], fraction: float = 0.1) -> float:
    """Mean of the lowest ``ceil(fraction * n)`` values (at least one); 0.0 when empty."""
    if not values:
        return 0.0
    if not 0 < fraction <= 1:
        raise ConfigError(f"bottom fraction must be in (0, 1], got {fraction}")
    # Exact rational arithmetic: in floats 30 * 0.1 == 3.0000000000000004, whose ceil is 4.
    k = max(1, math.ceil(len(values) * Fraction(str(fraction))))
    return _mean(sorted(values)[:k])


def _bottom10(values: Sequence[float]) -> float:
    return bottom_fraction(values, 0.1)


TOKEN_AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": _mean,
    "sum": _sum,
    "min": _min,
    "max": _max,
    "last": _last,
}
"""Name -> function over one span's per-token values (non-empty input)."""

STEP_AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": _mean,
    "sum": _sum,
    "last": _last,
    "max": _max,
    "min": _min,
    "bottom10": _bottom10,
}
"""Name -> function over a trajectory's step scores (non-empty input)."""


def check_token_agg(name: str) -> str:
    """Return ``name`` if it is a token aggregation, else raise ConfigError listing them."""
    if name not in TOKEN_AGGREGATIONS:
        raise ConfigError(unknown_choice("token aggregation", name, TOKEN_AGGREGATIONS))
    return name


def check_step_agg(name: str) -> str:
    """Return ``name`` if it is a step aggregation, else raise ConfigError listing them."""
    if name not in STEP_AGGREGATIONS:
        raise ConfigError(unknown_choice("step aggregation", name, STEP_AGGREGATIONS))
    return name


def aggregate_tokens(values: Iterable[float], name: str = "mean") -> float:
    """Aggregate one span's per-token values; an empty span gives 0.0."""
    fn = TOKEN_AGGREGATIONS[check_token_agg(name)]
    seq = [float(v) for v in values]
    return fn(seq) if seq else 0.0


def aggregate_steps(values: Iterable[float], name: str = "mean") -> float:
    """Aggregate a trajectory's step scores; no steps gives 0.0."""
    fn = STEP_AGGREGATIONS[check_step_agg(name)]
    seq = [float(v) for v in values]
    return fn(seq) if seq else 0.0
