"""Budget sweeps: success rate versus compute for one controller over a grid of budgets.

    budgets = budget_grid("tokens", [64, 128, 256, 512])
    points = run_sweep(make_controller("beam", width=4, expand=4), tasks, agent, scorer, budgets,
                       out="runs/sweep/points.jsonl")
    best, cheapest = best_point(points), cheapest_within(points, tolerance=0.02)
    plot_sweep(points, "runs/sweep/sweep.png", cheapest=cheapest)

A point is one budget run on every task: its success rate (with the binomial standard error)
and the mean compute actually used per episode (generated + scored tokens, calls, env steps).
``cheapest_within`` names the budget with the least mean tokens whose success rate is within
``tolerance`` (absolute, e.g. 0.02 = 2 points) of the best point's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ttsearch.agents.base import Proposer
from ttsearch.envs.base import Env, Task
from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.base import Scorer
from ttsearch.search.base import Controller, SearchResult
from ttsearch.search.budget import LIMITS, Budget


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One budget of a sweep, aggregated over its episodes."""

    budget: Budget
    episodes: int
    successes: int
    mean_tokens: float
    mean_generated_tokens: float
    mean_scored_tokens: float
    mean_model_calls: float
    mean_env_steps: float
    budget_stops: int
    """Episodes whose search was ended by a budget limit."""

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @property
    def stderr(self) -> float:
        p = self.success_rate
        return math.sqrt(p * (1 - p) / self.episodes) if self.episodes else 0.0

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.budget.to_dict().items()) or "unlimited"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["budget"] = self.budget.to_dict()
        out.update(label=self.label, success_rate=self.success_rate, stderr=self.stderr)
        return out


def budget_grid(limit: str, values: Sequence[float], base: Budget | None = None) -> list[Budget]:
    """One Budget per value of ``limit`` (other limits from ``base``)."""
    if limit not in LIMITS:
        raise ConfigError(unknown_choice("budget limit", limit, LIMITS))
    if not values:
        raise ConfigError("a budget sweep needs at least one budget value")
    cast = float if limit == "wall_seconds" else int
    return [replace(base or Budget(), **{limit: cast(v)}) for v in values]


def summarize(budget: Budget, results: Sequence[SearchResult]) -> SweepPoint:
    n = len(results)

    def mean(fn: Callable[[SearchResult], float]) -> float:
        return sum(fn(r) for r in results) / n if n else 0.0

    return SweepPoint(
        budget=budget, episodes=n, successes=sum(r.success for r in results),
        mean_tokens=mean(lambda r: r.usage.tokens), mean_generated_tokens=mean(lambda r: r.usage.generated_tokens),
        mean_scored_tokens=mean(lambda r: r.usage.scored_tokens), mean_model_calls=mean(lambda r: r.usage.model_calls),
        mean_env_steps=mean(lambda r: r.usage.env_steps),
        budget_stops=sum(r.stop_reason.startswith("budget:") for r in results),
    )


def run_sweep(controller: Controller, tasks: Sequence[Task], agent: Proposer, scorer: Scorer,
              budgets: Sequence[Budget], *, env_factory: Callable[[Task], Callable[[], Env]] | None = None,
              out: str | Path | None = None, progress: Callable[[str], None] | None = None) -> list[SweepPoint]:
    """Run ``controller`` on every task under every budget; append each point to ``out`` (JSONL)."""
    if not tasks:
        raise ConfigError("a budget sweep needs at least one task")
    points = []
    for budget in budgets:
        results = [controller.run(task, env_factory(task) if env_factory else task.make, agent, scorer, budget)
                   for task in tasks]
        point = summarize(budget, results)
        points.append(point)
        if out is not None:
            with Path(out).open("a") as fh:
                fh.write(json.dumps({"controller": controller.name, "scorer": scorer.name,
                                     "early_stop": controller.early_stop_label, **point.to_dict()}) + "\n")
        if progress is not None:
            progress(f"{point.label}: success {point.success_rate:.3f} ± {point.stderr:.3f}, "
                     f"{point.mean_tokens:.1f} tokens/episode")
    return points


def best_point(points: Sequence[SweepPoint]) -> SweepPoint:
    """The highest success rate (the cheaper one on ties)."""
    if not points:
        raise ConfigError("no sweep points")
    return max(points, key=lambda p: (p.success_rate, -p.mean_tokens))


def cheapest_within(points: Sequence[SweepPoint], tolerance: float) -> SweepPoint:
    """The point with the fewest mean tokens whose success is within ``tolerance`` of the best."""
    if not 0 <= tolerance <= 1:
        raise ConfigError(f"tolerance is an absolute success-rate gap in [0, 1] (0.02 = 2 points), got {tolerance}")
    best = best_point(points)
    eligible = [p for p in points if p.success_rate >= best.success_rate - tolerance - 1e-12]
    return min(eligible, key=lambda p: (p.mean_tokens, -p.success_rate))


def plot_sweep(points: Sequence[SweepPoint], path: str | Path, *, title: str = "success vs compute",
               cheapest: SweepPoint | None = None) -> Path:
    """Success rate (± stderr) against mean tokens per episode, each point labelled by its budget."""
    # matplotlib: only for the plot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after selecting the Agg backend

    ordered = sorted(points, key=lambda p: p.mean_tokens)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar([p.mean_tokens for p in ordered], [p.success_rate for p in ordered],
                yerr=[p.stderr for p in ordered], marker="o", capsize=3)
    for p in ordered:
        ax.annotate(p.label, (p.mean_tokens, p.success_rate), textcoords="offset points", xytext=(4, -10), fontsize=6)
    if cheapest is not None:
        ax.scatter([cheapest.mean_tokens], [cheapest.success_rate], s=160, facecolors="none", edgecolors="red",
                   label=f"cheapest within tolerance: {cheapest.label}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("mean tokens per episode (generated + scored)")
    ax.set_ylabel("success rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
