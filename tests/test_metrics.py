"""Application metrics (TTS, UQ, FA, budget tuning) against brute force and hand computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ttsearch.benchmarks.report.budget_tuning import EpisodeOutcome, tune
from ttsearch.benchmarks.report.metrics_fa import all_methods, attribution_metrics
from ttsearch.benchmarks.report.metrics_tts import (
    best_of_n,
    best_of_n_curve,
    pass_at_k,
    selection_weights,
    subset_sizes,
)
from ttsearch.benchmarks.report.metrics_uq import (
    auprc,
    auroc,
    ece,
    reliability_bins,
    spearman,
    to_unit_interval,
    uq_metrics,
)
from ttsearch.envs.errors import ConfigError

from tolerances import EXACT

# --- TTS --------------------------------------------------------------------------------------


def brute_best_of_n(scores, success, n, ties):
    values = [-math.inf if s is None else s for s in scores]
    picks = []
    for subset in itertools.combinations(range(len(values)), n):
        top = max(values[i] for i in subset)
        tied = [i for i in subset if values[i] == top]
        picks.append(success[tied[0]] if ties == "first" else np.mean([success[i] for i in tied]))
    return float(np.mean(picks))


@pytest.mark.parametrize("ties", ["first", "average"])
def test_best_of_n_equals_enumeration_over_all_subsets(ties):
    rng = np.random.default_rng(0)
    for _ in range(40):
        size = int(rng.integers(1, 8))
        scores = [float(x) for x in rng.integers(0, 4, size)]  # few values: many ties
        if size > 2:
            scores[0] = None  # a missing score ranks last
        success = [int(x) for x in rng.integers(0, 2, size)]
        for n in range(1, size + 1):
            assert best_of_n(scores, success, n, ties=ties) == pytest.approx(brute_best_of_n(scores, success, n, ties), abs=EXACT)
        assert selection_weights(scores, 1, ties=ties).sum() == pytest.approx(1.0, abs=EXACT)


def test_best_of_n_hand_values():
    scores, success = [0.3, 0.9, 0.1, 0.9], [1, 0, 1, 1]
    assert best_of_n(scores, success, 2) == pytest.approx(0.5, abs=EXACT)           # ranks: 1, 3, 0, 2 -> 3/6·0 + 2/6 + 1/6
    assert best_of_n(scores, success, 2, ties="average") == pytest.approx(3.5 / 6, abs=EXACT)  # {1,3} counts 1/2
    assert best_of_n(scores, success, 1) == pytest.approx(0.75, abs=EXACT)           # n = 1 is pass@1
    assert best_of_n(scores, success, 4) == 0.0                           # the top score (index 1) fails
    assert best_of_n(scores, success, 4, ties="average") == pytest.approx(0.5, abs=EXACT)


def test_pass_at_k_is_the_fraction_of_subsets_with_a_success():
    rng = np.random.default_rng(1)
    for _ in range(30):
        size = int(rng.integers(1, 8))
        success = [int(x) for x in rng.integers(0, 2, size)]
        for k in range(1, size + 1):
            brute = np.mean([any(success[i] for i in sub) for sub in itertools.combinations(range(size), k)])
            assert pass_at_k(success, k) == pytest.approx(brute, abs=EXACT)
    assert pass_at_k([1, 0, 0, 1], 2) == pytest.approx(5 / 6, abs=EXACT)
    with pytest.raises(ConfigError, match="subset size"):
        pass_at_k([1, 0], 3)


def test_subset_sizes_and_curve():
    assert subset_sizes(1) == [1]
    assert subset_sizes(8) == [1, 2, 4, 8]
    assert subset_sizes(6) == [1, 2, 4, 6]
    tasks = [([0.1, 0.9], [0, 1]), ([0.5, 0.2, 0.7], [1, 0, 0])]
    curve = best_of_n_curve(tasks)
    assert list(curve) == [1, 2]  # the smallest N
    # n=1: task means 0.5 and 1/3; n=2: task 1 picks index 1 (success); task 2 over 3 pairs: (0,1)->0 ok,
    # (0,2)->2 fail, (1,2)->2 fail -> 1/3
    assert curve[1][0] == pytest.approx((0.5 + 1 / 3) / 2, abs=EXACT)
    assert curve[2][0] == pytest.approx((1 + 1 / 3) / 2, abs=EXACT)
    assert curve[2][1] == pytest.approx(np.std([1, 1 / 3], ddof=1) / math.sqrt(2), abs=EXACT)


# --- UQ ---------------------------------------------------------------------------------------


def test_auroc_auprc_spearman_by_hand():
    scores, success = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert auroc(scores, success) == pytest.approx(3 / 4, abs=EXACT)  # 3 of 4 (pos, neg) pairs ordered right
    assert auprc(scores, success) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=EXACT)
    assert spearman(scores, success) == pytest.approx(1 / math.sqrt(5), abs=EXACT)
    assert auroc([1, 1, 2], [0, 1, 1]) == pytest.approx((1 + 0.5) / 2, abs=EXACT)  # a tie counts one half
    assert auroc([1, 2], [1, 1]) is None and auprc([1, 2], [0, 0]) is None
    assert spearman([1, 1, 1], [0, 1, 0]) is None


def test_ece_and_reliability_by_hand():
    probs = [0.05, 0.15, 0.12, 0.95, 1.0]
    success = [0, 1, 0, 1, 0]
    bins = reliability_bins(probs, success, n_bins=10)
    assert [b["count"] for b in bins] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[1]["confidence"] == pytest.approx(0.135, abs=EXACT) and bins[1]["accuracy"] == 0.5
    assert bins[2]["accuracy"] is None
    # |0 − 0.05|·1 + |0.5 − 0.135|·2 + |0.5 − 0.975|·2 over 5
    assert ece(probs, success, n_bins=10) == pytest.approx((0.05 + 0.365 * 2 + 0.475 * 2) / 5, abs=EXACT)
    assert ece(probs, success, n_bins=1) == pytest.approx(abs(0.4 - np.mean(probs)), abs=EXACT)


def test_unit_interval_mappings():
    s, used = to_unit_interval([-2.0, 0.0, 2.0])
    assert used == "minmax" and s.tolist() == [0.0, 0.5, 1.0]
    s, used = to_unit_interval([0.2, 0.9])
    assert used == "identity" and s.tolist() == [0.2, 0.9]
    s, used = to_unit_interval([5.0, -1.0, 5.0, 7.0], "rank")
    assert used == "rank" and s.tolist() == pytest.approx([(2.5 - 1) / 3, 0.0, (2.5 - 1) / 3, 1.0], abs=EXACT)
    with pytest.raises(ConfigError, match="identity"):
        to_unit_interval([2.0], "identity")
    with pytest.raises(ConfigError, match="unknown calibration mapping"):
        to_unit_interval([0.5], "sigmoid")


def test_uq_metrics_drops_missing_scores_and_explains_nulls():
    m = uq_metrics([0.1, None, 0.4, 0.35, 0.8], [0, 1, 0, 1, 1], [0, 1, 0, 1, 1])
    assert m["n"] == 4 and m["auroc"] == pytest.approx(0.75, abs=EXACT) and m["mapping"] == "identity"
    assert "without a score" in m["notes"][0]
    one_class = uq_metrics([-1.0, -2.0], [0, 0], [0.0, 0.0])
    assert one_class["auroc"] is None and one_class["spearman"] is None and one_class["mapping"] == "minmax"
    assert any("only failures" in note for note in one_class["notes"])
    assert any("constant reward" in note for note in one_class["notes"])
    # ece: minmax maps to [1, 0] (both failures): |0 − 1|·1 + |0 − 0|·1 over 2
    assert one_class["ece"] == pytest.approx(0.5, abs=EXACT)


# --- FA ---------------------------------------------------------------------------------------


def test_attribution_accuracy_and_mae_by_hand():
    steps = [[0.2, -0.9, 0.1], [-0.1, 0.3], [0.5, 0.4, -0.2, -0.3], []]
    truths = [1, 1, 3, 0]
    # min_cumulative: [0.2, -0.7, -0.6] -> 1; [-0.1, 0.2] -> 0; [0.5, 0.9, 0.7, 0.4] -> 3
    m = attribution_metrics(steps, truths, method="min_cumulative")
    assert m == {"method": "min_cumulative", "n": 3, "skipped": 1, "accuracy": pytest.approx(2 / 3, abs=EXACT),
                 "mae": pytest.approx(1 / 3, abs=EXACT), "within_one": 1.0}
    both = all_methods(steps, truths)
    # sharpest_drop (argmin A_t): 1, 0, 3 ; sharpest_abs_drop (largest A_{t-1} − A_t): 1 (1.1), 0 (none), 2 (0.6)
    assert both["sharpest_drop"]["accuracy"] == pytest.approx(2 / 3, abs=EXACT)
    assert both["sharpest_abs_drop"]["accuracy"] == pytest.approx(1 / 3, abs=EXACT)
    assert both["sharpest_abs_drop"]["mae"] == pytest.approx((0 + 1 + 1) / 3, abs=EXACT)
    empty = attribution_metrics([], [])
    assert empty["accuracy"] is None and empty["mae"] is None


# --- budget tuning ----------------------------------------------------------------------------


def test_budget_tuning_picks_the_cheapest_arm_within_one_stderr():
    def eps(difficulty, arm, wins, n, tokens):
        return [EpisodeOutcome(difficulty, arm, i < wins, tokens) for i in range(n)]

    episodes = (eps("easy", "greedy", 9, 10, 10) + eps("easy", "bon8", 10, 10, 80)
                + eps("hard", "greedy", 2, 10, 20) + eps("hard", "bon8", 6, 10, 160) + eps("hard", "beam", 5, 10, 90))
    table = tune(episodes)
    # easy: best bon8 = 1.0 with stderr 0 -> only bon8 qualifies
    assert table.best["easy"].arm == "bon8" and table.choice["easy"].arm == "bon8"
    # hard: best bon8 0.6, stderr √(0.24/9) = 0.163 (sample std, n − 1: the one formula of every
    # table) -> beam (0.5) qualifies and is cheaper
    assert table.tolerance["hard"] == pytest.approx(math.sqrt(0.24 / 9), abs=EXACT)
    assert table.choice["hard"].arm == "beam"
    assert [c.arm for c in table.cells["hard"]] == ["greedy", "beam", "bon8"]
    assert table.cells["hard"][0].success == pytest.approx(0.2, abs=EXACT) and table.cells["hard"][0].mean_tokens == 20
    # a fixed tolerance of 0.15 keeps greedy out on easy? 0.9 >= 1.0 − 0.15: greedy qualifies
    assert tune(episodes, tolerance=0.15).choice["easy"].arm == "greedy"
    # all: greedy 11/20, beam 5/10, bon8 16/20 (stderr 0.092) -> only bon8
    assert table.choice["all"].arm == "bon8" and table.cells["all"][0].n == 20
    with pytest.raises(ConfigError, match="tolerance"):
        tune(episodes, tolerance=-1)


def test_positional_attribution_baselines_by_hand():
    from ttsearch.benchmarks.report.metrics_fa import positional_baselines

    out = positional_baselines([4, 2, 3], [3, 0, 1])
    # first step: errors 3, 0, 1; last step: predictions 3, 1, 2 -> errors 0, 1, 1
    assert out["first_step"] == {"n": 3, "accuracy": 1 / 3, "mae": 4 / 3}
    assert out["last_step"] == {"n": 3, "accuracy": 1 / 3, "mae": 2 / 3}
    # uniform: accuracy mean(1/4, 1/2, 1/3); MAE mean of (3+2+1+0)/4, (0+1)/2, (1+0+1)/3
    assert out["uniform_random"]["accuracy"] == pytest.approx((1 / 4 + 1 / 2 + 1 / 3) / 3, abs=EXACT)
    assert out["uniform_random"]["mae"] == pytest.approx((6 / 4 + 1 / 2 + 2 / 3) / 3, abs=EXACT)
    assert positional_baselines([], [])["last_step"]["accuracy"] is None
