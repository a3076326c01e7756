"""List the registered environments, their factories, and whether they import here.

    ttsearch envs
    ttsearch envs --json    # [{"name", "factory", "tasks", "description", "importable", "error"}]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from ttsearch.envs.errors import TtsearchError
from ttsearch.envs.registry import REGISTRY, load_attr


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def registry_rows() -> list[dict[str, Any]]:
    """One row per registered environment; importing each factory tells if its deps are here."""

    rows = []
    for name, entry in sorted(REGISTRY.items()):
        error = None
        try:
            load_attr(entry.factory, what="environment", extra=entry.extra)
        except TtsearchError as err:
            error = str(err)
        except Exception as err:  # an adapter that breaks on import is reported, not fatal
            error = f"{type(err).__name__}: {err}"
        rows.append({"name": name, "factory": entry.factory, "tasks": entry.tasks,
                     "description": entry.description, "importable": error is None, "error": error})
    return rows


def main(args: argparse.Namespace) -> int:
    rows = registry_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    table = Table(title="ttsearch environments")
    for column in ("name", "factory", "importable", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        ok = "[green]yes[/green]" if row["importable"] else f"[red]no[/red]: {row['error']}"
        table.add_row(row["name"], row["factory"], ok, row["description"])
    Console().print(table)
    return 0
