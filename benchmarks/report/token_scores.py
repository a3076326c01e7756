"""Scores recomputed from the token data a run keeps (schema 3): any PA variant, any aggregation.

    steps = record_steps(traj, reference="linear-0.5")         # TokenData of every step (π_α's reference)
    value = score_record(traj, {"name": "progress_advantage", "kwargs": {"step_agg": "min"}, "reference": None})

Each step of a run row records its action tokens' policy and reference log-probs, per-token
KL and decisive span where the run's scorers needed them, and the same against every merged
reference (``token_data``; docs/run_schema.md). From them any scorer that reads only those
fields (progress advantage and its centred / decisive variants, policy and reference
log-prob) can be evaluated offline at any token × step aggregation, which is what
``ttsearch tune-scorer`` searches and what the report evaluates tuned cells with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer

RECOMPUTABLE = ("progress_advantage", "progress_advantage_centered", "policy_logprob", "reference_logprob")


@dataclass(frozen=True, slots=True)
class RecordedStep:
    """A step's recorded token data in the shape scorers read (``scorers.base.TokenData``)."""

    policy_logprobs: tuple[float, ...]
    reference_logprobs: tuple[float, ...] | None
    token_kl: tuple[float, ...] | None
    decisive_span: tuple[int, int] | None
    parse_error: str | None
    top_logprobs: None = None


def _tuple(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float("nan") if v is None else float(v) for v in values)


def record_steps(traj: dict[str, Any], reference: str | None = None) -> list[RecordedStep] | None:
    """The trajectory's steps as :class:`RecordedStep` (against merged reference ``reference``
    when given); None when the row holds no token data (runs before schema 3)."""
    out = []
    for step in traj["steps"]:
        data = step.get("token_data")
        if data is None:
            return None
        source = data if reference is None else (data.get("variants") or {}).get(reference)
        if source is None:
            return None
        span = data.get("decisive")
        out.append(RecordedStep(_tuple(data["policy"]) or (), _tuple(source.get("reference")), _tuple(source.get("kl")),
                                None if span is None else (int(span[0]), int(span[1])), step.get("parse_error")))
    return out


def available(traj: dict[str, Any]) -> dict[str, Any]:
    """What a trajectory's token data allows: references (None + variant labels), KL, spans."""
    data = [s.get("token_data") for s in traj["steps"]]
    if not data or any(d is None for d in data):
        return {"references": [], "kl": False, "decisive": False}
    refs = [None] if all(d.get("reference") is not None for d in data) else []
    refs += sorted(set.intersection(*(set(d.get("variants") or {}) for d in data)))
    return {"references": refs, "kl": all(d.get("kl") is not None for d in data),
            "decisive": all(d.get("decisive") is not None for d in data)}


def build(spec: dict[str, Any]) -> Any:
    """The scorer of a spec ``{"name", "kwargs"}`` if it can be recomputed from token data."""
    if spec["name"] not in RECOMPUTABLE:
        raise ConfigError(f"scorer {spec['name']!r} cannot be recomputed from a run's token data; "
                          f"these can: {', '.join(RECOMPUTABLE)}")
    return make_scorer(spec["name"], **dict(spec.get("kwargs") or {}))


def score_record(traj: dict[str, Any], spec: dict[str, Any], scorer: Any = None) -> float | None:
    """The trajectory score of ``spec`` (``{"name", "kwargs", "reference"}``; reference: a merged
    reference's label or None) recomputed from the token data; None when it is not recorded."""
    steps = record_steps(traj, spec.get("reference"))
    if steps is None:
        return None
    try:
        return float((scorer or build(spec)).score_trajectory(steps))
    except ConfigError:  # a field this scorer reads was not recorded for this run
        return None
