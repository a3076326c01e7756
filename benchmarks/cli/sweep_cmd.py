"""`ttsearch sweep`: success vs compute of one controller over a grid of budgets.

    ttsearch sweep --controller beam --option width=3 --option expand=3 \\
        --limit tokens --budgets 30,60,120,240,480 --episodes 100 --out runs/sweep-beam
    ttsearch sweep --controller step_best_of_n --option k=8 --early-stop gate --json

Writes ``OUT/points.jsonl`` (one success-vs-compute point per budget: success rate ± stderr,
mean generated/scored tokens, calls and env steps per episode) and ``OUT/sweep.png``, and names
the cheapest budget whose success is within ``--tolerance`` (absolute; 0.02 = 2 points) of the
best. Tasks are the pair's environment's held-out split (``--split``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ttsearch.benchmarks.cli.options import parse_assignments, parse_value
from ttsearch.benchmarks.perf.search import load_agent, make_scorer_for, make_tasks
from ttsearch.envs.errors import ConfigError
from ttsearch.search import Budget, make_controller
from ttsearch.search.sweep import best_point, budget_grid, cheapest_within, plot_sweep, run_sweep


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", required=True, help="controller name (greedy, beam, mcts, ...)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="controller option, e.g. width=4 (repeatable; JSON values)")
    parser.add_argument("--early-stop", default=None, help="early-stopping rule name or JSON {\"name\": ...}")
    parser.add_argument("--scorer", default="progress_advantage")
    parser.add_argument("--limit", default="tokens", help="the budget limit to sweep (default tokens)")
    parser.add_argument("--budgets", required=True, help="comma-separated values of the limit")
    parser.add_argument("--base-budget", default="", help="other limits held fixed, e.g. env_steps=400")
    parser.add_argument("--tolerance", type=float, default=0.02, help="success gap to the best (default 0.02)")
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--split", default="test")
    parser.add_argument("--task-start", type=int, default=None, help="first layout seed to list tasks from")
    parser.add_argument("--max-new-tokens", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/sweep", help="output folder (points.jsonl, sweep.png)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    options = parse_assignments(args.option, flag="--option", example="width=4")
    if args.early_stop:
        options["early_stop"] = parse_value(args.early_stop)
    try:
        values = [float(v) for v in args.budgets.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated numbers, got {args.budgets!r}") from None
    budgets = budget_grid(args.limit, values, Budget.parse(args.base_budget))
    controller = make_controller(args.controller, seed=args.seed, **options)
    if not 0 <= args.tolerance <= 1:
        raise ConfigError(f"--tolerance must be in [0, 1], got {args.tolerance}")
    agent, pair, env, env_kwargs = load_agent(args.pair, max_new_tokens=args.max_new_tokens,
                                              temperature=args.temperature)
    scorer = make_scorer_for(args.scorer, pair)
    tasks = make_tasks(env, env_kwargs, split=args.split, episodes=args.episodes, start=args.task_start)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points_path = out / "points.jsonl"
    points_path.write_text("")
    points = run_sweep(controller, tasks, agent, scorer, budgets, out=points_path,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    best, cheapest = best_point(points), cheapest_within(points, args.tolerance)
    title = f"{args.controller} / {args.scorer} on {len(tasks)} {args.split} tasks"
    plot = plot_sweep(points, out / "sweep.png", title=title, cheapest=cheapest)
    summary = {"controller": args.controller, "options": options, "scorer": args.scorer, "limit": args.limit,
               "episodes": len(tasks), "points": [p.to_dict() for p in points], "best": best.to_dict(),
               "cheapest_within_tolerance": cheapest.to_dict(), "tolerance": args.tolerance,
               "points_file": str(points_path), "plot": str(plot)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for p in points:
            print(f"{p.label:>24}: success {p.success_rate:.3f} ± {p.stderr:.3f}, {p.mean_tokens:.1f} tokens/episode")
        print(f"best: {best.label} ({best.success_rate:.3f}); cheapest within {args.tolerance:g}: "
              f"{cheapest.label} ({cheapest.success_rate:.3f}, {cheapest.mean_tokens:.1f} tokens/episode)")
        print(f"wrote {points_path} and {plot}")
    return 0
