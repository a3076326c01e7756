"""Option parsing shared by the commands: ``--set FIELD=VALUE`` and ``--option OWNER.KEY=VALUE``.

    add_set_option(parser, example="beta=0.2")                      # a repeatable --set
    config = build_recipe(MazeRecipeConfig, args.set, quick=args.quick)
    options = parse_assignments(args.option, flag="--option", example="width=4")
    per_owner = parse_owned(args.option, flag="--option", owner="CONTROLLER", example="beam.width=4")

Values are read as JSON where they parse (numbers, true/false, null, lists, objects) and kept as
strings otherwise, so ``--set demo_mix=[0.5,0.3,0.2]`` and ``--option early_stop=gate`` both work.
Every malformed item is a one-line :class:`ConfigError` that shows the expected form.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ttsearch.envs.errors import ConfigError, unknown_choice

T = TypeVar("T")


def parse_value(text: str) -> Any:
    """JSON when ``text`` is JSON, else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: Iterable[str], *, flag: str, example: str,
                      fields: Iterable[str] | None = None, what: str = "field") -> dict[str, Any]:
    """``["beta=0.2", ...]`` -> ``{"beta": 0.2}``; with ``fields``, unknown names are refused."""
    valid = None if fields is None else list(fields)
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{flag} {item!r} must look like NAME=VALUE, e.g. {flag} {example}")
        if valid is not None and name not in valid:
            raise ConfigError(f"{flag}: " + unknown_choice(what, name, valid))
        out[name] = parse_value(raw)
    return out


def parse_owned(items: Iterable[str], *, flag: str, owner: str, example: str) -> dict[str, dict[str, Any]]:
    """``["beam.width=4", ...]`` -> ``{"beam": {"width": 4}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot or not name or not option:
            raise ConfigError(f"{flag} {item!r} must look like {owner}.KEY=VALUE, e.g. {flag} {example}")
        out.setdefault(name, {})[option] = parse_value(raw)
    return out


def add_set_option(parser: argparse.ArgumentParser, *, example: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help=f"override a recipe field (repeatable), e.g. --set {example}")


def build_recipe(cls: type[T], items: Iterable[str], *, quick: bool = False, **base: Any) -> T:
    """A recipe config dataclass from ``--set`` items laid over ``base`` (``cls.quick`` when
    ``quick``); lists become tuples, as the frozen configs store them."""
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    overrides = parse_assignments(items, flag="--set", example=f"{fields[0]}=...", fields=fields,
                                  what="recipe field")
    values: Mapping[str, Any] = {**base, **{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in overrides.items()}}
    try:
        return cls.quick(**values) if quick else cls(**values)  # type: ignore[attr-defined]
    except TypeError as err:
        raise ConfigError(f"bad recipe override: {err}") from err
