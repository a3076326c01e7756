"""Benchmark-scale throughput: the same workloads at several episodes-in-flight, side by side.

    out = measure(ThroughputSettings(maze_episodes=64, smollm2_episodes=32))
    out["embedded_maze"]["speedup_16"], out["scoring_ratio_over_ideal"]["1024_k4"]
    # the command: ttsearch bench throughput --json   (benchmarks/cli/bench_throughput_cmd.py)

Workloads, each played through ``ttsearch run``'s own machinery (``run/setup.py`` +
``run/local.py``: forked agents over the engines' batching layer, guarded envs, the rescoring
pass of every row):

- ``embedded_maze``: beam search (width 3, expand 3, progress advantage) on held-out mazes with
  the shipped maze pair, at concurrency 1, 4, 16 and 64;
- ``embedded_smollm2``: step best-of-4 (PA) on held-out chain_sum with ``default:smollm2-chain-sum``
  (SmolLM2-135M-Instruct + its GRPO LoRA policy), at 1, 4, 16;
- ``sglang_smollm2``: the same smollm2 workload through two CPU SGLang servers (policy, reference)
  at 1 and 16 — left out, with a note on stderr, when SGLang's runtime is not installed;
- ``scoring_ratio_over_ideal``: the prefix-cache scoring sweep's figure at a 1024-token prefix,
  K = 16 and 4 candidates (``prefix_cache.py``: cached time / uncached time / ideal ratio).

``episodes_per_s`` at each concurrency; ``speedup_N`` = episodes/s at N ÷ at 1;
``forward_share_N`` = the share of wall time during which at least one model forward runs;
``same_results`` = every episode's actions, success, stop reason and budget usage equal the
concurrency-1 run's (for SGLang, whose CPU sampling cannot be seeded, the comparison is between
the two SGLang runs' budget accounting per episode and the engines' log-probs of the same tokens:
see ``_sglang_same_results``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsearch.agents.engines.sglang.runtime import runtime_problem
from ttsearch.benchmarks.perf.prefix_cache import (
    BenchConfig,
    bench_tokenizer,
    model_shape,
    scoring_sweep,
)
from ttsearch.benchmarks.run.config import parse_config
from ttsearch.benchmarks.run.local import LocalExecutor
from ttsearch.benchmarks.run.runner import jobs
from ttsearch.benchmarks.run.setup import setup
from ttsearch.envs.errors import ConfigError
from ttsearch.training.tiny_model import make_model

COMPARED = ("actions", "success", "stop_reason", "budget_usage")
BUDGET_FIELDS = ("generated_tokens", "scored_tokens", "model_calls", "env_steps", "proposals", "candidates")


@dataclass(frozen=True, slots=True)
class ThroughputSettings:
    maze_episodes: int = 64
    maze_levels: tuple[int, ...] = (1, 4, 16, 64)
    smollm2_episodes: int = 32
    smollm2_levels: tuple[int, ...] = (1, 4, 16)
    sglang_levels: tuple[int, ...] = (1, 16)
    sglang: bool = True
    scoring: bool = True

    def __post_init__(self) -> None:
        if self.maze_episodes < 1 or self.smollm2_episodes < 1:
            raise ConfigError("episode counts must be >= 1")
        for levels in (self.maze_levels, self.smollm2_levels, self.sglang_levels):
            if not levels or 1 not in levels or min(levels) < 1:
                raise ConfigError(f"concurrency levels must be >= 1 and include 1 (the baseline), got {levels}")


RUN_DIR = Path("runs/bench-throughput")
"""Where the SGLang servers of ``sglang_smollm2`` write their logs (as ``bench engines``)."""

MAZE = {"pair": "default:maze", "sampling": {"max_new_tokens": 2},
        "arms": [{"name": "beam", "controller": "beam", "kwargs": {"width": 3, "expand": 3}, "scorer": "pa"}],
        "scorers": [{"name": "progress_advantage", "label": "pa"}]}
SMOLLM2 = {"pair": "default:smollm2-chain-sum", "sampling": {"max_new_tokens": 12},
           "parser": "ttsearch.training.grpo_recipe:FinalNumberParser", "match_admissible": False,
           "arms": [{"name": "step-bo4", "controller": "step_best_of_n", "kwargs": {"k": 4}, "scorer": "pa"}],
           "scorers": [{"name": "progress_advantage", "label": "pa"}]}


class ForwardClock:
    """Wall time during which at least one engine is inside a model forward (the engines' packed
    runners call ``enter``/``leave`` around each forward)."""

    def __init__(self) -> None:
        self._lock, self._open, self._since, self.total = threading.Lock(), 0, 0.0, 0.0

    def enter(self) -> None:
        with self._lock:
            if self._open == 0:
                self._since = time.perf_counter()
            self._open += 1

    def leave(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self.total += time.perf_counter() - self._since


def _runners(s: Any) -> list[Any]:
    """The packed runners of a run's embedded engines (none for SGLang)."""
    engines = {id(b): getattr(b, "engine", b) for b in (s.pair.policy, s.pair.reference)}.values()
    return [engine.runner for engine in engines if hasattr(engine, "runner")]


