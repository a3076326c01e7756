"""Merged references π_α = π_ref + α·(π_θ − π_ref), checked against hand-computed weight combinations.

Weights are float32; a merge is computed in float64 and stored in float32, so a merged entry is
within one float32 rounding (|w|·2^-24, < 1e-6 here) of the exact combination: ATOL 1e-6.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from ttsearch.agents import ModelPair, PairManifest, ScoreRequest
from ttsearch.agents.checkpoints.merge import (
    MARKER,
    ReferenceMerge,
    merge_weights,
    merged_reference_dir,
)
from ttsearch.envs.errors import ConfigError
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

from tolerances import folder_tol

ATOL = 1e-6
EXACT = 1e-12
REF = {"a": torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64), "b": torch.tensor([1.0, 1.0], dtype=torch.float64),
       "steps": torch.tensor([3])}
POL = {"a": torch.tensor([[1.0, -4.0], [2.0, 0.5]], dtype=torch.float64), "b": torch.tensor([4.0, 1.0], dtype=torch.float64),
       "steps": torch.tensor([9])}


def test_linear_is_reference_plus_alpha_times_the_task_vector():
    out = merge_weights(REF, POL, ReferenceMerge(merge="linear", alpha=0.25))
    assert torch.allclose(out["a"], torch.tensor([[0.25, -1.0], [0.5, 0.125]], dtype=torch.float64), atol=EXACT)
    assert torch.allclose(out["b"], torch.tensor([1.75, 1.0], dtype=torch.float64), atol=EXACT)
    assert out["steps"].item() == 3  # integer tensors are not weights: left as the reference has them
    assert torch.equal(merge_weights(REF, POL, ReferenceMerge(alpha=0.0))["a"], REF["a"])
    assert torch.allclose(merge_weights(REF, POL, ReferenceMerge(alpha=1.0))["a"], POL["a"], atol=EXACT)


def test_ties_keeps_the_top_density_of_changed_entries_over_all_tensors():
    # changed entries |τ| = 1, 4, 2, 0.5 (a) and 3 (b; its second entry did not change): 5 in all;
    # density 0.4 keeps ceil(2) = 2, the largest: 4 (a) and 3 (b)
    out = merge_weights(REF, POL, ReferenceMerge(merge="ties", alpha=0.5, density=0.4))
    assert torch.allclose(out["a"], torch.tensor([[0.0, -2.0], [0.0, 0.0]], dtype=torch.float64), atol=EXACT)
    assert torch.allclose(out["b"], torch.tensor([2.5, 1.0], dtype=torch.float64), atol=EXACT)


def test_dare_drops_entries_and_rescales_the_rest_reproducibly():
    big_ref = {"w": torch.zeros(200, 200, dtype=torch.float64)}
    big_pol = {"w": torch.full((200, 200), 2.0, dtype=torch.float64)}
    merge = ReferenceMerge(merge="dare", alpha=0.5, density=0.25, seed=7)
    out = merge_weights(big_ref, big_pol, merge)["w"]
    # each entry is dropped (0) or kept and rescaled: 0.5 * 2 / 0.25 = 4
    assert set(out.unique().tolist()) == {0.0, 4.0}
    kept = (out == 4.0).double().mean().item()
    assert abs(kept - 0.25) < 4 * (0.25 * 0.75 / 40000) ** 0.5  # Bernoulli(0.25) over 40000 entries, 4 sigma
    assert torch.equal(merge_weights(big_ref, big_pol, merge)["w"], out)
    other = merge_weights(big_ref, big_pol, ReferenceMerge(merge="dare", alpha=0.5, density=0.25, seed=8))["w"]
    assert not torch.equal(other, out)


def test_bad_merges_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown reference merge 'mean'; choose one of: dare, linear, ties"):
        ReferenceMerge(merge="mean")
    with pytest.raises(ConfigError, match="alpha must be a number in \\[0, 1\\]"):
        ReferenceMerge(alpha=1.5)
    with pytest.raises(ConfigError, match="density applies to ties and dare"):
        ReferenceMerge(density=0.3)
    with pytest.raises(ConfigError, match="no option\\(s\\) beta"):
        ReferenceMerge.from_dict({"merge": "linear", "beta": 1})
    assert ReferenceMerge(merge="ties", alpha=0.5).label == "ties-0.5-d0.2"
    assert ReferenceMerge(merge="dare", alpha=0.25).label == "dare-0.25-d0.1-s0"


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["take the coin", "go north", "you are in a room"] * 10, vocab_size=300)


@pytest.fixture(scope="module")
def full_pair(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("merge-pair")
    save_pair_folder(make_model(tok, hidden_size=32, num_layers=1, num_heads=2, init_std=0.1, seed=1), tok,
                     root / "policy")
    save_pair_folder(make_model(tok, hidden_size=32, num_layers=1, num_heads=2, init_std=0.1, seed=2), tok,
                     root / "reference")
    PairManifest(beta=0.5).write(root)
    return root


def test_a_merged_folder_holds_the_hand_computed_weights_and_is_reused(full_pair, tmp_path):
    merge = ReferenceMerge(merge="linear", alpha=0.3)
    folder = merged_reference_dir(full_pair / "policy", full_pair / "reference", merge, cache_dir=tmp_path)
    ref, pol = load_file(full_pair / "reference" / "model.safetensors"), load_file(full_pair / "policy" / "model.safetensors")
    got = load_file(folder / "model.safetensors")
    assert set(got) == set(ref)
    for name in ref:
        want = ref[name].double() + 0.3 * (pol[name].double() - ref[name].double())
        assert torch.allclose(got[name].double(), want, atol=ATOL), name
    stamp = (folder / MARKER).stat().st_mtime_ns
    assert merged_reference_dir(full_pair / "policy", full_pair / "reference", merge, cache_dir=tmp_path) == folder
    assert (folder / MARKER).stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert json.loads((folder / MARKER).read_text())["merge"]["alpha"] == 0.3
    other = merged_reference_dir(full_pair / "policy", full_pair / "reference", ReferenceMerge(alpha=0.6),
                                 cache_dir=tmp_path)
    assert other != folder


def test_a_pair_scores_against_the_merged_reference(full_pair, tmp_path, tok):
    prompt, action = tuple(tok.encode("you are in a room")), tuple(tok.encode("take the coin"))
    plain = ModelPair.load_dir(full_pair)

    def lps(backend):
        return backend.score([ScoreRequest(prompt, action)])[0].logprobs

    # α = 0 and 1 rewrite a model's own weights, rounded through the merge: one forward's rounding
    tol = max(folder_tol(full_pair / side, "you are in a room take the coin") for side in ("policy", "reference"))
    at0 = ModelPair.load_dir(full_pair, reference={"merge": "linear", "alpha": 0.0}, merge_cache=tmp_path)
    at1 = ModelPair.load_dir(full_pair, reference={"merge": "linear", "alpha": 1.0}, merge_cache=tmp_path)
    assert lps(at0.reference) == pytest.approx(lps(plain.reference), abs=tol)
    assert lps(at1.reference) == pytest.approx(lps(plain.policy), abs=tol)
    assert at1.reference_merge == ReferenceMerge(alpha=1.0) and plain.reference_merge is None


def test_a_lora_policy_merges_its_adapter_delta(tmp_path, tok):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    model = make_model(tok, hidden_size=32, num_layers=1, num_heads=2, seed=0)
    root = tmp_path / "pair"
    save_pair_folder(copy.deepcopy(model), tok, root / "reference")
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    peft_model.save_pretrained(root / "policy")
    config = json.loads((root / "policy" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "../reference"
    (root / "policy" / "adapter_config.json").write_text(json.dumps(config))
    PairManifest(beta=0.5).write(root)

    folder = merged_reference_dir(root / "policy", root / "reference", ReferenceMerge(alpha=0.5), cache_dir=tmp_path / "c")
    base, adapter, got = (load_file(root / "reference" / "model.safetensors"),
                          load_file(root / "policy" / "adapter_model.safetensors"), load_file(folder / "model.safetensors"))
    a = next(v for k, v in adapter.items() if "lora_A" in k).double()
    b = next(v for k, v in adapter.items() if "lora_B" in k).double()
    q = next(k for k in base if k.endswith("q_proj.weight"))
    want = base[q].double() + 0.5 * (b @ a) * (8 / 4)  # ΔW = B·A·(lora_alpha / r)
    assert torch.allclose(got[q].double(), want, atol=ATOL)
    untouched = next(k for k in base if k.endswith("k_proj.weight"))
    assert torch.equal(got[untouched], base[untouched])  # outside the adapter τ = 0
