"""The demo: greedy vs step best-of-K guided by progress advantage vs by policy log-prob.

    ttsearch demo                                   # shipped maze pair, 200 held-out layouts, K=8
    ttsearch demo --episodes 50 --k 4 --out runs/demo-small

What is played and recorded: ``ttsearch.benchmarks.run.demo``. Each finished episode is appended
to ``OUT/results.jsonl`` as it finishes; a rerun with the same OUT skips finished episodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.run.demo import play_demo, summarize

INTERRUPTED = "finished episodes are kept in OUT/results.jsonl; rerun the same command to continue"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=200, help="held-out maze layouts (default 200)")
    parser.add_argument("--k", type=int, default=8, help="candidates per turn for best-of-K (default 8)")
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--out", default="runs/demo", help="run folder for results.jsonl (default runs/demo)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    pair_dir = Path(args.pair) if args.pair else default_pair_dir("maze")
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        bar = progress.add_task("episodes", total=None)
        rows = play_demo(pair_dir, episodes=args.episodes, k=args.k, seed=args.seed, out=args.out,
                         on_start=console.print,
                         on_episode=lambda done, total: progress.update(bar, completed=done, total=total))
    summary = summarize(rows)
    out = Path(args.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = Table(title=f"Held-out slippery mazes, step best-of-{args.k} (results: {out / 'results.jsonl'})")
    for column in ("arm", "episodes", "success", "± stderr", "tokens / episode", "steps"):
        table.add_column(column)
    for arm, s in summary.items():
        table.add_row(arm, str(s["episodes"]), f"{s['success_rate']:.3f}", f"{s['stderr']:.3f}",
                      f"{s['tokens']:.1f}", f"{s['steps']:.1f}")
    Console(width=max(100, Console().width)).print(table)
    return 0
