"""The one exception hierarchy of ttsearch.

Every error a user can cause derives from :class:`TtsearchError` and carries a message that
says what to fix. It lives in ``envs`` because ``envs`` is the bottom of the dependency chain
(envs <- agents <- scorers <- search <- benchmarks); every other package re-exports it.

    try:
        ...
    except TtsearchError as err:
        print(f"error: {err}")  # one line, names the fix
"""

from __future__ import annotations

from collections.abc import Iterable


class TtsearchError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` is one line that names the fix."""


class EnvError(TtsearchError):
    """An environment is unknown, misconfigured, crashed, hung, or lacks a needed capability."""


class BackendError(TtsearchError):
    """A model engine could not load, serve, or answer (missing folder, dead server, ...)."""


class ParseError(TtsearchError):
    """Model output could not be parsed into an action (recorded as data, never fatal)."""


class BudgetExhausted(TtsearchError):
    """A compute budget limit was reached; carries the name of the limit."""

    def __init__(self, limit: str, message: str | None = None):
        self.limit = limit
        super().__init__(message or f"budget limit {limit!r} reached")


class ConfigError(TtsearchError):
    """A configuration value is invalid; the message names the field and the valid options."""


def unknown_choice(kind: str, name: object, valid: Iterable[str]) -> str:
    """Format the standard 'unknown X' message listing the valid options."""
    options = ", ".join(sorted(valid))
    return f"unknown {kind} {name!r}; choose one of: {options}"
