"""Compute-budget tuning: per task difficulty, the cheapest arm that is (nearly) as good as the best.

    from ttsearch.benchmarks.report.budget_tuning import EpisodeOutcome, tune
    table = tune([EpisodeOutcome("easy", "greedy", True, 40), EpisodeOutcome("easy", "bon16", True, 700), ...])
    table.choice["easy"].arm            # 'greedy' when it is within tolerance of the best arm

Episodes are grouped by difficulty × arm; each cell has its success rate ± standard error
(``scorers.metrics.mean_and_stderr``, the one formula of every table) and mean tokens (generated + reference-scored). In each difficulty the
*best* arm has the highest success rate (ties: fewer tokens); the *compute-optimal* arm is the
cheapest arm whose success is at least ``best − tolerance``, with ``tolerance`` = the best arm's
standard error by default (or a fixed absolute value). Ties in tokens go to higher success, then
the arm name. A group ``"all"`` pools every difficulty.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ttsearch.envs.errors import ConfigError
from ttsearch.scorers.metrics import success_rate_and_stderr

ALL = "all"


@dataclass(frozen=True, slots=True)
class EpisodeOutcome:
    difficulty: str
    arm: str
    success: bool
    tokens: float


@dataclass(frozen=True, slots=True)
class ArmCell:
    difficulty: str
    arm: str
    n: int
    success: float
    stderr: float
    mean_tokens: float


@dataclass(frozen=True, slots=True)
class BudgetTable:
    """``cells[difficulty]`` (arms sorted by mean tokens); ``choice``/``best`` per difficulty."""

    cells: dict[str, tuple[ArmCell, ...]]
    best: dict[str, ArmCell]
    choice: dict[str, ArmCell]
    tolerance: dict[str, float]


def _cell(difficulty: str, arm: str, episodes: Sequence[EpisodeOutcome]) -> ArmCell:
    n = len(episodes)
    p, stderr = success_rate_and_stderr([e.success for e in episodes])
    return ArmCell(difficulty, arm, n, p, stderr, sum(e.tokens for e in episodes) / n)


def tune(episodes: Sequence[EpisodeOutcome], *, tolerance: float | None = None) -> BudgetTable:
    """Group, summarise and pick the compute-optimal arm per difficulty (module docstring)."""
    if tolerance is not None and not tolerance >= 0:
        raise ConfigError(f"budget-tuning tolerance must be >= 0 (absolute success gap), got {tolerance}")
    groups: dict[str, dict[str, list[EpisodeOutcome]]] = defaultdict(lambda: defaultdict(list))
    for e in episodes:
        groups[e.difficulty][e.arm].append(e)
        groups[ALL][e.arm].append(e)
    cells, best, choice, tol = {}, {}, {}, {}
    for difficulty in sorted(groups, key=lambda d: (d == ALL, d)):
        row = tuple(sorted((_cell(difficulty, arm, eps) for arm, eps in groups[difficulty].items()),
                           key=lambda c: (c.mean_tokens, c.arm)))
        top = max(row, key=lambda c: (c.success, -c.mean_tokens))
        gap = top.stderr if tolerance is None else tolerance
        eligible = [c for c in row if c.success >= top.success - gap - 1e-12]
        cells[difficulty], best[difficulty], tol[difficulty] = row, top, gap
        choice[difficulty] = min(eligible, key=lambda c: (c.mean_tokens, -c.success, c.arm))
    return BudgetTable(cells, best, choice, tol)
