"""Diagnostics of a scorer: where its scores go, and which steps decide its best-of-N picks.

    out = diagnostics(pool, rows_with_rollouts, scorers)
    out["parse"]["progress_advantage"]     # step scores of parseable vs unparseable steps
    out["outcome"]["progress_advantage"]   # trajectory scores of successful vs failed rollouts
    out["picks"]["progress_advantage"]     # what the best-of-N picks contain, and the steps deciding them

These would have caught the garbled-turn failure of issue 15 at a glance: a score whose
unparseable steps (a turn the parser could not read, e.g. "southnorthnorth") outrank parseable
ones (``p_unparseable_higher`` near 1) and whose picks are full of them is not ranking actions.

- ``parse[label]``: over every step of the pool, the step scores of parseable and unparseable
  steps (n, mean, std, 10/50/90th percentiles, max) and ``p_unparseable_higher`` = P(score of a
  random unparseable step > a random parseable one), ties counting half (the AUROC of the step
  score for "unparseable"; 0.5: no preference).
- ``outcome[label]``: the same statistics of trajectory scores, successful vs failed.
- ``picks[label]``: over the rows that kept their N rollouts, the scorer's pick among all N
  (highest trajectory score, earliest on ties, as the controller picks): its success rate, the
  share of picks containing an unparseable step beside the share of all rollouts that do, and the
  *deciding step* of each pick — its highest-scored step (the one that raises a mean, sum or max
  aggregation most) — how often it is unparseable, with up to ``examples`` such picks.

A section without data is None: no unparseable step (or none parseable) in the pool, one outcome
class only, no rows with rollouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def summary(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, std (n − 1), 10th / 50th / 90th percentiles and max of finite values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"n": 0, "mean": None, "std": None, "p10": None, "p50": None, "p90": None, "max": None}
    p10, p50, p90 = (float(v) for v in np.percentile(arr, [10, 50, 90]))
    return {"n": int(arr.size), "mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "p10": p10, "p50": p50, "p90": p90, "max": float(arr.max())}


def p_higher(high: Sequence[float], low: Sequence[float]) -> float | None:
    """P(a random value of ``high`` > a random value of ``low``), ties half (Mann–Whitney)."""
    a, b = np.asarray(high, dtype=float), np.asarray(low, dtype=float)
    if a.size == 0 or b.size == 0:
        return None
    order = np.sort(b)
    below = np.searchsorted(order, a, side="left")
    ties = np.searchsorted(order, a, side="right") - below
    return float((below + 0.5 * ties).sum() / (a.size * b.size))


def _step_pairs(pool: list[dict[str, Any]], label: str) -> tuple[list[float], list[float]]:
    parsed, garbled = [], []
    for traj in pool:
        scores = ((traj.get("scores") or {}).get(label) or {}).get("steps") or []
        for step, score in zip(traj["steps"], scores):
            if score is not None:
                (garbled if step.get("parse_error") else parsed).append(float(score))
    return parsed, garbled


def parse_section(pool: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    parsed, garbled = _step_pairs(pool, label)
    if not parsed or not garbled:
        return None
    return {"parseable": summary(parsed), "unparseable": summary(garbled),
            "p_unparseable_higher": p_higher(garbled, parsed)}


def outcome_section(pool: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    won, lost = [], []
    for traj in pool:
        score = ((traj.get("scores") or {}).get(label) or {}).get("trajectory")
        if score is not None:
            (won if traj["success"] else lost).append(float(score))
    if not won or not lost:
        return None
    return {"success": summary(won), "failure": summary(lost), "p_success_higher": p_higher(won, lost)}


def _garbled(traj: dict[str, Any]) -> bool:
    return any(step.get("parse_error") for step in traj["steps"])


def _pick(rollouts: list[dict[str, Any]], label: str) -> int | None:
    scored = [(((t.get("scores") or {}).get(label) or {}).get("trajectory"), i) for i, t in enumerate(rollouts)]
    scored = [(s, i) for s, i in scored if s is not None]
    return max(scored, key=lambda p: (p[0], -p[1]))[1] if scored else None


def picks_section(rows: list[dict[str, Any]], label: str, examples: int = 3) -> dict[str, Any] | None:
    picks, deciding_garbled, found = [], 0, []
    all_rollouts = [t for r in rows for t in r["rollouts"]]
    for row in rows:
        index = _pick(row["rollouts"], label)
        if index is None:
            continue
        traj = row["rollouts"][index]
        picks.append(traj)
        steps = ((traj.get("scores") or {}).get(label) or {}).get("steps") or []
        finite = [(s, t) for t, s in enumerate(steps) if s is not None]
        if not finite:
            continue
        score, t = max(finite, key=lambda p: (p[0], -p[1]))
        step = traj["steps"][t]
        if step.get("parse_error"):
            deciding_garbled += 1
            if len(found) < examples:
                found.append({"task": row["task"]["id"], "arm": row["arm"], "rollout": index, "step": t,
                              "action_text": step["action_text"], "step_score": score, "success": traj["success"]})
    if not picks:
        return None
    return {"picks": len(picks), "success": float(np.mean([t["success"] for t in picks])),
            "picks_with_unparseable": float(np.mean([_garbled(t) for t in picks])),
            "rollouts_with_unparseable": float(np.mean([_garbled(t) for t in all_rollouts])),
            "deciding_step_unparseable": deciding_garbled / len(picks), "examples": found}


def diagnostics(pool: list[dict[str, Any]], rows: list[dict[str, Any]], scorers: list[str]) -> dict[str, Any]:
    """Every section for every scorer label (module docstring); ``rows``: rows with rollouts."""
    return {"parse": {label: parse_section(pool, label) for label in scorers},
            "outcome": {label: outcome_section(pool, label) for label in scorers},
            "picks": {label: picks_section(rows, label) for label in scorers}}


def standardised(pool: list[dict[str, Any]], label: str) -> dict[str, list[float]]:
    """The plot's data: step and trajectory scores of one scorer as z-scores over the pool
    (scorers live on different scales), split parseable / unparseable and success / failure."""
    parsed, garbled = _step_pairs(pool, label)
    steps = np.asarray(parsed + garbled, dtype=float)
    traj = [(((t.get("scores") or {}).get(label) or {}).get("trajectory"), t["success"]) for t in pool]
    traj = [(float(s), ok) for s, ok in traj if s is not None]
    values = np.asarray([s for s, _ in traj], dtype=float)

    def z(xs: list[float], ref: np.ndarray) -> list[float]:
        scale = float(ref.std()) if ref.size and ref.std() > 0 else 1.0
        return [(x - float(ref.mean())) / scale for x in xs] if ref.size else []

    return {"parseable": z(parsed, steps), "unparseable": z(garbled, steps),
            "success": z([s for s, ok in traj if ok], values), "failure": z([s for s, ok in traj if not ok], values)}
