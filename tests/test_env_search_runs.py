"""A search run completes on every environment adapter (issue: adapters + search).

Each adapter's first task is searched by step best-of-N with progress advantage over a fake
policy that proposes the benchmark's own gold action (designed advantage +1) and a garbage
action (advantage −1) at every turn. The run must finish and succeed by the benchmark's own
reward: proof that controllers, the ledger and the adapters fit together on every benchmark.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ttsearch.envs import list_tasks
from ttsearch.scorers import make_scorer
from ttsearch.search import Budget, make_controller
from ttsearch.search.testing import Choice, FakeProposer

DATA = Path(__file__).resolve().parent / "data"
ADAPTERS = {
    # name: (import needed, task-list kwargs)
    "agentdojo": ("agentdojo", {}),
    "bfcl": ("bfcl_eval", {}),
    "tau2": ("tau2", {}),
    "sokoban": ("textarena", {}),
    "textworld": ("textworld", {}),
    "textworld_express": ("textworld_express", {}),
    "scienceworld": ("scienceworld", {}),
    "minigrid": ("minigrid", {}),
    "reasoning_gym": ("reasoning_gym", {}),
    "textcraft": ("textcraft", {}),
    "webshop": (None, {"data_dir": str(DATA / "webshop")}),
    "alfworld": ("alfworld", {"data_dir": str(DATA / "alfworld")}),
}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_step_best_of_n_completes_and_succeeds_on_adapter(name, tmp_path, monkeypatch):
    module, kwargs = ADAPTERS[name]
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (make benchmarks)")
    monkeypatch.setenv("TTSEARCH_CACHE", str(tmp_path))
    task = list_tasks(name, limit=1, **kwargs)[0]
    env = task.make()
    env.reset(seed=task.seed)
    gold = list(env.gold_actions() or [])
    env.close()
    assert gold, f"{name} has no gold path for {task.id}"

    def table(state):
        garbage = Choice("@@ not an action @@", logprob=-0.2, advantage=-1.0)
        t = len(state.steps)
        return [Choice(gold[t], logprob=-0.5, advantage=1.0), garbage] if t < len(gold) else [garbage]

    controller = make_controller("step_best_of_n", k=4, max_steps=len(gold) + 5)
    result = controller.run(task, task.make, FakeProposer(table), make_scorer("progress_advantage"), Budget())
    assert result.trajectory.actions == tuple(gold[: len(result.trajectory.actions)])
    assert result.success, (name, result.stop_reason, result.trajectory.total_reward)