def _signature(row: dict[str, Any]) -> dict[str, Any]:
    return {"actions": row["trajectory"]["actions"], "success": row["success"], "stop_reason": row["stop_reason"],
            "budget_usage": {f: row["usage"][f] for f in BUDGET_FIELDS}}


def play(spec: dict[str, Any], tasks: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """Play a workload's episodes at one concurrency; episodes/s, forward share, per-episode results."""
    config = parse_config({"name": "throughput", **spec, "tasks": tasks, "concurrency": concurrency})
    s = setup(config, concurrency=concurrency, out=RUN_DIR)  # SGLang servers log under RUN_DIR/sglang
    clock = ForwardClock()
    for runner in _runners(s):
        runner.clock = clock
    try:
        executor = LocalExecutor(s, concurrency=concurrency, env_timeout_s=config.env_timeout_s)
        started = time.perf_counter()
        rows = [done.row for done in executor.run(list(jobs(s)))]
        wall = time.perf_counter() - started
    finally:
        s.close()
    tokens = sum(r["usage"]["tokens"] + sum(r["eval_usage"].values()) for r in rows)
    return {"episodes_per_s": len(rows) / wall, "tokens_per_s": tokens / wall, "wall_s": wall,
            "forward_share": clock.total / wall, "success_rate": sum(r["success"] for r in rows) / len(rows),
            "results": {r["key"]: _signature(r) for r in rows}}


def sweep(spec: dict[str, Any], tasks: dict[str, Any], levels: tuple[int, ...],
          log: Callable[[str], None]) -> dict[str, Any]:
    """A workload at every level; speedups and forward shares against concurrency 1."""
    runs = {}
    for level in sorted(levels):
        runs[level] = play(spec, tasks, level)
        log(f"  concurrency {level}: {runs[level]['episodes_per_s']:.2f} episodes/s, "
            f"forward share {runs[level]['forward_share']:.2f}")
    base = runs[1]
    out: dict[str, Any] = {"episodes_per_s": {str(c): r["episodes_per_s"] for c, r in runs.items()},
                           "tokens_per_s": {str(c): r["tokens_per_s"] for c, r in runs.items()},
                           "success_rate": {str(c): r["success_rate"] for c, r in runs.items()}}
    for c, r in runs.items():
        if c > 1:
            out[f"speedup_{c}"] = r["episodes_per_s"] / base["episodes_per_s"]
            out[f"forward_share_{c}"] = r["forward_share"]
    differing = sorted(k for c, r in runs.items() for k, sig in r["results"].items() if sig != base["results"][k])
    out["same_results"] = not differing
    out["differing_episodes"] = differing
    return out


def measure(settings: ThroughputSettings, *, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("embedded_maze")
    out["embedded_maze"] = sweep(MAZE, {"split": "test", "limit": settings.maze_episodes}, settings.maze_levels, log)
    log("embedded_smollm2")
    chain = {"split": "test", "limit": settings.smollm2_episodes, "kwargs": {"n": settings.smollm2_episodes}}
    out["embedded_smollm2"] = sweep(SMOLLM2, chain, settings.smollm2_levels, log)
    problem = runtime_problem()
    if settings.sglang and problem is None:
        log("sglang_smollm2")
        out["sglang_smollm2"] = sweep({**SMOLLM2, "engine": {"kind": "sglang"}}, chain, settings.sglang_levels, log)
    elif settings.sglang:
        log(f"sglang_smollm2 left out: {problem}")
    if settings.scoring:
        log("scoring_ratio_over_ideal")
        out["scoring_ratio_over_ideal"] = scoring_ratios()
    return out


def scoring_ratios() -> dict[str, float]:
    """The prefix-cache bench's scoring sweep at a 1024-token prefix (K = 16 and 4)."""
    cfg = BenchConfig(prefix_lens=(1024,), ks=(16, 4))
    tok = bench_tokenizer()
    model = make_model(tok, seed=1, **model_shape(cfg))
    rows = scoring_sweep(model, len(tok), cfg)
    return {f"1024_k{r['k']}": r["ratio_over_ideal"] for r in rows}
