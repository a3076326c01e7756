"""Honest tuning: pick a scorer's aggregation (and variant, merged reference) on validation tasks only.

    picked = tune(validation_rows, pool_arms=["bon16-pa"], references={"linear-0.5": {...}}, beta=0.1)
    picked["best_of_n"]["spec"]     # {"name", "label", "kwargs", "reference", "tuned"}: a config's scorer entry
    evaluate(spec, test_rows, pool_arms)   # the same objectives on the test tasks

The grid is every progress-advantage cell the run's token data allows: the variant (plain,
both token modes; centred, when per-token KL was recorded; either on the decisive tokens, when
decisive spans were), the reference (the pair's and every merged reference recorded), every
token aggregation and every step aggregation. Each objective picks its own cell on the
validation rows alone:

- ``best_of_n``: mean over rows that kept N rollouts of the exact expected best-of-N success
  (``metrics_tts.best_of_n`` at n = N, ties to the earliest rollout);
- ``auroc``: AUROC of the trajectory score for success over the validation pool (every rollout
  of the ``pool_arms`` rows, else their returned trajectory).

Ties go to the earliest cell, and the paper's default (plain, mean × mean, the pair's reference)
comes first. The report then evaluates the picked cell on the test tasks only
(``benchmarks/report/tables.py``), next to the default cell on the same tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttsearch.benchmarks.report.metrics_tts import best_of_n
from ttsearch.benchmarks.report.token_scores import available, build, score_record
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import PA_MODES, STEP_AGGREGATIONS, TOKEN_AGGREGATIONS
from ttsearch.scorers.metrics import auroc, mean_and_stderr

OBJECTIVES = ("best_of_n", "auroc")
DEFAULT_CELL = {"name": "progress_advantage", "kwargs": {}, "reference": None}


def grid(trajectories: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every PA cell the trajectories' token data allows (module docstring), default first."""
    if not trajectories:
        return []
    can = available(trajectories[0])
    for traj in trajectories[1:]:
        other = available(traj)
        can = {"references": [r for r in can["references"] if r in other["references"]],
               "kl": can["kl"] and other["kl"], "decisive": can["decisive"] and other["decisive"]}
    variants = [("progress_advantage", {"mode": m}) for m in PA_MODES]
    if can["kl"]:
        variants.append(("progress_advantage_centered", {}))
    spans = ["action", "decisive"] if can["decisive"] else ["action"]
    cells = []
    for reference in can["references"]:
        for name, extra in variants:
            for span in spans:
                for token_agg in TOKEN_AGGREGATIONS:
                    if extra.get("mode") == "per_token_ratio" and token_agg in ("mean", "sum", "last"):
                        continue  # equal to aggregate-then-subtract there
                    for step_agg in STEP_AGGREGATIONS:
                        kwargs = {**extra, "token_agg": token_agg, "step_agg": step_agg, "span": span}
                        cells.append({"name": name, "kwargs": kwargs, "reference": reference})
    default = [c for c in cells if c["reference"] is None and c["name"] == "progress_advantage"
               and c["kwargs"] == {"mode": "aggregate_then_subtract", "token_agg": "mean", "step_agg": "mean",
                                   "span": "action"}]
    return default + [c for c in cells if c not in default]


def pool_of(rows: Sequence[dict[str, Any]], pool_arms: Sequence[str]) -> list[dict[str, Any]]:
    chosen = [r for r in rows if not pool_arms or r["arm"] in pool_arms]
    return [t for r in chosen for t in (r["rollouts"] or [r["trajectory"]])]


def _with_rollouts(pool: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {id(t) for t in pool}
    return [*pool, *(t for r in rows if r.get("rollouts") for t in r["rollouts"] if id(t) not in seen)]


def _scores(cell: dict[str, Any], trajectories: Sequence[dict[str, Any]]) -> dict[int, float | None]:
    scorer = build(cell)
    return {id(t): score_record(t, cell, scorer) for t in trajectories}


def objective(scores: dict[int, float | None], rows: Sequence[dict[str, Any]], pool: Sequence[dict[str, Any]],
              name: str) -> tuple[float | None, float | None, int]:
    """(value, stderr, n) of one objective from a cell's trajectory scores (stderr None for AUROC)."""
    if name == "best_of_n":
        values = [best_of_n([scores[id(t)] for t in r["rollouts"]], [float(t["success"]) for t in r["rollouts"]],
                            len(r["rollouts"])) for r in rows if r.get("rollouts")]
        mean, stderr = mean_and_stderr(values)
        return mean, stderr, len(values)
    return auroc([scores[id(t)] for t in pool], [float(t["reward"]) for t in pool]), None, len(pool)


def tune(rows: Sequence[dict[str, Any]], *, pool_arms: Sequence[str], references: dict[str, dict[str, Any]],
         beta: float, objectives: Sequence[str] = OBJECTIVES) -> dict[str, Any]:
    """For each objective the best grid cell on ``rows`` (validation rows only) as a scorer spec."""
    unknown = sorted(set(objectives) - set(OBJECTIVES))
    if unknown:
        raise ConfigError(f"unknown objective(s) {', '.join(unknown)}; choose from: {', '.join(OBJECTIVES)}")
    pool = pool_of(rows, pool_arms)
    cells = grid(pool)
    if not cells:
        raise ConfigError("the validation rows hold no token data to tune on (runs made before schema 3 "
                          "keep none; rerun with this version)")
    everything = _with_rollouts(pool, rows)
    scored = [_scores(cell, everything) for cell in cells]
    out = {}
    for name in objectives:
        values = [objective(scores, rows, pool, name) for scores in scored]
        finite = [i for i, v in enumerate(values) if v[0] is not None]
        if not finite:
            out[name] = None
            continue
        best = max(finite, key=lambda i: (values[i][0], -i))
        cell = cells[best]
        spec = {"name": cell["name"], "label": f"tuned-{name}", "kwargs": {**cell["kwargs"], "beta": beta},
                "reference": None if cell["reference"] is None else references[cell["reference"]],
                "tuned": {"objective": name, "validation_value": values[best][0], "validation_n": values[best][2],
                          "default_value": values[0][0], "grid_cells": len(cells),
                          "reference_label": cell["reference"]}}
        out[name] = {"spec": spec, "cell": cell}
    return out


def evaluate(cell: dict[str, Any], rows: Sequence[dict[str, Any]], pool_arms: Sequence[str],
             name: str) -> dict[str, Any]:
    """One objective of ``cell`` on ``rows`` (the test rows), as {"value", "stderr", "n"}."""
    pool = pool_of(rows, pool_arms)
    everything = _with_rollouts(pool, rows)
    value, stderr, n = objective(_scores(cell, everything), rows, pool, name)
    return {"value": value, "stderr": stderr, "n": n}
