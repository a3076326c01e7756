"""Shared test hooks.

``@pytest.mark.sglang`` marks a test that needs SGLang's CPU runtime (``make sglang-cpu``): it
is skipped where the runtime is missing, unless TTSEARCH_REQUIRE_SGLANG=1 (CI sets it after
``make sglang-cpu``), which turns a missing runtime into a failure.
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
