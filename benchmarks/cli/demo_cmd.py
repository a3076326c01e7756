"""The demo: greedy vs step best-of-K guided by progress advantage vs by policy log-prob.

    ttsearch demo                                   # shipped maze pair, 200 held-out layouts, K=8
    ttsearch demo --episodes 50 --k 4 --out runs/demo-small

Loads the default (reference, policy) pair — no GPU, nothing downloaded — and plays held-out
slippery-maze layouts three ways: the policy's greedy move; step best-of-K choosing the
candidate with the highest progress advantage β·(log π_θ − log π_ref); and step best-of-K
choosing the candidate with the highest policy log-prob. Each finished episode is appended to
``OUT/results.jsonl`` as it finishes; a rerun with the same OUT skips finished episodes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.envs import list_tasks
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import Budget, make_controller

ARMS: dict[str, tuple[str, dict[str, Any], str]] = {
    "greedy": ("greedy", {}, "policy_logprob"),
    "step-bok/progress_advantage": ("step_best_of_n", {}, "progress_advantage"),
    "step-bok/policy_logprob": ("step_best_of_n", {}, "policy_logprob"),
}
"""Demo arm -> (controller, controller kwargs, scorer)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=200, help="held-out maze layouts (default 200)")
    parser.add_argument("--k", type=int, default=8, help="candidates per turn for best-of-K (default 8)")
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--out", default="runs/demo", help="run folder for results.jsonl (default runs/demo)")
    parser.add_argument("--seed", type=int, default=0)


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm: episodes, success rate, its standard error, mean tokens (generated + scored)."""
    out: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        n = len(mine)
        rate = sum(r["success"] for r in mine) / n
        out[arm] = {
            "episodes": n,
            "success_rate": rate,
            "stderr": math.sqrt(rate * (1 - rate) / n),
            "tokens": sum(r["tokens"] for r in mine) / n,
            "steps": sum(r["steps"] for r in mine) / n,
        }
    return out


def main(args: argparse.Namespace) -> int:
    if args.episodes < 1 or args.k < 1:
        raise ConfigError("--episodes and --k must be >= 1")

    pair_dir = Path(args.pair) if args.pair else default_pair_dir("maze")
    pair = ModelPair.load_dir(pair_dir)
    env_kwargs = dict(pair.manifest.env_kwargs) if pair.manifest else {}
    env_kwargs.pop("gamma", None)  # a solver setting, not needed to play
    tasks = list_tasks("maze", split="test", limit=args.episodes, episode_seed=args.seed, **env_kwargs)
    # The maze lists its moves: any other text is a parse error, never preferred by search.
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=4, temperature=1.0),
                  parser=PlainActionParser(match_admissible=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = {(row["arm"], row["task"]): row for row in read_rows(results_path)}
    console = Console(stderr=True)
    todo = [(arm, task) for arm in ARMS for task in tasks if (arm, task.id) not in done]
    console.print(f"pair {pair_dir} (beta={pair.beta}); {len(tasks)} held-out layouts x {len(ARMS)} arms; "
                  f"{len(done)} episodes already in {results_path}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress, JsonlWriter(results_path) as sink:
        bar = progress.add_task("episodes", total=len(todo))
        for arm, task in todo:
            controller_name, kwargs, scorer_name = ARMS[arm]
            if controller_name == "step_best_of_n":
                kwargs = {**kwargs, "k": args.k}
            controller = make_controller(controller_name, seed=args.seed, **kwargs)
            scorer = make_scorer(scorer_name, beta=pair.beta) if scorer_name == "progress_advantage" \
                else make_scorer(scorer_name)
            result = controller.run(task, task.make, agent, scorer, Budget())
            row = {"arm": arm, "task": task.id, "success": result.success, "steps": len(result.trajectory.steps),
                   "tokens": result.usage.generated_tokens + result.usage.scored_tokens,
                   "actions": list(result.trajectory.actions)}
            sink.append(row)
            done[(arm, task.id)] = row
            progress.advance(bar)
    task_ids = {task.id for task in tasks}
    summary = summarize([row for (arm, tid), row in done.items() if tid in task_ids])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = Table(title=f"Held-out slippery mazes, step best-of-{args.k} (results: {results_path})")
    for column in ("arm", "episodes", "success", "± stderr", "tokens / episode", "steps"):
        table.add_column(column)
    for arm, s in summary.items():
        table.add_row(arm, str(s["episodes"]), f"{s['success_rate']:.3f}", f"{s['stderr']:.3f}",
                      f"{s['tokens']:.1f}", f"{s['steps']:.1f}")
    Console(width=max(100, Console().width)).print(table)
    return 0
