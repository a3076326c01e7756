"""Issue 15's scores beside PA, each against a hand computation: the KL-centred PA, PA on the
decisive tokens only, and self-certainty / DeepConf with the paper's and DeepConf's signs."""

from __future__ import annotations

import pytest

from ttsearch.agents.base import Candidate
from ttsearch.agents.parsing import (
    AdmissibleMatchParser,
    PlainActionParser,
    ToolCallParser,
    candidate_decisive_span,
    decisive_token_span,
)
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer, token_fields
from ttsearch.training.grpo_recipe import FinalNumberParser

EXACT = 1e-12  # float64 arithmetic on a handful of numbers
POLICY, REF, KL = (-0.5, -1.0, -0.25), (-0.7, -0.2, -0.25), (0.1, 0.3, 0.05)
TOP = ((-0.1, -2.5, -4.0), (-0.7, -0.9, -2.0), (-0.25, -1.6, -3.1))


def cand(*, span=None, kl=KL, error=None, top=TOP) -> Candidate:
    return Candidate("north", "north", (5, 6, 7), POLICY, REF, top, parse_error=error, token_kl=kl,
                     decisive_span=span)


def test_centred_pa_subtracts_each_tokens_kl():
    # β·mean(lp_θ − lp_ref − KL) = 0.5·mean(0.2 − 0.1, −0.8 − 0.3, 0 − 0.05) = 0.5·(−1.05/3)
    pa = make_scorer("progress_advantage_centered", beta=0.5)
    assert pa.score_step(cand()) == pytest.approx(0.5 * (0.1 - 1.1 - 0.05) / 3, abs=EXACT)
    assert make_scorer("progress_advantage_centered", beta=0.5, token_agg="min").score_step(cand()) == \
        pytest.approx(0.5 * -1.1, abs=EXACT)
    # with zero KL it is PA itself
    plain = make_scorer("progress_advantage", beta=0.5, mode="per_token_ratio", token_agg="min")
    zero = make_scorer("progress_advantage_centered", beta=0.5, token_agg="min")
    assert zero.score_step(cand(kl=(0.0, 0.0, 0.0))) == pytest.approx(plain.score_step(cand()), abs=EXACT)
    assert pa.requires == {"reference_logprobs", "token_kl"}
    with pytest.raises(ConfigError, match="token_kl.*Agent.propose"):
        pa.score_step(cand(kl=None))


def test_decisive_span_scores_only_the_tokens_the_parser_points_at():
    pa = make_scorer("progress_advantage", beta=1.0, span="decisive")
    assert pa.requires == {"reference_logprobs", "decisive_span"}
    assert pa.score_step(cand(span=(1, 2))) == pytest.approx(-1.0 - -0.2, abs=EXACT)   # token 1 alone
    assert pa.score_step(cand(span=(0, 0))) == 0.0                                     # nothing decided
    whole = make_scorer("progress_advantage", beta=1.0)
    assert pa.score_step(cand(span=None)) == pytest.approx(whole.score_step(cand()), abs=EXACT)  # unknown
    centred = make_scorer("progress_advantage_centered", beta=1.0, span="decisive")
    assert centred.score_step(cand(span=(0, 1))) == pytest.approx(-0.5 + 0.7 - 0.1, abs=EXACT)
    assert token_fields([pa, centred]) == {"reference_logprobs", "decisive_span", "token_kl"}
    with pytest.raises(ConfigError, match="span 'move'; choose one of: action, decisive"):
        make_scorer("progress_advantage", span="move")


@pytest.mark.parametrize("name", ["self_certainty", "deepconf_tail", "deepconf_bottom10"])
def test_the_two_signs_of_self_certainty(name):
    paper, deepconf = make_scorer(name, k=2, sign="paper"), make_scorer(name, k=2, sign="deepconf")
    # the paper's reference code: log_probs.topk(k).values.mean() per token, then the mean
    by_hand = sum((t[0] + t[1]) / 2 for t in TOP) / len(TOP)
    assert paper.score_step(cand()) == pytest.approx(by_hand, abs=EXACT)
    assert deepconf.score_step(cand()) == pytest.approx(-by_hand, abs=EXACT)
    assert make_scorer(name, k=2).score_step(cand()) == deepconf.score_step(cand())  # the default
    with pytest.raises(ConfigError, match="sign 'plus'; choose one of: deepconf, paper"):
        make_scorer(name, sign="plus")


def test_decisive_token_span_maps_characters_to_the_tokens_that_cover_them():
    pieces = {1: "so", 2: "uth", 3: " north", 4: "."}
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    text = decode([1, 2, 3, 4])  # "south north."
    assert decisive_token_span(decode, [1, 2, 3, 4], (0, 5)) == (0, 2)
    assert decisive_token_span(decode, [1, 2, 3, 4], (6, 11)) == (2, 3)
    assert decisive_token_span(decode, [1, 2, 3, 4], (3, 3)) == (0, 0)
    moves = ("north", "south", "east", "west")
    parser = AdmissibleMatchParser()
    assert candidate_decisive_span(parser, decode, [1, 2, 3, 4], text, admissible=moves, parse_error=None) == (0, 2)
    # a turn that did not parse has no decisive token; a parser that cannot say leaves it unknown
    assert candidate_decisive_span(PlainActionParser(), decode, [1, 2], "south", admissible=moves,
                                   parse_error="bad") == (0, 0)

    class Opaque:
        def parse(self, text, *, admissible=None):
            return text

    assert candidate_decisive_span(Opaque(), decode, [1, 2], "south", admissible=None, parse_error=None) is None


@pytest.mark.parametrize("parser, text, decisive", [
    (PlainActionParser(match_admissible=True), "  North.\nlater text", "North"),
    (PlainActionParser(), "I think so.\nAction: `east`", "east"),
    (AdmissibleMatchParser(), "The exit is 3 east, not west", "east"),
    (FinalNumberParser(), "4 + 1 = 5.", "5"),
    (ToolCallParser(), '<think>x</think>Sure. <tool_call>{"name": "f", "arguments": {}}</tool_call>',
     '<tool_call>{"name": "f", "arguments": {}}</tool_call>'),
    (ToolCallParser(), "<think>x</think> It is sunny. ", "It is sunny."),
])
def test_shipped_parsers_point_at_the_text_that_decides(parser, text, decisive):
    admissible = ("north", "south", "east", "west")
    start, end = parser.decisive_span(text, admissible=admissible)
    assert text[start:end] == decisive
    parser.parse(text, admissible=admissible)  # the same text parses


def test_unparseable_text_has_no_decisive_span():
    moves = ("north", "south", "east", "west")
    assert PlainActionParser(match_admissible=True).decisive_span("southnorth", admissible=moves) is None
    assert AdmissibleMatchParser().decisive_span("southnorth", admissible=moves) is None
    assert FinalNumberParser().decisive_span("no digits") is None
