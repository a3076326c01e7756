"""How trajectory best-of-N picks among its N rollouts: by score, or by votes on the final answer.

    pick = select(scores=[0.2, 0.9, 0.1], answers=["5", "7", "5"], mode="majority")   # 0: "5" wins 2-1
    final_answer(trajectory)    # the last step's action when it parsed ("answer: 5"), else None

``mode`` (``TrajectoryBestOfN(selection=...)``):

- ``best``: the rollout with the highest trajectory score (the earliest on ties).
- ``majority``: the answer most rollouts give (ties: the answer given first); the scorer only
  picks which rollout with that answer is returned (its best-scored one).
- ``weighted`` (weighted best-of-N, Snell et al. 2024: a verifier's scores marginalised over the
  rollouts that give the same answer): the answer with the largest sum of softmax weights
  ``exp((s_i − max s)/τ)``, τ = ``temperature`` or, by default, the standard deviation of the N
  scores (scale-free: PA, log-probs and confidences live on different scales). τ → 0 is
  ``best``, τ → ∞ is ``majority``.
- ``weighted_majority`` (score-weighted majority vote, as DIVERSE / Math-Shepherd sum verifier
  probabilities): the answer with the largest sum of the scores mapped to [0, 1] by min–max over
  the N rollouts (all equal: plain majority).

Rollouts without an answer (the last turn did not parse) do not vote; with no answer at all
every mode falls back to ``best``. A missing score (None/NaN) ranks below every number and
weighs 0. Answers only mean something where the env ends with one (``Env.has_final_answer``:
reasoning tasks); the controller refuses the voting modes elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttsearch.envs.base import Trajectory
from ttsearch.envs.errors import ConfigError, unknown_choice

SELECTIONS = ("best", "weighted", "majority", "weighted_majority")


def check_selection(mode: str) -> str:
    if mode not in SELECTIONS:
        raise ConfigError(unknown_choice("best-of-N selection", mode, SELECTIONS))
    return mode


def final_answer(trajectory: Trajectory) -> str | None:
    """The last step's action when it parsed (the episode's final answer), else None."""
    if not trajectory.steps or trajectory.steps[-1].parse_error is not None:
        return None
    return trajectory.steps[-1].action.strip()


def _value(score: float | None) -> float:
    return -math.inf if score is None or math.isnan(score) else float(score)


def _best(values: list[float], members: Sequence[int]) -> int:
    return max(members, key=lambda i: (values[i], -i))


def _weights(values: list[float], mode: str, temperature: float | None) -> list[float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [0.0] * len(values)
    top, low = max(finite), min(finite)
    if mode == "weighted_majority":
        span = top - low
        return [0.0 if not math.isfinite(v) else (1.0 if span == 0 else (v - low) / span) for v in values]
    if temperature is None:
        mean = sum(finite) / len(finite)
        temperature = math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
    if temperature <= 0:
        return [1.0 if math.isfinite(v) else 0.0 for v in values]  # no spread: a plain vote
    return [math.exp((v - top) / temperature) if math.isfinite(v) else 0.0 for v in values]


def select(scores: Sequence[float | None], answers: Sequence[str | None], mode: str = "best", *,
           temperature: float | None = None) -> int:
    """The index of the rollout ``mode`` picks (module docstring); ``scores`` and ``answers``
    have one entry per rollout, in sample order."""
    check_selection(mode)
    if not scores:
        raise ConfigError("best-of-N selection needs at least one rollout")
    if len(answers) != len(scores):
        raise ConfigError(f"one answer per rollout: {len(scores)} scores, {len(answers)} answers")
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"selection temperature must be > 0 (or None: the scores' std), got {temperature!r}")
    values = [_value(s) for s in scores]
    voters = [i for i, a in enumerate(answers) if a is not None]
    if mode == "best" or not voters:
        return _best(values, range(len(values)))
    weights = [1.0] * len(values) if mode == "majority" else _weights(values, mode, temperature)
    tally: dict[str, float] = {}
    for i in voters:
        tally[answers[i]] = tally.get(answers[i], 0.0) + weights[i]
    first = {}
    for i in voters:
        first.setdefault(answers[i], i)
    winner = max(tally, key=lambda a: (tally[a], -first[a]))
    return _best(values, [i for i in voters if answers[i] == winner])
