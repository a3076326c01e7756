"""List the environments known here (registered, and installed entry points), and whether they import.

    ttsearch envs
    ttsearch envs --import keydoor_env   # with the environments a module registers
    ttsearch envs --json    # [{"name", "factory", "tasks", "description", "source", "importable", "error"}]

``source`` is "registry" or "entry point <distribution>" (group ``ttsearch.envs``; listing loads it).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from ttsearch.envs.errors import TtsearchError
from ttsearch.envs.registry import REGISTRY, entry_points, env_entry, load_attr


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def registry_rows() -> list[dict[str, Any]]:
    """One row per registered environment; importing each factory tells if its deps are here."""

    rows = []
    plugins = {name: ep for name, ep in entry_points().items() if name not in REGISTRY}
    for name in sorted({*REGISTRY, *plugins}):
        source = "registry" if name in REGISTRY else f"entry point {getattr(plugins[name].dist, 'name', '?')}"
        factory, tasks, description, error = (plugins[name].value if name in plugins else None), None, "", None
        try:
            entry = env_entry(name)  # loads an entry point
            factory, tasks, description = entry.factory, entry.tasks, entry.description
            load_attr(entry.factory, what="environment", extra=entry.extra)
        except TtsearchError as err:
            error = str(err)
        except Exception as err:  # an adapter that breaks on import is reported, not fatal
            error = f"{type(err).__name__}: {err}"
        rows.append({"name": name, "factory": factory, "tasks": tasks, "description": description,
                     "source": source, "importable": error is None, "error": error})
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
