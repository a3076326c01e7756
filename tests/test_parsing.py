"""PlainActionParser and AdmissibleMatchParser cases, and the never-crashing parse_candidate."""

from __future__ import annotations

import pytest

from ttsearch.agents.parsing import (
    ActionParser,
    AdmissibleMatchParser,
    PlainActionParser,
    parse_candidate,
)
from ttsearch.envs.errors import ParseError

MOVES = ("north", "south", "east", "west", "pick up the key")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("north", "north"),
        ("  north  \n", "north"),
        ("north\nsouth", "north"),  # first line only
        ("\n\n  east\nmore", "east"),  # first non-empty line
        ("Action: west", "west"),
        ("Thought: the pit is east.\nAction: south\nBecause.", "south"),  # the prefixed line wins
        ("action:   north", "north"),  # prefix is case-insensitive
        ("`north`", "north"),
        ('"north".', "north"),
        ("go north.", "go north"),
        ("wait...", "wait..."),
    ],
)
def test_plain_parser_extracts_the_action(text, expected):
    assert PlainActionParser().parse(text) == expected


def test_lowercase_and_admissible_matching():
    parser = PlainActionParser(lowercase=True, match_admissible=True)
    assert parser.parse("Action: NORTH", admissible=MOVES) == "north"
    assert parser.parse("pick  up   the KEY", admissible=MOVES) == "pick up the key"
    assert PlainActionParser(match_admissible=True).parse("East", admissible=MOVES) == "east"
    # without admissible actions there is nothing to match against: the text passes through
    assert parser.parse("dance", admissible=None) == "dance"
    with pytest.raises(
        ParseError, match="'dance' is not an admissible action; valid: north, south"
    ):
        parser.parse("dance", admissible=MOVES)


def test_empty_and_missing_prefix_are_parse_errors():
    with pytest.raises(ParseError, match="empty action"):
        PlainActionParser().parse("   \n  ")
    with pytest.raises(ParseError, match="empty action"):
        PlainActionParser().parse("Action:   ")
    with pytest.raises(ParseError, match="no line starting with 'Action:'"):
        PlainActionParser(require_prefix=True).parse("north")
    assert PlainActionParser(prefix=None).parse("Action: north") == "Action: north"


def test_parse_candidate_never_raises():
    parser = PlainActionParser(match_admissible=True)
    assert parse_candidate(parser, "Action: north", admissible=MOVES) == ("north", None)
    action, error = parse_candidate(parser, "fly away", admissible=MOVES)
    assert action == "fly away" and "not an admissible action" in error

    class Broken:
        def parse(self, text, *, admissible=None):
            raise KeyError("boom")

    assert isinstance(Broken(), ActionParser)
    action, error = parse_candidate(Broken(), "north")
    assert action == "north" and error.startswith("parser Broken crashed: KeyError")


# --- AdmissibleMatchParser: the admissible move named in free text -----------------------------

COMPASS = ("north", "east", "south", "west")


@pytest.mark.parametrize(("text", "expected"), [
    ("The exit is 3 east", "east"),                   # SmolLM2 on the corridor
    ("3 east is the opposite of 3 west.", "east"),   # the earliest mention wins
    ("EAST.", "east"),                               # case-insensitive, punctuation around
    ("south\nsouth", "south"),                       # the maze pair's repeated moves
    ("Go North, then east", "north"),
])
def test_admissible_match_finds_the_first_whole_word_move(text, expected):
    assert AdmissibleMatchParser().parse(text, admissible=COMPASS) == expected


@pytest.mark.parametrize("text", ["northnorth", "westeast", "03 is 24", "", "eastward"])
def test_admissible_match_refuses_moves_glued_to_other_text(text):
    with pytest.raises(ParseError, match="no admissible action"):
        AdmissibleMatchParser().parse(text, admissible=COMPASS)


def test_admissible_match_multiword_longest_and_fallback():
    parser = AdmissibleMatchParser()
    assert parser.parse("I will  go\nnorth now", admissible=("go", "go north")) == "go north"
    assert parser.parse("take key (it is near)", admissible=("take key", "open door")) == "take key"
    assert parser.parse("Action: open door\nmore", admissible=None) == "open door"  # plain fallback
    assert parse_candidate(parser, "nothing here", admissible=COMPASS)[1].startswith("the message names no")
