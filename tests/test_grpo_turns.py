"""The soft_turn objective against hand computations and a plain per-row loss (tiny random model)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ttsearch.envs.errors import ConfigError
from ttsearch.training.grpo_loss import Row, sequence_token_logprobs
from ttsearch.training.grpo_turns import (
    _accumulate_gradient,
    adapt_lr,
    soft_returns,
    soft_turn_update,
    state_advantages,
    turn_logprobs,
)

from tolerances import model_tol


def test_soft_returns_by_hand():
    # G2 = 1 - 0.5*0.2 = 0.9; G1 = 0 - 0.5*(-0.4) + 0.9*0.9 = 1.01; G0 = 0 - 0.5*0.6 + 0.9*1.01 = 0.609
    got = soft_returns([0.0, 0.0, 1.0], [0.6, -0.4, 0.2], gamma=0.9, beta=0.5)
    assert got == pytest.approx([0.609, 1.01, 0.9], abs=1e-12)
    assert soft_returns([1.0], [3.0], gamma=0.9, beta=0.0) == pytest.approx([1.0])
    with pytest.raises(ConfigError):
        soft_returns([1.0], [], gamma=0.9, beta=0.1)


def test_state_advantages_are_leave_one_out_and_skip_singletons():
    got = state_advantages(["a", "b", "a", "a", "c"], [1.0, 5.0, 2.0, 6.0, 0.0])
    # a: 1 - (2+6)/2 = -3; 2 - (1+6)/2 = -1.5; 6 - (1+2)/2 = 4.5; b, c occur once
    assert got[[0, 2, 3]] == pytest.approx([-3.0, -1.5, 4.5])
    assert np.isnan(got[1]) and np.isnan(got[4])


def _rows(tok):
    p1, p2 = tuple(tok.encode("you are in a room")), tuple(tok.encode("take"))
    north, coin = tuple(tok.encode("go north")), tuple(tok.encode("coin go south"))
    return [Row(p1, north[:1]), Row(p2, coin), Row(p1, north), Row(p1, coin[:1]), Row(p2, north[:1])]


def test_deduplicated_turn_logprobs_equal_full_rows(tiny):
    model, tok = tiny
    rows = _rows(tok)
    with torch.no_grad():
        got, first = turn_logprobs(model, rows, pad_id=0, batch=2)
        want = sequence_token_logprobs(model, rows, pad_id=0)
    for g, w in zip(got, want, strict=True):
        assert g.tolist() == pytest.approx(w.tolist(), abs=1e-5)
    assert set(first) == {rows[0].prompt, rows[1].prompt}


def test_gradient_equals_the_plain_per_row_policy_gradient(tiny):
    model, tok = tiny
    rows = _rows(tok)
    adv = np.array([0.7, -1.2, 0.4, -0.3, 2.0])
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    _accumulate_gradient(a, rows, adv, pad_id=0, batch=2)
    lps = sequence_token_logprobs(b, rows, pad_id=0)
    loss = sum(-(w / len(rows)) * lp.sum() for w, lp in zip(adv, lps, strict=True))
    loss.backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        # float32 sums of differently ordered terms: relative 1e-4 of the gradient's scale
        scale = float(pb.grad.abs().max()) + 1e-12
        assert float((pa.grad - pb.grad).abs().max()) <= 1e-4 * scale, name


def test_one_update_raises_a_rewarded_turn_and_measures_zero_kl_at_the_reference(tiny):
    from contextlib import nullcontext

    model, tok = tiny
    model = copy.deepcopy(model)
    prompt = tuple(tok.encode("you are in a room"))
    good, bad = tuple(tok.encode("take"))[:1], tuple(tok.encode("go"))[:1]
    rows = [Row(prompt, good), Row(prompt, bad), Row(prompt, good), Row(prompt, bad)]
    with torch.no_grad():
        before = float(turn_logprobs(model, rows[:1], pad_id=0)[0][0])
        before_dist = model(input_ids=torch.tensor([prompt])).logits[0, -1].float().log_softmax(-1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # a small step: first order holds
    # four one-turn episodes; the policy is its own reference here (adapter 'off' = same model)
    stats = soft_turn_update(model, nullcontext, rows, [0, 1, 2, 3], [1.0, 0.0, 1.0, 0.0], opt,
                             beta=0.1, gamma=0.9, pad_id=0)
    with torch.no_grad():
        after = float(turn_logprobs(model, rows[:1], pad_id=0)[0][0])
        after_logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
        after_dist = after_logits.float().log_softmax(-1)
    assert after > before
    assert stats["rows"] == 4 and stats["states"] == 1
    assert stats["exact_first_token_kl"] == pytest.approx(0.0, abs=1e-6)
    # how far the step moved the policy: KL(after‖before) of a plain forward. Each side's log-probs
    # carry the forward's rounding (model_tol), and the KL is a p-weighted difference of the two
    want = float((after_dist.exp() * (after_dist - before_dist)).sum())
    assert want > 0 and stats["step_kl"] == pytest.approx(want, abs=2 * model_tol(model, after_logits))


def test_adapt_lr_brakes_big_steps_speeds_small_ones_and_stays_in_bounds():
    assert adapt_lr(1e-4, 0.05, target=0.02, lr_max=3e-4) == pytest.approx(1e-4 / 1.5)   # > 2·target
    assert adapt_lr(1e-4, 0.005, target=0.02, lr_max=3e-4) == pytest.approx(1.5e-4)      # < target/2
    assert adapt_lr(1e-4, 0.02, target=0.02, lr_max=3e-4) == 1e-4                        # within the band
    assert adapt_lr(2.5e-4, 0.0, target=0.02, lr_max=3e-4) == 3e-4                       # the ceiling
    assert adapt_lr(3.1e-6, 9.0, target=0.02, lr_max=3e-4) == pytest.approx(3e-6)        # the floor: 1%
    with pytest.raises(ConfigError, match="target > 0"):
        adapt_lr(1e-4, 0.1, target=0.0, lr_max=3e-4)


def test_exact_kl_term_has_the_gradient_of_the_full_vocabulary_kl(tiny):
    """kl='exact' adds w·KL(π_θ‖π_ref)(s) per state: its gradient is that of a plain forward's KL."""
    from ttsearch.training.grpo_loss import exact_token_kl

    model, tok = tiny
    prompt = tuple(tok.encode("you are in a room"))
    other = copy.deepcopy(model)
    with torch.no_grad():  # a different 'reference': perturb the copy
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
        ref = other(input_ids=torch.tensor([prompt])).logits[0, -1].float().log_softmax(-1)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    row = Row(prompt, tuple(tok.encode("go"))[:1])
    _accumulate_gradient(a, [row], np.zeros(1), pad_id=0, batch=4, kl_terms={prompt: (0.3, ref)})
    logp = b(input_ids=torch.tensor([prompt])).logits[0, -1].float().log_softmax(-1)
    (0.3 * exact_token_kl(logp, ref)).backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        scale = float(pb.grad.abs().max()) + 1e-12
        assert float((pa.grad - pb.grad).abs().max()) <= 1e-4 * scale, name


