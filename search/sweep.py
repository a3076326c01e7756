"""Budget sweeps: success rate versus compute for one controller over a grid of budgets.

    budgets = budget_grid("tokens", [64, 128, 256, 512])
    points = run_sweep(make_controller("beam", width=4, expand=4), tasks, agent, scorer, budgets,
                       out="runs/sweep/points.jsonl")
    best, cheapest = best_point(points), cheapest_within(points, tolerance=0.02)
    plot_sweep(points, "runs/sweep/sweep.png", cheapest=cheapest)

A point is one budget run on every task: its success rate (with the standard error of every
ttsearch table, ``scorers.metrics.mean_and_stderr``) and the mean compute actually used per
episode (generated + scored tokens, calls, env steps). ``cheapest_within`` names the budget with
the least mean tokens whose success rate is within ``tolerance`` (absolute, e.g. 0.02 = 2
points) of the best point's.

``out`` is a resumable record: its folder is created when missing, each point is appended as it
finishes, and a rerun reads back the points it already holds for the same sweep (same ``key``,
controller, early stop, scorer and tasks) instead of running them again, so the file never
holds a budget twice. Other sweeps may share the file; their lines are left alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ttsearch.agents.base import Proposer
from ttsearch.envs.base import Env, Task
from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.base import Scorer
from ttsearch.scorers.metrics import mean_and_stderr
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
        if not self.episodes:
            return 0.0
        return float(mean_and_stderr([1.0] * self.successes + [0.0] * (self.episodes - self.successes))[1])

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.budget.to_dict().items()) or "unlimited"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["budget"] = self.budget.to_dict()
        out.update(label=self.label, success_rate=self.success_rate, stderr=self.stderr)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPoint:
        """The point a ``to_dict`` line holds (derived fields are recomputed, not read)."""
        values = {f: data[f] for f in cls.__dataclass_fields__ if f != "budget"}
        return cls(budget=Budget(**data["budget"]), **values)


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


def sweep_id(controller: Controller, scorer: Scorer, tasks: Sequence[Task], key: str | None = None) -> str:
    """What identifies one sweep in a points file, beyond the budget of each point."""
    ident = {"key": key, "controller": controller.name, "early_stop": controller.early_stop_label,
             "scorer": scorer.name, "tasks": [[t.env, t.id, t.seed] for t in tasks]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_points(path: Path, ident: str) -> dict[str, SweepPoint]:
    """Points of sweep ``ident`` already in ``path`` by budget label; a partial last line (a
    crash mid-write) is cut off so that the next append starts on a line of its own."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with path.open("r+b") as fh:
            fh.truncate(len(data))
    done = {}
    for number, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{path} line {number} is not JSON; move the file away or use another out") from None
        if row.get("sweep") == ident:
            point = SweepPoint.from_dict(row)
            done[point.label] = point
    return done


def run_sweep(controller: Controller, tasks: Sequence[Task], agent: Proposer, scorer: Scorer,
              budgets: Sequence[Budget], *, env_factory: Callable[[Task], Callable[[], Env]] | None = None,
              out: str | Path | None = None, progress: Callable[[str], None] | None = None,
              key: str | None = None) -> list[SweepPoint]:
    """Run ``controller`` on every task under every budget; with ``out`` (JSONL) append each point
    as it finishes and reuse the points of this sweep already there (module docstring). ``key``
    names what else the caller's sweep depends on (pair, sampling, controller options...)."""
    if not tasks:
        raise ConfigError("a budget sweep needs at least one task")
    path = None if out is None else Path(out)
    ident = sweep_id(controller, scorer, tasks, key)
    done: dict[str, SweepPoint] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        done = _finished_points(path, ident)
    points = []
    for i, budget in enumerate(budgets, 1):
        label = summarize(budget, []).label
        if label in done:
            points.append(done[label])
            if progress is not None:
                progress(f"[{i}/{len(budgets)}] {label}: already in {path}")
            continue
        results = [controller.run(task, env_factory(task) if env_factory else task.make, agent, scorer, budget)
                   for task in tasks]
        point = summarize(budget, results)
        points.append(point)
        if path is not None:
            with path.open("a") as fh:
                fh.write(json.dumps({"sweep": ident, "controller": controller.name, "scorer": scorer.name,
                                     "early_stop": controller.early_stop_label, **point.to_dict()}) + "\n")
                fh.flush()
        if progress is not None:
            progress(f"[{i}/{len(budgets)}] {label}: {len(tasks)} episodes done")
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
