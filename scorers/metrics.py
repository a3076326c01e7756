"""The statistics every table shares: the one AUROC and the one standard error.

    auroc(scores=[0.1, 0.4, 0.35, 0.8], success=[0, 0, 1, 1])    # 0.75; None with one class
    mean_and_stderr([1, 1, 0, 1])                                # (0.75, 0.25)
    success_rate_and_stderr([True] * 11 + [False])               # (0.9167, 0.0833)

Every "± stderr" in ttsearch (report tables, budget tuning, sweeps, the demo, the benchmarks)
is :func:`mean_and_stderr`: the sample standard deviation (n − 1 in the denominator) over √n.
For 0/1 successes that is √(p(1 − p)/(n − 1)); one formula, so the same episodes always get
the same ± and a pick that compares them cannot flip between tables.

``success`` may be booleans or rewards (success = reward >= 1, as everywhere in ttsearch).
Missing scores (None or NaN) are dropped with their labels first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ttsearch.envs.base import SUCCESS_REWARD
from ttsearch.envs.errors import ConfigError


def finite_pairs(scores: Sequence[float | None], *others: Sequence[float]) -> tuple[np.ndarray, ...]:
    """``scores`` as floats and ``others`` aligned to them, where the score is finite."""
    values = np.array([np.nan if s is None else float(s) for s in scores], dtype=float)
    for other in others:
        if len(other) != len(values):
            raise ConfigError(f"every input needs one entry per trajectory ({len(values)} scores, {len(other)} others)")
    keep = np.isfinite(values)
    return (values[keep], *(np.asarray(o, dtype=float)[keep] for o in others))


def auroc(scores: Sequence[float | None], success: Sequence[float]) -> float | None:
    """Area under the ROC curve of ``scores`` for ``success``; None with one class only."""
    from sklearn.metrics import roc_auc_score  # scikit-learn: imported on use (slow to import)

    s, y = finite_pairs(scores, success)
    positive = y >= SUCCESS_REWARD
    return float(roc_auc_score(positive, s)) if len(set(positive)) == 2 else None


def mean_and_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and its standard error (sample std with n − 1, over √n); (None, None) when empty,
    stderr 0.0 for a single value (no spread to measure)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None, None
    stderr = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), stderr


def success_rate_and_stderr(successes: Sequence[bool | float]) -> tuple[float, float]:
    """Success rate of 0/1 outcomes and its :func:`mean_and_stderr` standard error."""
    if len(successes) == 0:
        raise ConfigError("a success rate needs at least one episode")
    rate, stderr = mean_and_stderr([1.0 if bool(s) else 0.0 for s in successes])
    return float(rate), float(stderr)  # type: ignore[arg-type]
