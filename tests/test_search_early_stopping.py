"""Early-stopping rules (hand-computed statistics) and their effect inside controllers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import (
    AdaptiveN,
    Budget,
    ConfidenceGate,
    DeepConf,
    calibrate_threshold,
    make_controller,
)
from ttsearch.search.early_stopping import make_early_stop
from ttsearch.search.testing import Choice, FakeProposer

from tolerances import EXACT

PA = make_scorer("progress_advantage")


class LongTrap(Env):
    """First move 'a' or 'b', then 'go' until depth 4. Every step after 'a' scores -2, after 'b' +1;
    only the 'b' episodes pay reward 1."""

    deterministic = True

    def reset(self, *, seed=None):
        self.path = ()
        return Observation("start", ("a", "b"))

    def step(self, action):
        self.path = (*self.path, action)
        done = len(self.path) >= 4
        return StepResult(Observation("/".join(self.path), ("go",)), float(done and self.path[0] == "b"), done, False)

    def snapshot(self):
        return self.path

    def restore(self, snapshot):
        self.path = snapshot


def long_table(state):
    if not state.steps:
        return [Choice("a", math.log(0.5), 0.5), Choice("b", math.log(0.5), 0.0)]
    return [Choice("go", 0.0, -2.0 if state.actions[0] == "a" else 1.0)]


def trap_table(state):
    if not state.steps:
        return [Choice("a", math.log(0.6), 1.0), Choice("b", math.log(0.4), 0.0)]
    return [Choice("x", math.log(0.5), 0.5), Choice("y", math.log(0.5), -0.5)]


class Two(LongTrap):
    def step(self, action):
        self.path = (*self.path, action)
        done = len(self.path) >= 2
        return StepResult(Observation("/".join(self.path), ("x", "y")), float(done), done, False)


TASK = Task(env="t", id="t", seed=0)


def run(name, env, table, **kwargs):
    agent = FakeProposer(table)
    return make_controller(name, **kwargs).run(TASK, env, agent, PA, Budget()), agent


# --- the rules' statistics -------------------------------------------------------------------

def test_adaptive_change_probability_matches_the_normal_model():
    rule = AdaptiveN()
    scores = [0.0, 1.0, 2.0]
    mu, sigma = np.mean(scores), np.std(scores)
    p_one = norm.sf((2.0 - mu) / sigma)
    # the rule's 1 − Φ(z) against scipy's tail: the subtraction costs at most ~2^-52 absolute
    assert rule.change_probability(scores, 2.0, 3) == pytest.approx(1 - (1 - p_one) ** 3, abs=EXACT)
    assert rule.change_probability(scores, 2.0, 0) == 0.0
    assert rule.change_probability([1.0, 1.0, 1.0, 1.0], 1.0, 10) == 0.0  # ties never change the pick
    assert AdaptiveN(sigma_floor=0.5).change_probability([1.0] * 4, 1.0, 1) == pytest.approx(0.5, abs=EXACT)
    assert not AdaptiveN(min_samples=5).should_stop([1.0] * 4, 1.0, 10)
    assert AdaptiveN(min_samples=4).should_stop([1.0] * 4, 1.0, 10)


def test_deepconf_threshold_is_the_percentile_of_running_mins():
    mins = [-3.0, -1.0, 0.5, 2.0]
    assert calibrate_threshold(mins, 50) == pytest.approx(-0.25, abs=EXACT)  # linear interpolation between -1 and 0.5
    assert calibrate_threshold(mins, 0) == -3.0 and calibrate_threshold(mins, 100) == 2.0
    assert DeepConf(threshold=1.5).calibrate(mins) == 1.5
    with pytest.raises(ConfigError, match="raise warmup"):
        calibrate_threshold([], 10)


def test_gate_signals():
    from ttsearch.agents.base import Candidate

    cand = Candidate("go", "go", (1, 2), (math.log(0.9), math.log(0.5)), (-1.0, -1.0),
                     top_logprobs=((math.log(0.9), math.log(0.06)), (math.log(0.5), math.log(0.4))))
    assert ConfidenceGate(signal="policy_prob").confidence(cand, None) == pytest.approx(0.45, abs=EXACT)
    assert ConfidenceGate(signal="step_score").confidence(cand, 0.3) == 0.3
    assert ConfidenceGate(signal="top_margin").confidence(cand, None) == pytest.approx(0.84, abs=EXACT)
    assert ConfidenceGate(threshold=0.45).confident(cand, None) and not ConfidenceGate(threshold=0.46).confident(cand, None)


def test_rule_errors_name_the_fix():
    with pytest.raises(ConfigError, match="unknown gate signal 'prob'; choose one of: policy_prob"):
        ConfidenceGate(signal="prob")
    with pytest.raises(ConfigError, match="delta must be in"):
        AdaptiveN(delta=0)
    with pytest.raises(ConfigError, match="unknown option.*tresh.*valid options"):
        make_early_stop({"name": "gate", "tresh": 1})
    with pytest.raises(ConfigError, match="beam: deepconf needs a fixed threshold"):
        make_controller("beam", early_stop="deepconf")


# --- inside controllers ------------------------------------------------------------------------

def test_gate_acts_greedily_on_clear_turns_and_reports_the_saving():
    plain, _ = run("step_best_of_n", Two, trap_table, k=8)
    gated, _ = run("step_best_of_n", Two, trap_table, k=8, early_stop=ConfidenceGate(threshold=0.55))
    # turn 1: greedy 'a' has p=.6 >= .55: act; turn 2: greedy 'x' has p=.5: search (greedy + 7 samples)
    assert gated.usage.candidates == 1 + (1 + 7) and plain.usage.candidates == 16
    report = gated.early_stop
    assert report.triggers == 1 and report.skipped_candidates == 16 - 9 and gated.stopped_early
    per_candidate = gated.usage.tokens / gated.usage.candidates
    assert report.saved_tokens_estimate == pytest.approx(7 * per_candidate, abs=EXACT)
    assert gated.trajectory.actions[0] == "a"


def test_adaptive_step_sampling_stops_when_the_pick_is_settled():
    # after 'a'/'b' only 'go' exists: the first wave of 2 identical scores settles the turn
    result, agent = run("step_best_of_n", LongTrap, long_table, k=8,
                        early_stop=AdaptiveN(wave=2, min_samples=2))
    waves_per_turn = [call.generated_tokens > 0 for call in agent.calls]
    assert len(result.trajectory.steps) == 4 and len(waves_per_turn) <= 4 + 3
    assert result.early_stop.triggers >= 3 and result.early_stop.skipped_candidates >= 3 * 6


def test_adaptive_best_of_n_stops_once_rollouts_agree():
    env_one = LongTrap

    def one_table(state):
        return [Choice("b" if not state.steps else "go", 0.0, 0.5)]

    result, _ = run("trajectory_best_of_n", env_one, one_table, n=16, early_stop=AdaptiveN(wave=4))
    assert result.info["rollouts"] == 4 and result.stop_reason == "early_stop:adaptive"
    assert result.early_stop.skipped_candidates == 12 * 4  # 12 rollouts of 4 steps not played
    assert result.success


def test_deepconf_prunes_rollouts_whose_running_min_falls_below_the_warmup_threshold():
    result, _ = run("trajectory_best_of_n", LongTrap, long_table, n=12,
                    early_stop=DeepConf(warmup=4, percentile=50))
    g = result.tree.graph
    rollouts = {}
    for _, data in g.nodes(data=True):
        if "rollout" in data:
            rollouts.setdefault(data["rollout"], []).append(data)
    warm_mins = [min(d["step_score"] for d in rollouts[i]) for i in range(4)]
    threshold = float(np.percentile(warm_mins, 50))
    assert result.early_stop.detail["threshold"] == pytest.approx(threshold, abs=EXACT)
    later_a = [i for i in range(4, 12) if rollouts[i][0]["action"] == "a"]
    pruned = [i for i in range(4, 12) if any(d["status"] == "pruned" for d in rollouts[i])]
    if threshold > -2.0:  # 'a' rollouts reach -2 at their second step
        assert pruned == later_a and all(len(rollouts[i]) == 2 for i in pruned)
    assert result.early_stop.triggers == len(pruned) and result.info["pruned"] == len(pruned)
    assert result.trajectory.actions[0] == "b" and result.success


def test_beam_gate_expands_confident_beams_greedily():
    plain, _ = run("beam", LongTrap, long_table, width=2, expand=4)
    gated, _ = run("beam", LongTrap, long_table, width=2, expand=4, early_stop=ConfidenceGate(threshold=0.9))
    assert gated.usage.candidates < plain.usage.candidates
    assert gated.success == plain.success and gated.early_stop.triggers > 0


def test_adaptive_patience_stops_when_the_pick_stays_the_same():
    rule = AdaptiveN(min_samples=2, patience=2, delta=1e-9)  # the Normal rule alone would never stop
    assert not rule.should_stop([0.0, 5.0], 5.0, 10, stable_waves=1)
    assert rule.should_stop([0.0, 5.0], 5.0, 10, stable_waves=2)
    with pytest.raises(ConfigError, match="patience"):
        AdaptiveN(patience=0)
    # inside best-of-N: a huge sigma floor silences the Normal rule; only agreement can stop
    result, _ = run("trajectory_best_of_n", LongTrap, long_table, n=16,
                    early_stop=AdaptiveN(wave=2, min_samples=2, patience=2, sigma_floor=100.0))
    rollouts = result.info["rollouts"]
    assert result.stop_reason == "early_stop:adaptive" and rollouts < 16 and rollouts % 2 == 0
    # the pick was already the leader two waves before the stop: it comes from an earlier wave
    assert result.info["picked"] < rollouts - 2 * 2
