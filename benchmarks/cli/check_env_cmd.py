"""Check an environment against the ttsearch Env contract (types, seeding, snapshots, gold path, speed).

    ttsearch check-env maze                                  # on the first task of its test split
    ttsearch check-env maze --kwargs '{"layout_seed": 3}'    # on an env built with these arguments
    ttsearch check-env my_pkg.envs:MyEnv --seed 1 --json
    ttsearch check-env keydoor --import keydoor_env          # a user env registered by its module

Without ``--kwargs``, an environment with a task list is checked on its first task of
``--split`` (its kwargs and seed); one without is built with no arguments. Every env call is
timed: calls slower than ``--slow`` seconds are flagged (the ``speed`` check, information
only); a call that does not return within ``--timeout`` seconds fails the check in progress
(the checks then run on one worker thread; ``--timeout 0`` keeps them on the main thread, for
an env that needs it, e.g. one that installs signal handlers).

Exit status: 0 when every required check passed, 1 when one failed, 2 for a bad spec/arguments
or an environment that cannot be built (one line, no traceback). JSON output: {"env", "passed",
"gold_success", "checks": [{"name", "passed", "detail", "required"}], "slow",
"slow_threshold_s", "timings": {call: {"calls", "mean_s", "max_s", "slow_calls"}}, "task"}.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ttsearch.envs.check_env import SLOW_CALL_S, check_env
from ttsearch.envs.errors import ConfigError, EnvError
from ttsearch.envs.registry import env_entry, list_tasks, make


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="registered env name or 'module:Class'")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=None, help="episode seed (default: the task's, else 0)")
    parser.add_argument("--kwargs", default=None, metavar="JSON",
                        help='constructor arguments as a JSON object, e.g. \'{"layout_seed": 3}\' '
                             "(default: the env's first listed task)")
    parser.add_argument("--split", default="test", help="the split whose first task is checked (default test)")
    parser.add_argument("--steps", type=int, default=20, help="random steps to play (default 20)")
    parser.add_argument("--no-gold", action="store_true", help="do not play the gold path")
    parser.add_argument("--slow", type=float, default=SLOW_CALL_S, metavar="SECONDS",
                        help=f"flag env calls slower than this (default {SLOW_CALL_S:g})")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="fail a check whose env call does not return within this (default 60; the checks "
                             "then run on a worker thread); 0: no limit, every call on the main thread")


def parse_kwargs(text: str, *, flag: str = "--kwargs") -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{flag} must be a JSON object, e.g. '{{\"layout_seed\": 3}}': {err}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


def _target(args: argparse.Namespace) -> tuple[dict[str, Any], int, dict[str, Any] | None]:
    """(constructor kwargs, episode seed, the task checked or None)."""
    if args.kwargs is not None:
        return parse_kwargs(args.kwargs), 0 if args.seed is None else args.seed, None
    if env_entry(args.spec).tasks is None:
        return {}, 0 if args.seed is None else args.seed, None
    tasks = list_tasks(args.spec, split=args.split, limit=1)
    if not tasks:
        raise EnvError(f"environment {args.spec!r} listed no tasks for split {args.split!r}; "
                       "pass --split or --kwargs")
    task = tasks[0]
    seed = task.seed if args.seed is None else args.seed
    return dict(task.kwargs), seed, {"id": task.id, "split": task.split, "seed": seed, "kwargs": dict(task.kwargs)}


def main(args: argparse.Namespace) -> int:
    if not args.slow > 0 or not args.timeout >= 0:
        raise ConfigError(f"--slow must be > 0 and --timeout >= 0 seconds, got {args.slow:g} and {args.timeout:g}")
    kwargs, seed, task = _target(args)
    env_entry(args.spec)  # an unknown name or a module that does not import: exit 2 before checking

    def factory():
        return make(args.spec, **kwargs)

    report = check_env(factory, seed=seed, n_random_steps=args.steps, play_gold=not args.no_gold,
                       name=args.spec, slow_s=args.slow, timeout_s=args.timeout or None)
    construct = report.checks[0]
    if construct.name == "construct" and not construct.passed:  # nothing to check: a user error
        detail = construct.detail.removeprefix("raised EnvError: ")
        for_task = f" for task {task['id']!r}" if task else ""
        raise EnvError(f"cannot build {args.spec!r}{for_task}: {detail}")
    if args.json:
        print(json.dumps({**report.to_dict(), "task": task}, indent=2))
    else:
        _print_table(report, task)
    return 0 if report.passed else 1


def _print_table(report, task: dict[str, Any] | None) -> None:
    title = f"check-env {report.env}" + (f" (task {task['id']}, seed {task['seed']})" if task else "")
    table = Table(title=escape(title))
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        if check.passed:
            mark = "[green]pass[/green]"
        elif check.required:
            mark = "[red]FAIL[/red]"
        else:
            mark = "[yellow]warn[/yellow]" if check.name == "speed" else "[yellow]info[/yellow]"
        table.add_row(check.name, mark, escape(check.detail))
    console = Console()
    console.print(table)
    gold = {True: "succeeds", False: "FAILS", None: "none"}[report.gold_success]
    verdict = "[green]passed[/green]" if report.passed else "[red]failed[/red]"
    slow = ", [yellow]SLOW env calls (see speed)[/yellow]" if report.slow else ""
    console.print(f"{escape(report.env)}: {verdict} (gold path: {gold}){slow}")
