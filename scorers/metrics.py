"""How well a score predicts success: the one AUROC the report and the reward-model recipe share.

    auroc(scores=[0.1, 0.4, 0.35, 0.8], success=[0, 0, 1, 1])    # 0.75; None with one class

``success`` may be booleans or rewards (success = reward >= 1, as everywhere in ttsearch).
Missing scores (None or NaN) are dropped with their labels first.
"""

from __future__ import annotations

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