def test_exact_kl_needs_one_token_turns(tiny):
    from contextlib import nullcontext

    model, tok = tiny
    rows = [Row(tuple(tok.encode("take")), tuple(tok.encode("go north")))] * 2
    with pytest.raises(ConfigError, match="one-token turns"):
        soft_turn_update(model, nullcontext, rows, [0, 1], [0.0, 1.0], torch.optim.SGD(model.parameters(), lr=0.1),
                         beta=0.1, gamma=0.9, pad_id=0, kl="exact")


def test_quick_maze_preset_trains_and_measures_a_pair_on_a_tiny_model(tiny, tmp_path, monkeypatch):
    """`pair grpo --preset maze --quick` mechanics on a tiny random model: held-out layouts never
    train, the manifest records the curve, and the pair loads as base + adapter."""
    from ttsearch.agents import ModelPair
    from ttsearch.training import grpo_recipe
    from ttsearch.training.grpo_eval import evaluate_pair
    from ttsearch.training.grpo_recipe import PRESET_DEFAULTS, PRESETS, GrpoConfig, train_grpo_pair
    from ttsearch.training.tiny_model import save_pair_folder

    model, tok = tiny
    reference = save_pair_folder(copy.deepcopy(model), tok, tmp_path / "ref")
    # the adaptive rate: the recipe hands each update's measured step KL to adapt_lr and steps the
    # next iteration at the rate it returns (adapt_lr's rule is tested on its own above)
    calls = []

    def recording_adapt_lr(lr, step_kl, **kwargs):
        calls.append((lr, step_kl, kwargs))
        return 1.25e-4

    monkeypatch.setattr(grpo_recipe, "adapt_lr", recording_adapt_lr)
    config = GrpoConfig.quick(**{**PRESET_DEFAULTS["maze"], "iterations": 2, "tasks_per_iter": 2, "group_size": 3,
                                 "step_kl_target": 0.02})
    report = train_grpo_pair(config, reference, tmp_path / "pair", log=lambda line: None)
    assert [h["iteration"] for h in report["history"]] == [0, 1]
    history = report["history"]
    assert [h["lr"] for h in history] == [config.lr, 1.25e-4]
    assert [(lr, kl) for lr, kl, _ in calls] == [(config.lr, history[0]["step_kl"]), (1.25e-4, history[1]["step_kl"])]
    assert calls[0][2] == {"target": 0.02, "lr_max": config.lr}
    # KL >= 0 up to float32 rounding of a sum over the vocabulary (~1e-7 relative)
    assert all(h["exact_first_token_kl"] >= -1e-6 and h["turns"] >= 1 for h in report["history"])
    preset = PRESETS["maze"]
    train_ids = {t.id for t, _ in preset.starts("train", 4)}
    test = preset.starts("test", 3)
    assert not train_ids & {t.id for t, _ in test}
    assert all(t.split == "test" for t, _ in test)
    pair = ModelPair.load_dir(tmp_path / "pair")
    assert pair.beta == PRESET_DEFAULTS["maze"]["beta"] and pair.manifest.env == "maze"
    assert pair.manifest.extra["max_new_tokens"] == 1
    result = evaluate_pair(pair, preset, n_tasks=3, seed=0)
    assert result["policy"]["episodes"] == result["reference"]["episodes"] == 3
    assert result["kl_per_action_token"] >= -1e-6


def test_step_kl_target_needs_a_soft_turn_preset():
    from ttsearch.training.grpo_recipe import GrpoConfig

    with pytest.raises(ConfigError, match="soft_turn preset.*'maze'"):
        GrpoConfig(preset="chain_sum", step_kl_target=0.02)
    with pytest.raises(ConfigError, match="must be > 0"):
        GrpoConfig(preset="maze", step_kl_target=-1.0)
