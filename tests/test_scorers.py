"""Progress advantage, failure attribution and baselines against hand computations."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttsearch.agents.base import Candidate
from ttsearch.envs.base import Observation, Step, StepResult
from ttsearch.envs.errors import BackendError, ConfigError
from ttsearch.scorers import (
    SCORERS,
    DeepConfBottom10,
    DeepConfTail,
    Entropy,
    PolicyLogProb,
    ProgressAdvantage,
    Random,
    ReferenceLogProb,
    Scorer,
    SelfCertainty,
    cumulative,
    decisive_step,
    make_scorer,
    scorer_options,
    token_entropy_topk,
)

from tolerances import EXACT, float_tol

POLICY = (-0.2, -1.0, -0.6)
REF = (-0.5, -0.3, -1.3)
# per-token ratios: (0.3, -0.7, 0.7)


def cand(policy=POLICY, ref=REF, top=None, ids=None, action="go"):
    ids = tuple(range(len(policy))) if ids is None else ids
    return Candidate(action_text=action, action=action, action_token_ids=ids,
                     policy_logprobs=tuple(policy), reference_logprobs=ref, top_logprobs=top)


def as_step(c: Candidate) -> Step:
    obs = Observation("room")
    return Step(obs, c.action_text, c.action, StepResult(obs, 0.0, False, False),
                action_token_ids=c.action_token_ids, policy_logprobs=c.policy_logprobs,
                reference_logprobs=c.reference_logprobs, top_logprobs=c.top_logprobs)


# --- progress advantage ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("token_agg", "then_subtract", "per_token"),
    [
        ("mean", -0.6 - -0.7, (0.3 - 0.7 + 0.7) / 3),   # equal: 0.1
        ("sum", -1.8 - -2.1, 0.3),                      # equal: 0.3
        ("last", -0.6 - -1.3, 0.7),                     # equal: 0.7
        ("min", -1.0 - -1.3, -0.7),                     # differ: 0.3 vs -0.7
        ("max", -0.2 - -0.3, 0.7),                      # differ: 0.1 vs 0.7
    ],
)
def test_pa_modes_by_hand(token_agg, then_subtract, per_token):
    a = ProgressAdvantage(token_agg=token_agg).score_step(cand())
    b = ProgressAdvantage(token_agg=token_agg, mode="per_token_ratio").score_step(cand())
    assert a == pytest.approx(then_subtract, abs=EXACT)
    assert b == pytest.approx(per_token, abs=EXACT)


def test_min_max_modes_really_differ():
    for agg in ("min", "max"):
        a = ProgressAdvantage(token_agg=agg).score_step(cand())
        b = ProgressAdvantage(token_agg=agg, mode="per_token_ratio").score_step(cand())
        assert abs(a - b) > 0.5


def test_pa_beta_scales_and_step_types_agree():
    pa = ProgressAdvantage(beta=2.5)
    assert pa.score_step(cand()) == pytest.approx(0.25, abs=EXACT)
    assert pa.score_step(as_step(cand())) == pa.score_step(cand())


def test_pa_empty_span_scores_zero():
    for mode in ("aggregate_then_subtract", "per_token_ratio"):
        for agg in ("mean", "sum", "min", "max", "last"):
            assert ProgressAdvantage(token_agg=agg, mode=mode).score_step(cand((), ())) == 0.0


def test_pa_trajectory_step_aggregations():
    steps = [cand(), cand((-1.0,), (-0.2,)), cand((-0.1, -0.1), (-0.4, -0.6))]
    # step scores: 0.1, -0.8, 0.4
    pa = ProgressAdvantage()
    assert pa.step_scores(steps) == pytest.approx((0.1, -0.8, 0.4), abs=EXACT)
    assert pa.score_trajectory(steps) == pytest.approx((0.1 - 0.8 + 0.4) / 3, abs=EXACT)
    for agg, expected in [("sum", -0.3), ("last", 0.4), ("max", 0.4), ("min", -0.8),
                          ("bottom10", -0.8)]:
        assert ProgressAdvantage(step_agg=agg).score_trajectory(steps) == pytest.approx(expected, abs=EXACT)
    assert pa.score_trajectory([]) == 0.0


def test_pa_errors_name_the_fix():
    with pytest.raises(ConfigError, match="ProgressAdvantage needs reference_logprobs.*score_reference=True"):
        ProgressAdvantage().score_step(cand(ref=None))
    with pytest.raises(BackendError, match="2 positions but the action span has 3"):
        ProgressAdvantage().score_step(cand(ref=(-0.1, -0.2)))
    with pytest.raises(ConfigError, match="aggregate_then_subtract, per_token_ratio"):
        ProgressAdvantage(mode="ratio")
    with pytest.raises(ConfigError, match="beta"):
        ProgressAdvantage(beta=0)
    with pytest.raises(ConfigError, match="token aggregation 'bottom10'"):
        ProgressAdvantage(token_agg="bottom10")


lp = st.floats(min_value=-20, max_value=0, allow_nan=False)


@given(st.lists(st.tuples(lp, lp), max_size=30), st.sampled_from(["mean", "sum", "last"]),
       st.floats(min_value=0.01, max_value=10))
def test_per_token_ratio_equals_then_subtract_for_linear_aggs(pairs, agg, beta):
    c = cand(tuple(p for p, _ in pairs), tuple(r for _, r in pairs))
    a = ProgressAdvantage(beta=beta, token_agg=agg).score_step(c)
    b = ProgressAdvantage(beta=beta, token_agg=agg, mode="per_token_ratio").score_step(c)
    # float64 sums of up to 30 terms in another order: the rule with the terms' size and count
    size = beta * sum(abs(p) + abs(r) for p, r in pairs)
    assert a == pytest.approx(b, abs=float_tol("float64", size, len(pairs) + 1))


@given(st.lists(lp, max_size=30), st.sampled_from(["mean", "sum", "min", "max", "last"]))
def test_identical_models_have_zero_advantage(lps, agg):
    c = cand(tuple(lps), tuple(lps))
    assert ProgressAdvantage(token_agg=agg).score_step(c) == 0.0


# --- failure attribution ----------------------------------------------------------------------

def test_cumulative_by_hand():
    assert cumulative([1.0, -0.5, -0.5, 2.0]) == pytest.approx((1.0, 0.5, 0.0, 2.0), abs=EXACT)
    assert cumulative([]) == ()


def test_decisive_variants_disagree_on_a_hand_example():
    scores = [1.0, -0.5, -0.5, 2.0, -0.1, -0.6]
    # cumulative 1.0, 0.5, 0.0, 2.0, 1.9, 1.3 -> min at 2
    assert decisive_step(scores) == 2
    assert decisive_step(scores, "min_cumulative") == 2
    # most negative A_t is -0.6 at 5
    assert decisive_step(scores, "sharpest_drop") == 5
    # drops A_{t-1}-A_t: t1 1.5, t2 0.0, t3 -2.5, t4 2.1, t5 0.5 -> 4
    assert decisive_step(scores, "sharpest_abs_drop") == 4


def test_decisive_fallbacks_and_ties():
    positive = [0.3, 0.1, 0.2]
    assert decisive_step(positive, "min_cumulative") == 0
    assert decisive_step(positive, "sharpest_drop") == 0        # no negative step: first step
    assert decisive_step(positive, "sharpest_abs_drop") == 1    # 0.3 -> 0.1
    assert decisive_step([0.1, 0.2, 0.3], "sharpest_abs_drop") == 0  # never decreases
    assert decisive_step([-1.0, -1.0], "sharpest_drop") == 0     # tie: earliest
    assert decisive_step([-1.0, -1.0], "min_cumulative") == 1    # cumulative -1, -2
    assert decisive_step([0.5, -0.5, 0.5, -0.5], "sharpest_abs_drop") == 1  # tied drops: earliest
    for method in ("min_cumulative", "sharpest_drop", "sharpest_abs_drop"):
        assert decisive_step([-2.0], method) == 0
        assert decisive_step([5.0], method) == 0


def test_decisive_errors():
    with pytest.raises(ConfigError, match="at least one step"):
        decisive_step([])
    with pytest.raises(ConfigError, match="min_cumulative, sharpest_abs_drop, sharpest_drop"):
        decisive_step([1.0], "argmin")


# --- baselines --------------------------------------------------------------------------------

TOP = ((-0.1, -2.5, -4.0), (-0.8, -0.7, -2.1), (-0.05, -3.0, -3.5))
# token self-certainty c_i = -mean(top-k): 2.2, 1.2, 6.55/3


def test_policy_and_reference_logprob_by_hand():
    c = cand()
    assert PolicyLogProb().score_step(c) == pytest.approx(-0.6, abs=EXACT)
    assert PolicyLogProb(token_agg="min").score_step(c) == -1.0
    assert PolicyLogProb(token_agg="sum").score_step(c) == pytest.approx(-1.8, abs=EXACT)
    assert ReferenceLogProb().score_step(c) == pytest.approx(-0.7, abs=EXACT)
    assert ReferenceLogProb(token_agg="max").score_step(c) == -0.3
    assert PolicyLogProb(step_agg="min").score_trajectory([c, cand((-3.0,), None)]) == -3.0
    with pytest.raises(ConfigError, match="ReferenceLogProb needs reference_logprobs"):
        ReferenceLogProb().score_step(cand(ref=None))
    assert PolicyLogProb().score_step(cand((), ())) == 0.0


def test_self_certainty_by_hand():
    c = cand(top=TOP)
    assert SelfCertainty().score_step(c) == pytest.approx((2.2 + 1.2 + 6.55 / 3) / 3, abs=EXACT)
    # k=2 keeps the two largest (unsorted input sorted): 1.3, 0.75, 1.525
    assert SelfCertainty(k=2).score_step(c) == pytest.approx((1.3 + 0.75 + 1.525) / 3, abs=EXACT)
    assert SelfCertainty(k=1, token_agg="min").score_step(c) == pytest.approx(0.05, abs=EXACT)
    # peaked distributions are more certain than flat ones
    peaked = cand((-0.01,), None, top=((-0.01, -6.0, -7.0),))
    flat = cand((-1.1,), None, top=((-1.0, -1.1, -1.2),))
    assert SelfCertainty().score_step(peaked) > SelfCertainty().score_step(flat)
    with pytest.raises(ConfigError, match="SelfCertainty needs top_logprobs: sample with top_logprobs=20"):
        SelfCertainty().score_step(cand())
    with pytest.raises(BackendError):
        SelfCertainty().score_step(cand(top=TOP[:2]))
    with pytest.raises(ConfigError, match="k"):
        SelfCertainty(k=0)


def _conf_step(conf: float) -> Candidate:
    return cand((-0.1,), (-0.1,), top=((-conf, -conf),))  # one token, confidence == conf


def test_deepconf_tail_and_bottom10_by_hand():
    steps = [_conf_step(v) for v in (4.0, 1.0, 6.0, 3.0, 2.0, 5.0, 7.0, 8.0, 9.0, 10.0, 11.0)]
    assert DeepConfTail().score_step(steps[2]) == pytest.approx(6.0, abs=EXACT)
    assert DeepConfTail().score_trajectory(steps) == pytest.approx(11.0, abs=EXACT)
    assert DeepConfBottom10().score_trajectory(steps) == pytest.approx(1.5, abs=EXACT)      # 11 steps: 1, 2
    assert DeepConfBottom10().score_trajectory(steps[:10]) == pytest.approx(1.0, abs=EXACT)
    assert DeepConfTail().score_trajectory([]) == 0.0
    two_tokens = cand((-0.1, -0.2), None, top=((-1.0, -3.0), (-0.5, -0.5)))
    assert DeepConfTail().score_trajectory([two_tokens]) == pytest.approx((2.0 + 0.5) / 2, abs=EXACT)
    with pytest.raises(ConfigError, match="DeepConfTail needs top_logprobs"):
        DeepConfTail().score_step(cand())


def test_entropy_by_hand():
    top = ((-0.1, -2.5),)
    h = -(math.exp(-0.1) * -0.1 + math.exp(-2.5) * -2.5)   # 0.29570
    assert h == pytest.approx(0.29570, abs=1e-5)  # the constant is written to 5 decimals
    assert Entropy().score_step(cand((-0.1,), None, top=top)) == pytest.approx(-h, abs=EXACT)
    # a full distribution (0.5, 0.25, 0.25) inside the top k: exact entropy 1.5 ln 2
    full = (math.log(0.5), math.log(0.25), math.log(0.25))
    assert token_entropy_topk(full) == pytest.approx(1.5 * math.log(2), abs=EXACT)
    # truncation to k=1 can only lower the estimate (lower bound)
    assert token_entropy_topk(full, k=1) == pytest.approx(0.5 * math.log(2), abs=EXACT)
    with pytest.raises(ConfigError, match="Entropy needs top_logprobs"):
        Entropy().score_step(cand())


def test_random_is_deterministic_uniform_and_seeded():
    a, b = cand(), cand((-0.3, -1.0, -0.6))
    r = Random(seed=3)
    assert r.score_step(a) == Random(seed=3).score_step(a)
    assert r.score_step(a) != r.score_step(b)
    assert r.score_step(a) != Random(seed=4).score_step(a)
    assert r.score_trajectory([a, b]) == Random(seed=3).score_trajectory([a, b])
    assert r.score_trajectory([a, b]) != r.score_trajectory([b, a])
    values = [Random(seed=s).score_step(a) for s in range(400)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.4 < sum(values) / len(values) < 0.6
    assert sum(v < 0.5 for v in values) in range(160, 241)


def test_random_does_not_depend_on_python_hash_seed():
    code = ("from ttsearch.scorers import Random; from ttsearch.agents.base import Candidate;"
            "print(repr(Random(seed=3).score_step(Candidate('go','go',(0,1,2),(-0.2,-1.0,-0.6)))))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
            for seed in ("1", "2")}
    assert outs == {repr(Random(seed=3).score_step(cand()))}


# --- registry ---------------------------------------------------------------------------------

def test_registry_names_classes_and_requires():
    assert set(SCORERS) == {"progress_advantage", "policy_logprob", "reference_logprob",
                            "self_certainty", "deepconf_tail", "deepconf_bottom10", "entropy", "random",
                            "reward_model", "progress_advantage_centered"}
    requires = {"progress_advantage": {"reference_logprobs"}, "policy_logprob": set(),
                "progress_advantage_centered": {"reference_logprobs", "token_kl"},
                "reference_logprob": {"reference_logprobs"}, "self_certainty": {"top_logprobs"},
                "deepconf_tail": {"top_logprobs"}, "deepconf_bottom10": {"top_logprobs"},
                "entropy": {"top_logprobs"}, "random": set()}
    full = replace(cand(top=TOP), token_kl=(0.01, 0.02, 0.03))
    for name, cls in SCORERS.items():
        if name == "reward_model":
            continue  # needs a model folder and step text: tests/test_reward_model.py
        scorer = make_scorer(name)
        assert isinstance(scorer, cls) and isinstance(scorer, Scorer)
        assert scorer.name == name
        assert scorer.requires == frozenset(requires[name])
        assert math.isfinite(scorer.score_trajectory([full, full]))


def test_make_scorer_passes_options_and_rejects_bad_ones():
    pa = make_scorer("progress_advantage", beta=0.5, token_agg="min", mode="per_token_ratio")
    assert pa.score_step(cand()) == pytest.approx(0.5 * -0.7, abs=EXACT)
    assert scorer_options("progress_advantage") == ("beta", "token_agg", "step_agg", "mode", "span")
    with pytest.raises(ConfigError) as err:
        make_scorer("prm")
    assert "unknown scorer 'prm'; choose one of: deepconf_bottom10, deepconf_tail" in str(err.value)
    with pytest.raises(ConfigError) as err:
        make_scorer("deepconf_tail", step_agg="mean")
    assert "unknown option(s) step_agg; valid options: k, sign" in str(err.value)
    with pytest.raises(ConfigError, match="valid options: beta, token_agg, step_agg, mode, span"):
        make_scorer("progress_advantage", temperature=1.0)
