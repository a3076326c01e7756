"""Uncertainty-quantification metrics: does a trajectory score predict success?

    from ttsearch.benchmarks.report.metrics_uq import uq_metrics
    m = uq_metrics(scores=[0.1, 0.4, 0.35, 0.8], success=[0, 0, 1, 1], rewards=[0, 0, 1, 1])
    m["auroc"], m["auprc"], m["spearman"], m["ece"], m["notes"]     # 0.75, 0.833, 0.447, ...

AUROC and AUPRC (average precision) come from scikit-learn, Spearman's ρ (score vs reward)
from SciPy. A metric that is undefined on the data (one class only, a constant score) is
``None`` and ``notes`` says why; nothing raises on data.

Calibration needs probabilities. Scores are mapped to [0, 1] by ``mapping``:
``"identity"`` (already probabilities, e.g. a reward model's), ``"minmax"`` ((s − min)/(max −
min) over the pool; a constant pool maps to 0.5), ``"rank"`` (average rank scaled to [0, 1]), or
``"auto"``: identity when every score lies in [0, 1], else minmax. ECE is the count-weighted
mean |accuracy − mean confidence| over ``n_bins`` equal-width bins of [0, 1] (the last bin
includes 1). Missing scores (None/NaN) are dropped first; ``n`` counts what was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_curve

from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.metrics import auroc, finite_pairs

MAPPINGS = ("auto", "identity", "minmax", "rank")


def auprc(scores: Sequence[float], success: Sequence[bool]) -> float | None:
    """Average precision of ``scores`` for ``success``; None with one class only."""

    s, y = finite_pairs(scores, success)
    return float(average_precision_score(y >= 1, s)) if len(set(y >= 1)) == 2 else None


def spearman(scores: Sequence[float], rewards: Sequence[float]) -> float | None:
    """Spearman's ρ of score vs reward; None when either is constant (or fewer than 2 points)."""

    s, r = finite_pairs(scores, rewards)
    if len(s) < 2 or np.ptp(s) == 0 or np.ptp(r) == 0:
        return None
    return float(spearmanr(s, r).statistic)


def to_unit_interval(scores: Sequence[float], mapping: str = "auto") -> tuple[np.ndarray, str]:
    """Scores mapped to [0, 1] and the name of the mapping actually used (module docstring)."""
    if mapping not in MAPPINGS:
        raise ConfigError(unknown_choice("calibration mapping", mapping, MAPPINGS))
    s = np.asarray(scores, dtype=float)
    if mapping == "auto":
        mapping = "identity" if s.size and s.min() >= 0 and s.max() <= 1 else "minmax"
    if mapping == "identity":
        if s.size and (s.min() < 0 or s.max() > 1):
            raise ConfigError("calibration mapping 'identity' needs scores in [0, 1]; use 'minmax' or 'rank'")
        return s, mapping
    if mapping == "rank":

        return ((rankdata(s) - 1) / (s.size - 1) if s.size > 1 else np.full(s.size, 0.5)), mapping
    span = np.ptp(s) if s.size else 0.0
    return ((s - s.min()) / span if span > 0 else np.full(s.size, 0.5)), mapping


def reliability_bins(probs: Sequence[float], success: Sequence[bool], n_bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width bins of [0, 1]: ``{lo, hi, count, confidence, accuracy}`` (None when empty)."""
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    p, y = np.asarray(probs, dtype=float), np.asarray(success, dtype=float) >= 1
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)  # 1.0 falls in the last bin
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": count,
                     "confidence": float(p[members].mean()) if count else None,
                     "accuracy": float(y[members].mean()) if count else None})
    return bins


def ece(probs: Sequence[float], success: Sequence[bool], n_bins: int = 10) -> float | None:
    """Expected calibration error over equal-width bins; None for an empty pool."""
    bins = reliability_bins(probs, success, n_bins)
    total = sum(b["count"] for b in bins)
    if not total:
        return None
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / total)


def roc_points(scores: Sequence[float], success: Sequence[bool]) -> tuple[list[float], list[float]] | None:
    """(false-positive rates, true-positive rates) for a ROC plot; None with one class only."""

    s, y = finite_pairs(scores, success)
    if len(set(y >= 1)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y >= 1, s)
    return fpr.tolist(), tpr.tolist()


def uq_metrics(scores: Sequence[float | None], success: Sequence[bool], rewards: Sequence[float], *,
               n_bins: int = 10, mapping: str = "auto") -> dict[str, Any]:
    """All UQ metrics of one scorer over a pool of trajectories, with notes on undefined ones."""
    s, y, r = finite_pairs(scores, success, rewards)
    notes = []
    if len(s) < len(scores):
        notes.append(f"{len(scores) - len(s)} trajectories without a score were left out")
    positives = int((y >= 1).sum())
    out: dict[str, Any] = {"n": int(len(s)), "n_success": positives}
    out["auroc"], out["auprc"] = auroc(s, y), auprc(s, y)
    if out["auroc"] is None:
        notes.append(f"AUROC/AUPRC undefined: the pool has only {'successes' if positives else 'failures'}"
                     if len(s) else "AUROC/AUPRC undefined: empty pool")
    out["spearman"] = spearman(s, r)
    if out["spearman"] is None and len(s):
        notes.append("Spearman undefined: " + ("constant score" if len(s) > 1 and np.ptp(s) == 0
                                               else "constant reward" if len(s) > 1 else "fewer than 2 trajectories"))
    probs, used = to_unit_interval(s, mapping)
    out["mapping"] = used
    out["ece"] = ece(probs, y, n_bins)
    out["reliability"] = reliability_bins(probs, y, n_bins)
    out["notes"] = notes
    return out
