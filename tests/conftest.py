"""Shared test hooks.

``@pytest.mark.sglang`` marks a test that needs SGLang's CPU runtime (``make sglang-cpu``): it
is skipped where the runtime is missing, unless TTSEARCH_REQUIRE_SGLANG=1 (CI sets it after
``make sglang-cpu``), which turns a missing runtime into a failure.

``tiny``: a random 2-layer causal LM and its tokenizer (the training tests' model; callers that
update weights deep-copy it first).
"""

from __future__ import annotations

import os

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("sglang") is None:
        return
    from ttsearch.agents.engines.sglang.runtime import runtime_problem

    problem = runtime_problem()
    if problem is None:
        return
    if os.environ.get("TTSEARCH_REQUIRE_SGLANG") == "1":
        pytest.fail(f"TTSEARCH_REQUIRE_SGLANG=1 but {problem}")
    pytest.skip(f"{problem} (TTSEARCH_REQUIRE_SGLANG unset)")


@pytest.fixture(scope="module")
def tiny():
    # the training package pulls in transformers: loaded only by the tests that use the fixture
    from ttsearch.training.tiny_model import make_model, train_tokenizer

    tok = train_tokenizer(["go north", "go south", "you are in a room", "take coin"] * 20, vocab_size=300)
    return make_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=3), tok
