"""Helpers for testing environments (the env-side counterpart of ``ttsearch.search.testing``).

    obs = env.reset(seed=0)
    results = play(env, env.gold_actions())        # StepResults, stopping when the episode ends
    assert results[-1].terminated and sum(r.reward for r in results) >= 1
"""

from __future__ import annotations

from collections.abc import Iterable

from ttsearch.envs.base import Env, StepResult


def play(env: Env, actions: Iterable[str]) -> list[StepResult]:
    """Step ``env`` (already reset) through ``actions`` until the episode ends; every result."""
    results: list[StepResult] = []
    for action in actions:
        results.append(env.step(action))
        if results[-1].done:
            break
    return results
