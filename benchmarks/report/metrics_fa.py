"""Failure-attribution metrics: how often a method names the true decisive step of a failure.

    from ttsearch.benchmarks.report.metrics_fa import attribution_metrics
    attribution_metrics([[0.2, -0.9, 0.1], [-0.1, 0.3]], truths=[1, 0], method="min_cumulative")
    # {"method": "min_cumulative", "n": 2, "skipped": 0, "accuracy": 1.0, "mae": 0.0, "within_one": 1.0}

Each failed trajectory contributes its per-step scores and its true decisive step (0-based);
the prediction is :func:`ttsearch.scorers.progress_advantage.decisive_step` with the method
(``min_cumulative``, ``sharpest_drop``, ``sharpest_abs_drop``). ``accuracy`` is the fraction
predicted exactly, ``mae`` the mean |predicted − true| in steps, ``within_one`` the fraction
off by at most one step. An empty pool gives None for all three; trajectories without steps
are skipped (there is nothing to blame) and counted in ``skipped``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ttsearch.envs.errors import ConfigError
from ttsearch.scorers.progress_advantage import DECISIVE_METHODS, decisive_step


def predictions(step_scores: Sequence[Sequence[float]], method: str) -> list[int | None]:
    """The predicted decisive step of each trajectory (None for one without steps)."""
    return [decisive_step(scores, method) if len(scores) else None for scores in step_scores]


def attribution_metrics(step_scores: Sequence[Sequence[float]], truths: Sequence[int], *,
                        method: str = "min_cumulative") -> dict[str, Any]:
    """Exact-step accuracy, MAE and within-one accuracy of ``method`` against ``truths``."""
    if len(step_scores) != len(truths):
        raise ConfigError(f"need one true step per trajectory ({len(step_scores)} trajectories, {len(truths)} truths)")
    pairs = [(p, t) for p, t in zip(predictions(step_scores, method), truths) if p is not None]
    out: dict[str, Any] = {"method": method, "n": len(pairs), "skipped": len(truths) - len(pairs)}
    if not pairs:
        return {**out, "accuracy": None, "mae": None, "within_one": None}
    error = np.abs(np.array([p - t for p, t in pairs], dtype=float))
    return {**out, "accuracy": float(np.mean(error == 0)), "mae": float(error.mean()),
            "within_one": float(np.mean(error <= 1))}


def all_methods(step_scores: Sequence[Sequence[float]], truths: Sequence[int]) -> dict[str, dict[str, Any]]:
    """:func:`attribution_metrics` for every method in ``DECISIVE_METHODS``."""
    return {m: attribution_metrics(step_scores, truths, method=m) for m in DECISIVE_METHODS}


def positional_baselines(lengths: Sequence[int], truths: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Score-free references on the same failures: always blame the first step, always the last
    step, and a uniformly random step (its expected accuracy and MAE). A scorer whose
    attribution does not beat these has learnt nothing about *where* things went wrong."""
    if len(lengths) != len(truths):
        raise ConfigError(f"need one true step per trajectory ({len(lengths)} lengths, {len(truths)} truths)")
    pairs = [(n, t) for n, t in zip(lengths, truths) if n > 0]
    if not pairs:
        return {name: {"n": 0, "accuracy": None, "mae": None} for name in ("first_step", "last_step", "uniform_random")}

    def fixed(pick) -> dict[str, Any]:
        error = np.abs(np.array([pick(n) - t for n, t in pairs], dtype=float))
        return {"n": len(pairs), "accuracy": float(np.mean(error == 0)), "mae": float(error.mean())}

    uniform_mae = [np.mean(np.abs(np.arange(n) - t)) for n, t in pairs]
    return {"first_step": fixed(lambda n: 0), "last_step": fixed(lambda n: n - 1),
            "uniform_random": {"n": len(pairs), "accuracy": float(np.mean([1 / n for n, _ in pairs])),
                               "mae": float(np.mean(uniform_mae))}}
