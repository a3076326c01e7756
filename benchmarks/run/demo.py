"""The demo: greedy vs step best-of-K guided by progress advantage vs by policy log-prob.

    rows = play_demo(default_pair_dir("maze"), episodes=200, k=8, seed=0, out="runs/demo")
    summary = summarize(rows)          # per arm: episodes, success rate ± stderr, tokens, steps

Loads a maze pair (the shipped one: no GPU, nothing downloaded) and plays held-out slippery-maze
layouts three ways: the policy's greedy move; step best-of-K choosing the candidate with the
highest progress advantage β·(log π_θ − log π_ref); and step best-of-K choosing the candidate
with the highest policy log-prob. Each finished episode is appended to ``OUT/results.jsonl`` as
it finishes; a rerun with the same OUT skips finished episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.envs import list_tasks
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.scorers.metrics import success_rate_and_stderr
from ttsearch.search import Budget, make_controller

ARMS: dict[str, tuple[str, dict[str, Any], str]] = {
    "greedy": ("greedy", {}, "policy_logprob"),
    "step-bok/progress_advantage": ("step_best_of_n", {}, "progress_advantage"),
    "step-bok/policy_logprob": ("step_best_of_n", {}, "policy_logprob"),
}
"""Demo arm -> (controller, controller kwargs, scorer)."""


def play_demo(pair_dir: str | Path, *, episodes: int, k: int, seed: int, out: str | Path,
              on_start: Callable[[str], None] = lambda line: None,
              on_episode: Callable[[int, int], None] = lambda done, total: None) -> list[dict[str, Any]]:
    """Play every (arm, layout) not yet in ``OUT/results.jsonl``; return this run's rows."""
    if episodes < 1 or k < 1:
        raise ConfigError("--episodes and --k must be >= 1")
    pair = ModelPair.load_dir(pair_dir)
    env_kwargs = dict(pair.manifest.env_kwargs)
    env_kwargs.pop("gamma", None)  # a solver setting, not needed to play
    tasks = list_tasks("maze", split="test", limit=episodes, episode_seed=seed, **env_kwargs)
    # The maze lists its moves: any other text is a parse error, never preferred by search.
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=4, temperature=1.0),
                  parser=PlainActionParser(match_admissible=True))
    results_path = Path(out) / "results.jsonl"
    Path(out).mkdir(parents=True, exist_ok=True)
    done = {(row["arm"], row["task"]): row for row in read_rows(results_path)}
    todo = [(arm, task) for arm in ARMS for task in tasks if (arm, task.id) not in done]
    on_start(f"pair {pair_dir} (beta={pair.beta}); {len(tasks)} held-out layouts x {len(ARMS)} arms; "
             f"{len(done)} episodes already in {results_path}")
    with JsonlWriter(results_path) as sink:
        for number, (arm, task) in enumerate(todo, 1):
            controller_name, kwargs, scorer_name = ARMS[arm]
            if controller_name == "step_best_of_n":
                kwargs = {**kwargs, "k": k}
            controller = make_controller(controller_name, seed=seed, **kwargs)
            options = {"beta": pair.beta} if scorer_name == "progress_advantage" else {}
            result = controller.run(task, task.make, agent, make_scorer(scorer_name, **options), Budget())
            row = {"arm": arm, "task": task.id, "success": result.success, "steps": len(result.trajectory.steps),
                   "tokens": result.usage.generated_tokens + result.usage.scored_tokens,
                   "actions": list(result.trajectory.actions)}
            sink.append(row)
            done[(arm, task.id)] = row
            on_episode(number, len(todo))
    task_ids = {task.id for task in tasks}
    return [row for (_, tid), row in done.items() if tid in task_ids]


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm: episodes, success rate, its standard error, mean tokens (generated + scored)."""
    out: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        n = len(mine)
        rate, stderr = success_rate_and_stderr([r["success"] for r in mine])
        out[arm] = {
            "episodes": n,
            "success_rate": rate,
            "stderr": stderr,
            "tokens": sum(r["tokens"] for r in mine) / n,
            "steps": sum(r["steps"] for r in mine) / n,
        }
    return out
