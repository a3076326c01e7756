"""`ttsearch sweep`: success vs compute of one controller over a grid of budgets, on any environment.

    ttsearch sweep --controller beam --option width=3 --option expand=3 \\
        --limit tokens --budgets 30,60,120,240,480 --episodes 100 --out runs/sweep-beam
    ttsearch sweep --controller step_best_of_n --option k=8 --early-stop gate --json
    ttsearch sweep --import keydoor_env --env keydoor --controller greedy --budgets 40,80 --out runs/kd
    ttsearch sweep --config my-run.yaml --controller beam --budgets 60,120 --out runs/kd-beam
    ttsearch sweep ... --out runs/sweep-beam --resume      # after Ctrl-C: only the missing budgets run

Writes ``OUT/sweep.json`` (the settings), ``OUT/points.jsonl`` (one success-vs-compute point per
budget: success rate ± stderr, mean generated/scored tokens, calls and env steps per episode)
and ``OUT/sweep.png``, and names the cheapest budget whose success is within ``--tolerance``
(absolute; 0.02 = 2 points) of the best, unless no budget solved anything (then it warns).
Tasks: ``--env`` (default: the pair's env) and its task lister's ``--split``, or the tasks of a
run config (``--config``: its imports, pair, tasks, sampling, parser and horizon). Like
``ttsearch run``, an existing sweep folder is continued only with ``--resume`` and the same
settings. Library: ``ttsearch.benchmarks.run.sweep``.
"""

from __future__ import annotations

import argparse
import json
import sys

from ttsearch.benchmarks.cli.check_env_cmd import parse_kwargs
from ttsearch.benchmarks.cli.options import parse_assignments, parse_value
from ttsearch.benchmarks.run.sweep import SweepSettings, run_budget_sweep
from ttsearch.envs.errors import ConfigError

INTERRUPTED = "finished budgets are kept in OUT/points.jsonl; rerun the same command with --resume to continue"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", required=True, help="controller name (greedy, beam, mcts, ...)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="controller option, e.g. width=4 (repeatable; JSON values)")
    parser.add_argument("--early-stop", default=None, help="early-stopping rule name or JSON {\"name\": ...}")
    parser.add_argument("--scorer", default="progress_advantage",
                        help="scorer name, or with --config one of its scorer labels (default progress_advantage)")
    parser.add_argument("--limit", default="tokens", help="the budget limit to sweep (default tokens)")
    parser.add_argument("--budgets", required=True, help="comma-separated values of the limit")
    parser.add_argument("--base-budget", default="", help="other limits held fixed, e.g. env_steps=400")
    parser.add_argument("--tolerance", type=float, default=0.02, help="success gap to the best (default 0.02)")
    parser.add_argument("--config", default=None, metavar="RUN.yaml",
                        help="take the pair, tasks, sampling, parser and horizon from a `ttsearch run` config")
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--env", default=None, help="environment (default: the pair's): a name or 'module:Class'")
    parser.add_argument("--env-kwargs", default=None, metavar="JSON",
                        help="options of the env's task lister, as a JSON object")
    parser.add_argument("--episodes", type=int, default=None,
                        help="tasks per budget (default 100; with --config every task it lists)")
    parser.add_argument("--split", default=None, help="task split (default test)")
    parser.add_argument("--task-start", type=int, default=None, help="first layout seed to list tasks from")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens per turn (default 2)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1.0)")
    parser.add_argument("--horizon", default="auto",
                        help="step limit for paced controllers: auto (the env's max_steps), none or N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/sweep", help="output folder (sweep.json, points.jsonl, sweep.png)")
    parser.add_argument("--resume", action="store_true", help="continue the sweep in --out (same settings)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    options = parse_assignments(args.option, flag="--option", example="width=4")
    if args.early_stop:
        options["early_stop"] = parse_value(args.early_stop)
    try:
        budgets = tuple(float(v) for v in args.budgets.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated numbers, got {args.budgets!r}") from None
    return SweepSettings(
        controller=args.controller, budgets=budgets, options=options, scorer=args.scorer, limit=args.limit,
        base_budget=args.base_budget, tolerance=args.tolerance, config=args.config, pair=args.pair, env=args.env,
        env_kwargs=parse_kwargs(args.env_kwargs, flag="--env-kwargs") if args.env_kwargs else {},
        episodes=args.episodes, split=args.split, task_start=args.task_start, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, horizon=args.horizon, seed=args.seed)


def main(args: argparse.Namespace) -> int:
    summary = run_budget_sweep(settings_from_args(args), args.out, resume=args.resume,
                               log=lambda line: print(line, file=sys.stderr, flush=True))
    for warning in summary["warnings"]:
        print(f"ttsearch: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for p in summary["points"]:
        print(f"{p['label']:>24}: success {p['success_rate']:.3f} ± {p['stderr']:.3f}, "
              f"{p['mean_tokens']:.1f} tokens/episode")
    best, cheapest = summary["best"], summary["cheapest_within_tolerance"]
    pick = ("none (no budget solved anything)" if cheapest is None else
            f"{cheapest['label']} ({cheapest['success_rate']:.3f}, {cheapest['mean_tokens']:.1f} tokens/episode)")
    print(f"best: {best['label']} ({best['success_rate']:.3f}); cheapest within {summary['tolerance']:g}: {pick}")
    print(f"wrote {summary['points_file']} and {summary['plot']}")
    return 0
