"""`ttsearch bench search`: controllers x scorers (+ early stopping) at one equal token budget.

    ttsearch bench search --json                                   # shipped maze pair, 200 held-out layouts
    ttsearch bench search --episodes 50 --budget tokens=240 --workers 2 --out runs/bench-search --json
    ttsearch bench search --cells beam/progress_advantage,greedy --option beam.width=3

What is run and reported: ``ttsearch.benchmarks.perf.search``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ttsearch.benchmarks.cli.options import parse_owned, parse_value
from ttsearch.benchmarks.perf.search import (
    CONTROLLER_CONFIGS,
    SCORERS,
    SearchBenchSettings,
    run_search_bench,
)
from ttsearch.envs.errors import ConfigError

INTERRUPTED = "with --out, finished episodes are kept in OUT/cells/; rerun the same command to continue"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--episodes", type=int, default=200, help="held-out layouts per cell (default 200)")
    parser.add_argument("--split", default="test", help="task split (tune on 'train', report on 'test')")
    parser.add_argument("--task-start", type=int, default=None,
                        help="first layout seed to list tasks from (e.g. 20000: training layouts the pair never saw)")
    parser.add_argument("--budget", default="tokens=240", help="per-episode budget, e.g. tokens=240,env_steps=400")
    parser.add_argument("--max-new-tokens", type=int, default=2, help="sampling cap per turn (maze moves: 1 token + stop)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--scorers", default=",".join(SCORERS), help="comma-separated scorer names")
    parser.add_argument("--controllers", default=",".join(CONTROLLER_CONFIGS), help="comma-separated controllers")
    parser.add_argument("--no-early-stop", action="store_true", help="skip the early-stopping variants")
    parser.add_argument("--early-stop", action="append", default=[], metavar="CONTROLLER=JSON",
                        help='replace the default early-stopping variants, e.g. '
                             'step_best_of_n=\'{"name": "gate", "threshold": 0.8}\' (repeatable)')
    parser.add_argument("--cells", default=None, help="run only these cell ids (comma-separated)")
    parser.add_argument("--option", action="append", default=[], metavar="CONTROLLER.KEY=VALUE",
                        help="override a controller option, e.g. beam.width=4 (repeatable)")
    parser.add_argument("--baseline-scale", type=float, default=1.5,
                        help="sample-count multiplier for scorers that need no reference pass (equal compute)")
    parser.add_argument("--horizon", default="auto",
                        help="step limit given to step-by-step controllers: auto (the env's), none, or a number")
    parser.add_argument("--scorer-option", action="append", default=[], metavar="SCORER.KEY=VALUE",
                        help="scorer option, e.g. progress_advantage.step_agg=sum (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="controller seed")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (one cell each)")
    parser.add_argument("--out", default=None, help="folder for per-episode records (resumable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def settings_from_args(args: argparse.Namespace) -> SearchBenchSettings:
    variants = None
    if args.early_stop:
        variants = []
        for item in args.early_stop:
            name, sep, text = item.partition("=")
            spec = parse_value(text)
            if not sep or not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"--early-stop {item!r} must look like CONTROLLER={{\"name\": ..., options}}")
            variants.append((name, spec))
    return SearchBenchSettings(
        pair=args.pair, episodes=args.episodes, split=args.split, task_start=args.task_start, budget=args.budget,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        scorers=tuple(s for s in args.scorers.split(",") if s),
        controllers=tuple(c for c in args.controllers.split(",") if c),
        early_stop=not args.no_early_stop, early_stop_variants=None if variants is None else tuple(variants),
        cells=tuple(args.cells.split(",")) if args.cells else None,
        options=parse_owned(args.option, flag="--option", owner="CONTROLLER", example="beam.width=4"),
        scorer_options=parse_owned(args.scorer_option, flag="--scorer-option", owner="SCORER",
                                   example="progress_advantage.step_agg=sum"),
        baseline_scale=args.baseline_scale, horizon=args.horizon, seed=args.seed, workers=args.workers,
        out=args.out,
    )


def main(args: argparse.Namespace) -> int:
    out = run_search_bench(settings_from_args(args), log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_table(out)
    return 0


def _print_table(out: dict[str, Any]) -> None:
    table = Table(title=f"search on {out['episodes']} {out['split']} mazes at budget {out['budget']}")
    for column in ("cell", "success", "± stderr", "tokens/ep", "calls/ep", "budget stops"):
        table.add_column(column)
    for r in out["results"]:
        table.add_row(r["cell"], f"{r['success_rate']:.3f}", f"{r['stderr']:.3f}", f"{r['tokens']:.1f}",
                      f"{r['model_calls']:.1f}", str(r["budget_stops"]))
    console = Console()
    console.print(table)
    for c in out["comparisons"]:
        console.print(f"{'holds ' if c['holds'] else 'FAILS '} {c['claim']}: {c['diff']:+.3f} ± {c['stderr']:.3f}")
    for e in out["early_stopping"]:
        console.print(f"{'holds ' if e['holds'] else 'FAILS '} {e['cell']}: {e['token_saving']:.0%} fewer tokens, "
                      f"success {e['success_diff']:+.3f} ± {e['stderr']:.3f}")
