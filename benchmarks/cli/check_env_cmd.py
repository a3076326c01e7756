"""Check an environment against the ttsearch Env contract (types, seeding, snapshots, gold path).

    ttsearch check-env maze --kwargs '{"layout_seed": 3}'
    ttsearch check-env my_pkg.envs:MyEnv --seed 1 --json

Exit status: 0 when every required check passed, 1 when one failed, 2 for a bad spec/arguments.
JSON output: {"env", "passed", "gold_success", "checks": [{"name", "passed", "detail", "required"}]}.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from ttsearch.envs.check_env import check_env
from ttsearch.envs.errors import ConfigError
from ttsearch.envs.registry import make


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="registered env name or 'module:Class'")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    parser.add_argument("--kwargs", default="{}", metavar="JSON",
                        help='constructor arguments as a JSON object, e.g. \'{"layout_seed": 3}\'')
    parser.add_argument("--steps", type=int, default=20, help="random steps to play (default 20)")
    parser.add_argument("--no-gold", action="store_true", help="do not play the gold path")


def parse_kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--kwargs must be a JSON object, e.g. '{{\"layout_seed\": 3}}': {err}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--kwargs must be a JSON object, got {type(value).__name__}")
    return value


def main(args: argparse.Namespace) -> int:
    kwargs = parse_kwargs(args.kwargs)
    # Build the first env here so an unknown spec or bad argument is a user error (exit 2),
    # not a failed check; later calls build fresh envs for the determinism check.
    first = [make(args.spec, **kwargs)]

    def factory():
        return first.pop() if first else make(args.spec, **kwargs)

    report = check_env(factory, seed=args.seed, n_random_steps=args.steps,
                       play_gold=not args.no_gold, name=args.spec)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_table(report)
    return 0 if report.passed else 1


def _print_table(report) -> None:
    table = Table(title=f"check-env {report.env}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        if check.passed:
            mark = "[green]pass[/green]"
        elif check.required:
            mark = "[red]FAIL[/red]"
        else:
            mark = "[yellow]info[/yellow]"
        table.add_row(check.name, mark, check.detail)
    console = Console()
    console.print(table)
    gold = {True: "succeeds", False: "FAILS", None: "none"}[report.gold_success]
    verdict = "[green]passed[/green]" if report.passed else "[red]failed[/red]"
    console.print(f"{report.env}: {verdict} (gold path: {gold})")
