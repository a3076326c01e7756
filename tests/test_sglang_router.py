"""Data parallel: two CPU SGLang workers behind ``sglang-router`` (cache-aware routing).

Needs the runtime of ``make sglang-cpu`` (skipped without it unless TTSEARCH_REQUIRE_SGLANG=1).
Two workers serve the shipped maze policy (~2 GB and ~60 s start-up each on 2 cores).
"""

from __future__ import annotations

import pytest
import torch

from ttsearch.agents.base import ScoreRequest
from ttsearch.agents.checkpoints.shipped import default_pair_dir

from tolerances import model_tol

pytestmark = [pytest.mark.slow, pytest.mark.sglang]  # skipped without the runtime: tests/conftest.py


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    from ttsearch.agents.engines.sglang.server import ServerConfig, SGLangRouter, SGLangServer

    run_dir = tmp_path_factory.mktemp("router")
    config = ServerConfig(model_path=default_pair_dir("maze") / "policy")
    with SGLangServer(config, run_dir=run_dir, name="w0") as w0, \
         SGLangServer(config, run_dir=run_dir, name="w1") as w1, \
         SGLangRouter([w0.url, w1.url], run_dir=run_dir) as handle:
        yield handle


def test_router_serves_exact_logprobs_and_routes_repeats_to_the_warm_worker(router):
    from transformers import AutoModelForCausalLM

    from ttsearch.agents import ModelPair
    from ttsearch.agents.engines.sglang.backend import SGLangBackend

    pair = ModelPair.load_dir(default_pair_dir("maze"))
    backend = SGLangBackend(router.url, name="routed")
    model = AutoModelForCausalLM.from_pretrained(default_pair_dir("maze") / "policy").eval()
    encode = pair.tokenizer.encode
    prefixes = [tuple(encode(f"maze layout {i}: " + "wall pit open goal " * 30)) for i in range(3)]
    continuation = tuple(encode(" north"))
    for prefix in prefixes:
        ids = list(prefix + continuation)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        full, tol = logits.log_softmax(-1), model_tol(model, logits)
        expected = [full[len(prefix) - 1 + i, t].item() for i, t in enumerate(continuation)]
        cached = []
        for _ in range(4):  # the same prefix again and again
            before = backend.stats.cached_tokens
            (scores,) = backend.score([ScoreRequest(prefix, continuation)])
            cached.append(backend.stats.cached_tokens - before)
            assert scores.logprobs == pytest.approx(expected, abs=tol)
        # Cache-aware routing sends every repeat to the worker that holds the prefix; a
        # round-robin router would send the second one to the other, cold worker.
        assert all(c >= len(prefix) - 1 for c in cached[1:]), cached
