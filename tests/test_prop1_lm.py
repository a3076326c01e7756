"""Proposition 1 for any maze pair (``benchmarks/perf/prop1_lm.py``) against the tiny-pair path and
a plain forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsearch.agents import ModelPair, PlainActionParser
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.perf.prop1 import measure
from ttsearch.benchmarks.perf.prop1_lm import (
    _distance_to_optimum,
    _five_classes,
    class_logprobs,
    is_tiny_recipe_pair,
    measure_pair,
    move_turns,
)
from ttsearch.envs.maze.layout import ACTIONS

from tolerances import model_tol, shipped_score_tol


def test_the_general_path_reproduces_the_tiny_pair_measurement():
    """Same pair, same layouts: the renderer's prompts and the move+stop turns give the numbers of
    ``prop1.measure`` (its whole-turn PA), and the exact A* computed from the same reference."""
    pair_dir = default_pair_dir("maze")
    assert is_tiny_recipe_pair(PairManifest.read(pair_dir))
    want = measure(pair_dir, layouts=3)
    got = measure_pair(pair_dir, layouts=3)
    assert got["n_states"] == want["n_states"] and got["move_turns"]["kind"] == "move text + stop token"
    # The two paths batch and pad differently, so the scores agree to float rounding: an adjacent
    # rank swap of two near-equal scores moves a correlation over ~200 pairs by ~1e-6.
    for key in ("spearman", "pearson"):
        assert got["pa"][key] == pytest.approx(want["pa"][key], abs=1e-4)
    for key in ("argmax_agreement", "hard_optimal_agreement"):
        assert got["pa"][key] == want["pa"][key]
    assert got["mean_abs_error"] == pytest.approx(want["mean_abs_error"], abs=shipped_score_tol("maze", tokens=2))


def test_one_token_move_classes_are_every_token_the_parser_reads_as_the_move():
    pair = ModelPair.load_dir(default_pair_dir("maze"))
    tok = pair.tokenizer
    turns = move_turns(tok, one_token=True)
    parser = PlainActionParser(lowercase=True, match_admissible=True)
    for move in ACTIONS:
        assert turns[move], move
        for (token_id,) in turns[move]:
            assert parser.parse(tok.decode([token_id], skip_special_tokens=True), admissible=ACTIONS) == move
    # the class log-prob is the log of the summed next-token probabilities of a full forward
    prompts = [tuple(tok.encode("# . G\n. A .\ngoal 1 north 1 east")), tuple(tok.encode("north open"))]
    got = class_logprobs(pair.policy.model, prompts, turns, pad_id=0)
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            logits = pair.policy.model(input_ids=torch.tensor([prompt])).logits[0, -1]
        logp = logits.double().log_softmax(-1)
        want = [float(torch.logsumexp(logp[[t for (t,) in turns[m]]], 0)) for m in ACTIONS]
        assert got[i] == pytest.approx(np.array(want), abs=model_tol(pair.policy.model, logits))


def test_distance_to_the_optimum_is_the_mean_class_kl_computed_by_hand():
    """Two states over (4 moves, no-op); KL(p‖q) = Σ p log(p/q), a zero-probability class adds 0."""
    reference = _five_classes(np.log(np.array([[0.1, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])))
    assert reference[:, 4] == pytest.approx([0.6, 0.0])
    optimal = np.array([[0.7, 0.1, 0.0, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25, 0.0]])
    policy = np.array([[0.4, 0.1, 0.1, 0.1, 0.3], [0.25, 0.25, 0.25, 0.25, 0.0]])
    got = _distance_to_optimum(policy, reference, optimal)
    kl_opt_ref = (0.7 * np.log(7) + 0.1 * np.log(1 / 6)) / 2
    kl_pol_ref = (0.4 * np.log(4) + 0.3 * np.log(0.5)) / 2
    assert got["kl_optimal_to_reference"] == pytest.approx(kl_opt_ref, rel=1e-12)
    assert got["kl_policy_to_reference"] == pytest.approx(kl_pol_ref, rel=1e-12)
    assert got["kl_policy_to_optimal"] == float("inf")  # the policy plays a move the optimum never does
    assert got["optimal_move_mass"] == pytest.approx(0.95) and got["policy_move_mass"] == pytest.approx(0.85)
