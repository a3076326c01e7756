"""Turn a model's assistant message into an environment action.

    parser = PlainActionParser(lowercase=True, match_admissible=True)
    parser.parse("Action: North.", admissible=("north", "south"))      # -> "north"
    AdmissibleMatchParser().parse("The exit is 3 east", admissible=("north", "east"))   # -> "east"
    action, error = parse_candidate(parser, "???", admissible=("north",))  # -> ("???", "...")

Parsers raise :class:`ParseError`; :func:`parse_candidate` never raises: an unparseable message
becomes the raw text as the action plus the error message, so the environment answers with
its own invalid-action feedback and the failure is recorded as data (``Step.parse_error``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
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


@lru_cache(maxsize=4096)  # admissible actions repeat turn after turn; bounded for large action sets
def _whole_words(action: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in action.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


class AdmissibleMatchParser:
    """The first admissible action the message mentions as a whole word (or words).

    For chatty models that say the move inside a sentence ("The exit is 3 east" -> "east"):
    every admissible action is looked for case-insensitively as a whole word sequence (any
    whitespace between its words; a letter, digit or underscore next to it breaks the match,
    so "northnorth" names nothing); the one whose first mention starts earliest wins, the
    longest on a tie ("go north" over "go"). No admissible action mentioned: ParseError. An
    observation without admissible actions falls back to ``fallback`` (default: the first line,
    as :class:`PlainActionParser`).
    """

    def __init__(self, *, fallback: ActionParser | None = None):
        self.fallback = fallback if fallback is not None else PlainActionParser()

    def parse(self, text: str, *, admissible: Sequence[str] | None = None) -> str:
        if admissible is None:
            return self.fallback.parse(text, admissible=admissible)
        found = []
        for action in admissible:
            if not action.strip():
                continue
            match = _whole_words(action).search(text)
            if match:
                found.append((match.start(), -len(action), action))
        if not found:
            shown = ", ".join(admissible[:20]) + (", ..." if len(admissible) > 20 else "")
            raise ParseError(f"the message names no admissible action as a whole word; valid: {shown}")
        return min(found)[2]


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
