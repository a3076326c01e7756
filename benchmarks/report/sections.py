"""The report's sections beside the three applications: voting selection, the α sweep, tuned cells.

    selection_section(rows, scorers)      # best-of-n re-ranking by weighted / majority votes (final answers)
    alpha_sweep(summary, scorer_specs)    # PA against π_ref and every merged reference, side by side
    tuned_section(run, tuned_file)        # `ttsearch tune-scorer` picks, evaluated on test tasks only

Each returns None when the run has nothing for it (no final answers, no merged reference, no
tuning file); ``tables.build_report`` puts them in the summary and the notes say why one is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ttsearch.benchmarks.report.metrics_selection import selection_curve
from ttsearch.benchmarks.report.metrics_tts import subset_sizes
from ttsearch.benchmarks.report.tuning import DEFAULT_CELL, evaluate

VOTING = ("weighted", "weighted_majority")


def _score(traj: dict[str, Any], label: str) -> float | None:
    return ((traj.get("scores") or {}).get(label) or {}).get("trajectory")


def selection_section(rows: list[dict[str, Any]], arms: list[str], scorers: list[str]) -> dict[str, Any] | None:
    """Per arm with rollouts that carry final answers: majority vote (scorer-free) and each
    scorer's weighted and weighted-majority votes, for n = 1, 2, 4, …, N (``metrics_selection``)."""
    out = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm and r.get("rollouts")
                and any(t.get("answer") is not None for t in r["rollouts"])]
        if not mine:
            continue
        ns = subset_sizes(min(len(r["rollouts"]) for r in mine))
        out[arm] = {"rows": len(mine), "ns": ns, "majority": _curve(mine, None, "majority", ns),
                    "scorers": {label: {mode: _curve(mine, label, mode, ns) for mode in VOTING} for label in scorers}}
    return out or None


def _curve(rows: list[dict[str, Any]], label: str | None, mode: str, ns: list[int]) -> dict[str, Any]:
    tasks = [([_score(t, label) if label else 0.0 for t in r["rollouts"]], [t.get("answer") for t in r["rollouts"]],
              [float(t["success"]) for t in r["rollouts"]]) for r in rows]
    return {str(n): {"mean": m, "stderr": e} for n, (m, e) in selection_curve(tasks, mode, ns).items()}


def alpha_sweep(summary: dict[str, Any], specs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """PA-family labels scored against the pair's reference and each merged reference: best-of-N
    (largest N), AUROC and FA accuracy (min-cumulative) per (reference, scorer)."""
    variants = {label: spec["reference"] for label, spec in specs.items() if spec.get("reference")}
    if not variants:
        return None
    bases = list(dict.fromkeys(label.split("@")[0] for label in variants))
    merges = {}
    for label, merge in variants.items():
        merges.setdefault(label.split("@", 1)[1], merge)
    order = sorted(merges, key=lambda k: (merges[k]["merge"], merges[k]["alpha"], k))

    def cells(suffix: str) -> dict[str, Any]:
        out = {}
        for base in bases:
            label = base if not suffix else f"{base}@{suffix}"
            out[base] = {"best_of_n": (summary["tts"].get(label) or {}).get("success_rate"),
                         "auroc": (summary["uq"].get(label) or {}).get("auroc"),
                         "fa_accuracy": (summary["fa"].get(label) or {}).get("accuracy")}
        return out

    rows = [{"reference": "π_ref (the pair's)", "merge": None, "alpha": 0.0, "cells": cells("")}]
    rows += [{"reference": key, "merge": merges[key]["merge"], "alpha": merges[key]["alpha"], "cells": cells(key)}
             for key in order]
    return {"scorers": bases, "rows": rows}


def tuned_section(rows: list[dict[str, Any]], pool_arms: list[str], path: Path) -> dict[str, Any] | None:
    """Each tuned spec of ``path`` (``ttsearch tune-scorer``) and the paper's default cell,
    evaluated on the rows whose tasks were not used to tune (the test tasks)."""
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    held_out = set((data.get("validation") or {}).get("tasks") or [])
    test = [r for r in rows if r["task"]["id"] not in held_out]
    cells = []
    for spec in data.get("scorers") or []:
        tuned = spec.get("tuned") or {}
        objective = tuned.get("objective", "best_of_n")
        cell = {"name": spec["name"], "kwargs": {k: v for k, v in spec["kwargs"].items() if k != "beta"},
                "reference": tuned.get("reference_label")}
        got, default = evaluate(cell, test, pool_arms, objective), evaluate(DEFAULT_CELL, test, pool_arms, objective)
        cells.append({"label": spec.get("label"), "objective": objective, "name": spec["name"],
                      "kwargs": cell["kwargs"], "reference": cell["reference"],
                      "validation_value": tuned.get("validation_value"), "test": got, "default_test": default})
    return {"file": str(path), "validation": data.get("validation"), "test_tasks": len({r["task"]["id"] for r in test}),
            "cells": cells}
