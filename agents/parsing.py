"""Turn a model's assistant message into an environment action.

    parser = PlainActionParser(lowercase=True, match_admissible=True)
    parser.parse("Action: North.", admissible=("north", "south"))      # -> "north"
    action, error = parse_candidate(parser, "???", admissible=("north",))  # -> ("???", "...")

Parsers raise :class:`ParseError`; :func:`parse_candidate` never raises: an unparseable message
becomes the raw text as the action plus the error message, so the environment answers with
its own invalid-action feedback and the failure is recorded as data (``Step.parse_error``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ttsearch.envs.errors import ParseError

_SPACES = re.compile(r"\s+")


@runtime_checkable
class ActionParser(Protocol):
    """Parses one assistant message into an action string, or raises ParseError."""

    def parse(self, text: str, *, admissible: Sequence[str] | None = None) -> str: ...


class PlainActionParser:
    """One action per message: the line after ``prefix`` if present, else the first non-empty line.

    The action is stripped of surrounding whitespace, quotes and backticks and a trailing
    period; ``lowercase`` folds case; ``match_admissible`` maps it onto the environment's
    admissible actions (exact, then case-insensitive, then whitespace-insensitive) and raises
    ParseError when none matches; ``require_prefix`` raises when the prefix is missing.
    """

    def __init__(
        self,
        *,
        prefix: str | None = "Action:",
        require_prefix: bool = False,
        lowercase: bool = False,
        match_admissible: bool = False,
        strip_chars: str = "`\"' \t",
    ):
        self.prefix = prefix
        self.require_prefix = require_prefix
        self.lowercase = lowercase
        self.match_admissible = match_admissible
        self.strip_chars = strip_chars
        self._prefix_re = (
            re.compile(r"^\s*" + re.escape(prefix) + r"\s*(.*)$", re.IGNORECASE | re.MULTILINE)
            if prefix
            else None
        )

    def parse(self, text: str, *, admissible: Sequence[str] | None = None) -> str:
        line = None
        if self._prefix_re is not None:
            found = self._prefix_re.search(text)
            if found:
                line = found.group(1)
            elif self.require_prefix:
                raise ParseError(f"no line starting with {self.prefix!r} in the message")
        if line is None:
            line = next((ln for ln in text.splitlines() if ln.strip()), "")
        action = line.strip().strip(self.strip_chars)
        if action.endswith(".") and not action.endswith(".."):
            action = action[:-1].strip(self.strip_chars)
        if self.lowercase:
            action = action.lower()
        if not action:
            raise ParseError("empty action: the message has no text to act on")
        if self.match_admissible and admissible is not None:
            return self._match(action, admissible)
        return action

    @staticmethod
    def _match(action: str, admissible: Sequence[str]) -> str:
        if action in admissible:
            return action
        folded = {a.casefold(): a for a in admissible}
        if action.casefold() in folded:
            return folded[action.casefold()]
        squashed = {_SPACES.sub(" ", a).strip().casefold(): a for a in admissible}
        key = _SPACES.sub(" ", action).strip().casefold()
        if key in squashed:
            return squashed[key]
        shown = ", ".join(admissible[:20]) + (", ..." if len(admissible) > 20 else "")
        raise ParseError(f"{action!r} is not an admissible action; valid: {shown}")


def parse_candidate(
    parser: ActionParser, text: str, *, admissible: Sequence[str] | None = None
) -> tuple[str, str | None]:
    """``(action, parse_error)``; never raises: on failure the action is the raw text."""
    try:
        return parser.parse(text, admissible=admissible), None
    except ParseError as err:
        return text, str(err)
    except Exception as err:  # a buggy custom parser must not end an episode
        return text, f"parser {type(parser).__name__} crashed: {type(err).__name__}: {err}"
