"""Turn a model's assistant message into an environment action.

    parser = PlainActionParser(lowercase=True, match_admissible=True)
    parser.parse("Action: North.", admissible=("north", "south"))      # -> "north"
    AdmissibleMatchParser().parse("The exit is 3 east", admissible=("north", "east"))   # -> "east"
    action, error = parse_candidate(parser, "???", admissible=("north",))  # -> ("???", "...")
    PlainActionParser().decisive_span("  north.", admissible=None)       # -> (2, 7): "north"
    token_span(tokenizer, ids, (2, 7))                                 # -> the tokens over those chars

Parsers raise :class:`ParseError`; :func:`parse_candidate` never raises: an unparseable message
becomes the raw text as the action plus the error message, so the environment answers with
its own invalid-action feedback and the failure is recorded as data (``Step.parse_error``).

**Decisive spans** (optional part of the contract): a parser may also say which characters of
the message decide the action, ``decisive_span(text, *, admissible) -> (start, end) | None``
(None when ``parse`` would fail). The agent maps them to the action tokens
(:func:`decisive_token_span`), so a scorer can read only the tokens that chose the move (the
maze's move word, a tool call's name and arguments, the final number) and not the chatter
around them. The shipped parsers all say; a parser without the method leaves it unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Protocol, runtime_checkable

from ttsearch.envs.adapters.tool_calls import parse_turn
from ttsearch.envs.errors import ParseError

_SPACES = re.compile(r"\s+")


@runtime_checkable
class ActionParser(Protocol):
    """Parses one assistant message into an action string, or raises ParseError.

    Optionally also ``decisive_span(text, *, admissible=None) -> tuple[int, int] | None``: the
    character span [start, end) of ``text`` that decides the action ``parse`` returns (None
    when it would raise). Not part of the runtime check: parsers without it are fine.
    """

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
        return self._parse(text, admissible)[0]

    def decisive_span(self, text: str, *, admissible: Sequence[str] | None = None) -> tuple[int, int] | None:
        """The characters of the action as written (the chosen line, stripped); None on a parse error."""
        try:
            return self._parse(text, admissible)[1]
        except ParseError:
            return None

    def _line(self, text: str) -> tuple[str, int]:
        """The line the action is read from and where it starts in ``text``."""
        if self._prefix_re is not None:
            found = self._prefix_re.search(text)
            if found:
                return found.group(1), found.start(1)
            if self.require_prefix:
                raise ParseError(f"no line starting with {self.prefix!r} in the message")
        at = 0
        for line in text.splitlines(keepends=True):
            if line.strip():
                return line.rstrip("\r\n"), at
            at += len(line)
        return "", 0

    def _parse(self, text: str, admissible: Sequence[str] | None) -> tuple[str, tuple[int, int]]:
        line, start = self._line(text)
        action = line.strip().strip(self.strip_chars)
        if action.endswith(".") and not action.endswith(".."):
            action = action[:-1].strip(self.strip_chars)
        begin = start + line.find(action) if action else start
        span = (begin, begin + len(action))
        if self.lowercase:
            action = action.lower()
        if not action:
            raise ParseError("empty action: the message has no text to act on")
        if self.match_admissible and admissible is not None:
            return self._match(action, admissible), span
        return action, span

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
        return self._find(text, admissible)[2]

    def decisive_span(self, text: str, *, admissible: Sequence[str] | None = None) -> tuple[int, int] | None:
        """Where the chosen action is named (the fallback's span without admissible actions)."""
        if admissible is None:
            return decisive_char_span(self.fallback, text, admissible=admissible)
        try:
            start, _, action = self._find(text, admissible)
        except ParseError:
            return None
        match = _whole_words(action).search(text, start)
        return (match.start(), match.end()) if match else None

    @staticmethod
    def _find(text: str, admissible: Sequence[str]) -> tuple[int, int, str]:
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
        return min(found)


_CALL_BLOCK = re.compile(r"<tool_call\s*>.*?(?:</tool_call\s*>|\Z)", re.DOTALL | re.IGNORECASE)


class ToolCallParser:
    """For tool-calling envs, which read the tool calls themselves: the action is the whole
    message (ParseError when it attempts a call that cannot be read); the decisive span is the
    tool calls (first ``<tool_call>`` to the end of the last, or the bare JSON call object), or
    for a plain-text final answer the answer text, never the ``<think>`` reasoning before it."""

    def parse(self, text: str, *, admissible: Sequence[str] | None = None) -> str:
        parse_turn(text)  # raises ParseError on an unreadable call
        return text

    def decisive_span(self, text: str, *, admissible: Sequence[str] | None = None) -> tuple[int, int] | None:
        try:
            turn = parse_turn(text)
        except ParseError:
            return None
        start = text.rfind("</think>") + len("</think>") if "</think>" in text else 0
        blocks = list(_CALL_BLOCK.finditer(text, start))
        if blocks:
            return blocks[0].start(), blocks[-1].end()
        if turn.tool_calls and "{" in text[start:]:
            return text.index("{", start), text.rindex("}") + 1
        body = text[start:]
        stripped = body.strip()
        begin = start + body.find(stripped) if stripped else start
        return begin, begin + len(stripped)


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


def decisive_char_span(parser: ActionParser, text: str, *, admissible: Sequence[str] | None = None
                       ) -> tuple[int, int] | None:
    """``parser.decisive_span`` when the parser has one (None otherwise, or when it fails)."""
    locate = getattr(parser, "decisive_span", None)
    if not callable(locate):
        return None
    try:
        span = locate(text, admissible=admissible)
    except Exception:  # a buggy custom parser must not end an episode: the span stays unknown
        return None
    return None if span is None else (int(span[0]), int(span[1]))


def decisive_token_span(decode: Callable[[Sequence[int]], str], ids: Sequence[int],
                        char_span: tuple[int, int]) -> tuple[int, int]:
    """The token indices [a, b) of ``ids`` whose decoded characters overlap ``char_span`` of
    ``decode(ids)``; token i covers ``len(decode(ids[:i]))`` .. ``len(decode(ids[:i + 1]))``.
    An empty character span gives (0, 0)."""
    start, end = char_span
    if end <= start:
        return (0, 0)
    covered, before = [], 0
    for i in range(len(ids)):
        after = len(decode(ids[: i + 1]))
        if before < end and after > start:
            covered.append(i)
        before = after
    return (covered[0], covered[-1] + 1) if covered else (0, 0)


def candidate_decisive_span(parser: ActionParser, decode: Callable[[Sequence[int]], str], ids: Sequence[int],
                            text: str, *, admissible: Sequence[str] | None, parse_error: str | None
                            ) -> tuple[int, int] | None:
    """A candidate's decisive token span: (0, 0) when it did not parse (no token decided an
    action), None when the parser does not locate actions, else the tokens it points at."""
    if not callable(getattr(parser, "decisive_span", None)):
        return None
    if parse_error is not None:
        return (0, 0)
    chars = decisive_char_span(parser, text, admissible=admissible)
    return None if chars is None else decisive_token_span(decode, ids, chars)
