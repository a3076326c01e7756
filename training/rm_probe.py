"""A linear value probe on frozen reference features, saved as a sequence-classification RM.

The cheap task-specific reward model (``RMRecipe(method="probe")``): instead of fine-tuning the
whole reference network, fit a logistic regression on the vector its ``score`` head would read
(the final-layer hidden state, after the last norm, at the last non-pad token) and write the
probe's coefficients into that head. The folder is an ordinary
``*ForSequenceClassification`` checkpoint (``num_labels=1``), so the ``reward_model`` scorer
loads it unchanged and its score is the probe's decision function minus the intercept.

    model = load_probe_base(reference_dir)                        # reference weights, num_labels=1
    x = head_features(model, ids, pad_token_id=model.config.pad_token_id)
    fit = fit_probe(x_train, y_train, w_train, x_val, y_val, cs=(0.01, 0.1, 1.0))
    set_head(model, fit.weight)                                   # then model.save_pretrained(out)

The intercept is dropped because a sequence-classification head has no bias: every use the
project makes of an RM score (rankings for best-of-N, AUROC, Spearman rho, rank- or
min-max-mapped ECE) is invariant to adding a constant. The folded intercept is kept in the
manifest (``probe.dropped_intercept``) so P(success) = sigmoid(score + intercept) can be recovered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import AutoModelForSequenceClassification

from ttsearch.envs.errors import ConfigError
from ttsearch.scorers.metrics import auroc
from ttsearch.scorers.reward_model_text import forward_logits


def load_probe_base(reference_dir: Any) -> Any:
    """The reference checkpoint as a sequence-classification model with a scalar head (set later)."""

    with torch.random.fork_rng(devices=[]):  # the placeholder head's init must not move the RNG
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(reference_dir, num_labels=1)
    if model.config.pad_token_id is None:
        raise ConfigError(f"{reference_dir}: the reference config has no pad_token_id; the probe batches "
                          "right-padded texts and the head pools the last non-pad token")
    return model.eval()


def head_features(model: Any, ids: Sequence[Sequence[int]], *, pad_token_id: int,
                  batch_size: int = 32) -> Any:
    """(n, hidden) float64 array: what ``model.score`` reads for each id list.

    The head is swapped for the identity for the duration, so the model's own forward does the
    pooling (its last-non-pad-token rule): the features are the head's inputs by construction.
    """

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    head = model.score
    model.score = torch.nn.Identity()
    try:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # less padding per batch
        out = np.zeros((len(ids), head.in_features))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start: start + batch_size]
                pooled = forward_logits(model, [ids[i] for i in chunk], pad_token_id=pad_token_id)
                out[chunk] = pooled.double().cpu().numpy()
    finally:
        model.score = head
    return out


@dataclass(frozen=True)
class ProbeFit:
    """The chosen probe, folded to raw feature space: decision = features @ weight + intercept."""

    weight: Any
    """(hidden,) coefficients on the raw (unstandardised) features."""
    intercept: float
    c: float
    val_auroc: float | None
    history: tuple[dict, ...]
    """One row per C tried: {"C", "val_auroc", "val_loss"}."""
    pipeline: Any
    """The fitted sklearn Pipeline(StandardScaler, LogisticRegression) of the chosen C."""


def fit_probe(x_train: Any, y_train: Sequence[float], w_train: Sequence[float] | None, x_val: Any,
              y_val: Sequence[float], *, cs: Sequence[float], seed: int = 0) -> ProbeFit:
    """Standardise + L2 logistic regression for each C; keep the best validation AUROC (ties: the
    smaller C, i.e. stronger regularisation), falling back to validation log-loss with one class.

    ``y_train`` may hold fractional targets (merged duplicate prefixes); each row then enters as
    a positive with weight w*y and a negative with weight w*(1-y), exactly the weighted BCE.
    """

    if not cs or any(not c > 0 for c in cs):
        raise ConfigError(f"probe_cs must be a non-empty list of positive numbers, got {list(cs)!r}")
    x_train, y = np.asarray(x_train, dtype=float), np.asarray(y_train, dtype=float)
    w = np.ones(len(y)) if w_train is None else np.asarray(w_train, dtype=float)
    # fractional targets -> a positive and a negative copy weighted by the target's share
    x2 = np.concatenate([x_train, x_train])
    y2 = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    w2 = np.concatenate([w * y, w * (1 - y)])
    keep = w2 > 0
    x2, y2, w2 = x2[keep], y2[keep], w2[keep]
    if len(set(y2.tolist())) < 2:
        raise ConfigError("the probe's training prefixes are all successes or all failures; roll out more "
                          "tasks (train_layouts) or episodes (rollouts_per_layout)")
    y_val = np.asarray(y_val, dtype=float)
    best, history = None, []
    for c in sorted(cs):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        pipe.fit(x2, y2, standardscaler__sample_weight=w2, logisticregression__sample_weight=w2)
        decision = pipe.decision_function(x_val)
        auc = auroc(decision, y_val)
        loss = float(log_loss(y_val, pipe.predict_proba(x_val)[:, 1], labels=[0, 1]))
        history.append({"C": c, "val_auroc": auc, "val_loss": loss})
        metric = auc if auc is not None else -loss
        if best is None or metric > best[0]:
            best = (metric, c, auc, pipe)
    _, c, auc, pipe = best
    scaler, logistic = pipe[0], pipe[-1]
    weight = logistic.coef_[0] / scaler.scale_  # fold the standardisation into raw-space weights
    intercept = float(logistic.intercept_[0] - weight @ scaler.mean_)
    return ProbeFit(weight, intercept, c, auc, tuple(history), pipe)


def set_head(model: Any, weight: Any) -> None:
    """Write the probe coefficients into the model's scalar ``score`` head (no bias)."""

    if tuple(model.score.weight.shape) != (1, len(weight)):
        raise ConfigError(f"probe has {len(weight)} coefficients but the score head is "
                          f"{tuple(model.score.weight.shape)}")
    with torch.no_grad():
        model.score.weight.copy_(torch.as_tensor(weight, dtype=model.score.weight.dtype).reshape(1, -1))
