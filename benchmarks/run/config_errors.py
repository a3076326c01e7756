"""One line per run-config problem: where (file and field path), what, and how to fix it.

    raise ConfigError(format_validation_error(err, "run.yaml", extra_problems, RunConfig))
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _fields_at(loc: tuple[Any, ...], root: Any) -> list[str] | None:
    """The valid field names of the model that holds ``loc``'s last part (for 'unknown field')."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return list(getattr(model, "model_fields", {}))


def _describe(error: Any, root: Any) -> str:
    """One pydantic error as "where: what (fix)"."""
    # drop pydantic's union-member tags (e.g. "literal['auto','none']"): not config fields
    loc = tuple(p for p in error["loc"] if isinstance(p, int) or "[" not in p)
    where = _loc_text(loc)
    if error["type"] == "extra_forbidden":
        valid = _fields_at(loc, root)
        fix = f"; valid fields here: {', '.join(valid)}" if valid else ""
        msg = f"unknown field {loc[-1]!r}{fix}"
        where = _loc_text(loc[:-1])
    elif error["type"] == "missing":
        msg = "required field is missing; add it"
    else:
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] not in ("value_error", "assertion_error"):
            msg += f" (got {error.get('input')!r})"
    return f"{where}: {msg}" if loc else msg


def format_validation_error(err: ValidationError, source: str, extra: list[str] | None = None,
                            root: Any = None) -> str:
    """One line: where (file and field path), what is wrong, and how to fix it -- for every
    error, unknown fields first (a misspelt field also makes a required one look missing), then
    ``extra`` problems found beside them."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # stable
    texts = list(dict.fromkeys([*(_describe(e, root) for e in errors), *(extra or [])]))
    if len(texts) == 1:
        return f"{source}: {texts[0]}"
    return f"{source}: {len(texts)} errors: " + " ".join(f"({i}) {t};" for i, t in enumerate(texts, 1))[:-1]
