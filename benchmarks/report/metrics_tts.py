"""Test-time-scaling metrics over N scored rollouts per task: exact best-of-n, pass@k.

    from ttsearch.benchmarks.report.metrics_tts import best_of_n, pass_at_k, subset_sizes
    best_of_n(scores=[0.3, 0.9, 0.1, 0.9], success=[1, 0, 1, 1], n=2)   # 0.5, exact over all 6 pairs
    pass_at_k([1, 0, 0, 1], k=2)                                         # 5/6 (Chen et al., unbiased)

Best-of-n is the *exact* expectation, over all C(N, n) equally likely size-n subsets of the N
rollouts, of the success of the subset's pick (its highest score). Rank the rollouts best
first; the rollout at rank j (0-based) is the pick of exactly C(N−1−j, n−1) subsets (those
containing it and n−1 of the rollouts ranked below it), so

    best_of_n = Σ_j success_(j) · C(N−1−j, n−1) / C(N, n).

Ties: ``ties="first"`` ranks equal scores by sample order, earliest first, as the trajectory
best-of-N controller picks; ``ties="average"`` breaks them uniformly at random (each tied
rollout gets its group's mean weight). A missing score (None/NaN) ranks below every number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.metrics import mean_and_stderr  # the one stderr formula (re-exported here)

TIE_RULES = ("first", "average")


def _as_scores(scores: Sequence[float | None]) -> np.ndarray:
    out = np.array([np.nan if s is None else float(s) for s in scores], dtype=float)
    return np.where(np.isnan(out), -np.inf, out)


def _check(scores: Sequence, success: Sequence, n: int) -> int:
    size = len(scores)
    if size != len(success):
        raise ConfigError(f"scores ({size}) and success ({len(success)}) must have one entry per rollout")
    if not 1 <= n <= size:
        raise ConfigError(f"subset size n must be in 1..{size} (the number of rollouts), got {n}")
    return size


def selection_weights(scores: Sequence[float | None], n: int, *, ties: str = "first") -> np.ndarray:
    """``w[i]`` = probability that rollout ``i`` is the pick of a uniformly random size-``n`` subset."""
    if ties not in TIE_RULES:
        raise ConfigError(unknown_choice("tie rule", ties, TIE_RULES))
    size = _check(scores, scores, n)
    values = _as_scores(scores)
    order = sorted(range(size), key=lambda i: (-values[i], i))  # best first, earliest on ties
    total = math.comb(size, n)
    by_rank = np.array([math.comb(size - 1 - j, n - 1) / total for j in range(size)])
    if ties == "average":
        ranked = values[order]
        start = 0
        for end in range(1, size + 1):
            if end == size or ranked[end] != ranked[start]:
                by_rank[start:end] = by_rank[start:end].mean()
                start = end
    weights = np.empty(size)
    weights[order] = by_rank
    return weights


def best_of_n(scores: Sequence[float | None], success: Sequence[bool | float], n: int, *, ties: str = "first") -> float:
    """Expected success of the highest-scored rollout of a random size-``n`` subset (exact)."""
    weights = selection_weights(scores, n, ties=ties)
    _check(scores, success, n)
    return float(np.dot(weights, np.asarray(success, dtype=float)))


def pass_at_k(success: Sequence[bool | float], k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): ``1 − C(N−c, k)/C(N, k)`` with c successes of N."""
    size = _check(success, success, k)
    c = int(np.sum(np.asarray(success, dtype=float) >= 1.0))
    return 1.0 - math.comb(size - c, k) / math.comb(size, k)


def subset_sizes(n_max: int) -> list[int]:
    """1, 2, 4, … up to ``n_max``, with ``n_max`` itself always last."""
    if n_max < 1:
        raise ConfigError(f"need at least one rollout per task, got {n_max}")
    sizes = [1 << i for i in range(n_max.bit_length()) if 1 << i < n_max]
    return [*sizes, n_max]


def best_of_n_curve(tasks: Sequence[tuple[Sequence[float | None], Sequence[bool]]], *,
                    ties: str = "first") -> dict[int, tuple[float, float]]:
    """Mean (± stderr) over tasks of best-of-n for n in :func:`subset_sizes` of the smallest N.

    ``tasks`` holds ``(scores, success)`` of each task's rollouts; tasks with different N are
    compared at the sizes every task has.
    """
    if not tasks:
        return {}
    n_max = min(len(scores) for scores, _ in tasks)
    return {n: mean_and_stderr([best_of_n(s, y, n, ties=ties) for s, y in tasks]) for n in subset_sizes(n_max)}
