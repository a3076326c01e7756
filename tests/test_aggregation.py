"""Token/step aggregations against hand computations (docs/design.md, "The paper's definitions")."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttsearch.envs.errors import ConfigError
from ttsearch.scorers.aggregation import (
    STEP_AGGREGATIONS,
    TOKEN_AGGREGATIONS,
    aggregate_steps,
    aggregate_tokens,
    bottom_fraction,
)

from tolerances import EXACT

VALUES = [-0.5, -2.0, -0.25, -1.0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("mean", -0.9375), ("sum", -3.75), ("min", -2.0), ("max", -0.25), ("last", -1.0)],
)
def test_token_aggregations_by_hand(name, expected):
    assert aggregate_tokens(VALUES, name) == pytest.approx(expected, abs=EXACT)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("mean", -0.9375), ("sum", -3.75), ("min", -2.0), ("max", -0.25), ("last", -1.0),
     ("bottom10", -2.0)],
)
def test_step_aggregations_by_hand(name, expected):
    assert aggregate_steps(VALUES, name) == pytest.approx(expected, abs=EXACT)


def test_name_sets_are_the_designed_ones():
    assert set(TOKEN_AGGREGATIONS) == {"mean", "sum", "min", "max", "last"}
    assert set(STEP_AGGREGATIONS) == {"mean", "sum", "last", "max", "min", "bottom10"}


@pytest.mark.parametrize("name", sorted(TOKEN_AGGREGATIONS))
def test_empty_tokens_give_zero(name):
    assert aggregate_tokens([], name) == 0.0


@pytest.mark.parametrize("name", sorted(STEP_AGGREGATIONS))
def test_empty_steps_give_zero(name):
    assert aggregate_steps([], name) == 0.0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0], 3.0),                                                      # n=1: ceil(0.1)=1
        ([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 1.0),              # n=9: 1 step
        ([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 1.0),        # n=10: 1 step
        ([11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 1.5),  # n=11: 2 steps (1, 2)
    ],
)
def test_bottom10_small_counts(values, expected):
    assert aggregate_steps(values, "bottom10") == expected


def test_bottom10_25_steps_takes_three():
    # 25 steps: ceil(2.5) = 3 lowest = -4, -3, 0.5 (placed out of order on purpose).
    values = [5.0] * 22 + [-3.0, 0.5, -4.0]
    assert aggregate_steps(values, "bottom10") == pytest.approx((-4.0 - 3.0 + 0.5) / 3, abs=EXACT)


def test_bottom10_30_steps_is_exact_three_not_float_four():
    # 30 * 0.1 == 3.0000000000000004 in floats; the right count is 3.
    values = [float(v) for v in range(30, 0, -1)]
    assert aggregate_steps(values, "bottom10") == 2.0  # mean(1, 2, 3)


def test_bottom_fraction_rejects_bad_fraction():
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        bottom_fraction([1.0], 0.0)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        aggregate_tokens([1.0], "median")
    assert "unknown token aggregation 'median'" in str(err.value)
    assert "last, max, mean, min, sum" in str(err.value)
    with pytest.raises(ConfigError) as err:
        aggregate_steps([1.0], "bottom5")
    assert "bottom10, last, max, mean, min, sum" in str(err.value)
    with pytest.raises(ConfigError):  # bottom10 is a step aggregation only
        aggregate_tokens([1.0], "bottom10")
    with pytest.raises(ConfigError):  # and an empty input does not skip the check
        aggregate_steps([], "nope")


finite = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=40))
def test_sum_is_mean_times_len(values):
    # float64: sum/len*len re-rounds twice, values <= 50 x 40 terms: <= 2000 * 2**-52 ≈ 4e-13
    assert aggregate_tokens(values, "sum") == pytest.approx(
        aggregate_tokens(values, "mean") * len(values), abs=EXACT)


@given(st.lists(finite, min_size=1, max_size=40))
def test_order_relations(values):
    lo, hi = aggregate_steps(values, "min"), aggregate_steps(values, "max")
    mean = aggregate_steps(values, "mean")
    bottom = aggregate_steps(values, "bottom10")
    assert lo - EXACT <= bottom <= mean + EXACT and mean <= hi + EXACT
    assert aggregate_steps(values, "last") == values[-1]
    k = math.ceil(len(values) / 10)
    assert bottom == pytest.approx(sum(sorted(values)[:k]) / k, abs=EXACT)
