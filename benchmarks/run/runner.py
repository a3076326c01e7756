"""The experiment loop of ``ttsearch run``: tasks x arms x seeds, one JSON line per episode.

    config = load_config("benchmarks/configs/smoke-maze.yaml")
    summary = run_experiment(config, out="runs/smoke", resume=False, limit=None, concurrency=8)

Writes ``OUT/run.json`` (the manifest, once) and appends one row per finished episode to
``OUT/episodes.jsonl`` in finishing order (``store.py``: whole lines, fsync'ed, one writer). A
resume truncates a trailing partial line left by a crash, skips finished keys and refuses a
changed config; ``retry_errors`` also reruns the episodes an env fault ended. Episodes run
``concurrency`` at a time in this process (``local.py``) or on Ray actors (``ray_executor.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ttsearch.benchmarks.run.config import RunConfig
from ttsearch.benchmarks.run.local import Job, LocalExecutor
from ttsearch.benchmarks.run.setup import Setup, run_manifest, setup
from ttsearch.benchmarks.run.store import RunStore, key_hash
from ttsearch.envs.errors import BackendError

DEFAULT_CONCURRENCY = {"transformers": 16, "sglang": 16}
"""Episodes in flight when the config says ``concurrency: auto``, per engine kind."""


def resolve_concurrency(config: RunConfig, override: int | None = None) -> int:
    value = override if override is not None else config.concurrency
    return DEFAULT_CONCURRENCY[config.engine.kind] if value == "auto" else int(value)


def jobs(s: Setup) -> Iterator[Job]:
    """(arm, task, seed) in run order: task-major, so a partial run covers every arm."""
    for task in s.tasks:
        for arm in s.arms:
            for seed in s.config.seeds:
                yield Job(arm, task, seed)


class _Meter:
    """What the progress line shows: episodes in flight, episodes/s, tokens/s, env errors."""

    def __init__(self) -> None:
        self.started, self.episodes, self.tokens, self.errors = time.perf_counter(), 0, 0, 0

    def add(self, row: dict[str, Any]) -> None:
        self.episodes += 1
        if row.get("error"):
            self.errors += 1
        else:
            self.tokens += row["usage"]["tokens"] + sum(row["eval_usage"].values())

    def line(self, in_flight: int) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        errors = f" | {self.errors} env errors" if self.errors else ""
        return (f"{in_flight} in flight | {self.episodes / elapsed:.2f} episodes/s | "
                f"{self.tokens / elapsed:.0f} tokens/s{errors}")


def run_experiment(config: RunConfig, out: str | Path, *, resume: bool = False, limit: int | None = None,
                   progress: bool = True, concurrency: int | None = None, retry_errors: bool = False,
                   ray_address: str | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``; returns counts (see the module docstring)."""
    RunStore.check(Path(out), config.config_hash(), resume=resume)  # before loading any model
    n = resolve_concurrency(config, concurrency)
    executor_kind = "ray" if ray_address is not None or config.executor.kind == "ray" else "local"
    s = setup(config, limit=limit, out=Path(out), concurrency=n if executor_kind == "local" else 1)
    try:
        store = RunStore(out, run_manifest(s), resume=resume)
    except BaseException:
        s.close()
        raise
    skip = store.done if retry_errors else store.done | store.errored
    todo = [job for job in jobs(s) if job.key not in skip]
    console = Console(stderr=True)
    if progress:
        console.print(f"run {config.name!r}: {len(s.tasks)} tasks x {len(s.arms)} arms x {len(config.seeds)} seeds; "
                      f"{len(store.done)} episodes already in {store.episodes}"
                      + (f" ({len(store.errored)} env errors{', retried' if retry_errors else ''})"
                         if store.errored else "") + f"; {n} in flight")
    if executor_kind == "ray":
        from ttsearch.benchmarks.run.ray_executor import (
            RayExecutor,  # optional: ray is a large extra
        )

        executor: Any = RayExecutor(config, limit=limit, address=ray_address or config.executor.address,
                                    workers=config.executor.workers, concurrency=n)
    else:
        executor = LocalExecutor(s, concurrency=n, env_timeout_s=config.env_timeout_s)
    meter = _Meter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=not progress) as bar:
            handle = bar.add_task("episodes", total=len(todo))
            for done in executor.run(todo):
                if config.save_trees and done.tree is not None:  # before the row: a row implies its tree
                    trees = store.out / "trees"
                    trees.mkdir(exist_ok=True)
                    done.tree.write_json(trees / f"{key_hash(done.row['key'])}.json")
                store.append(done.row)
                meter.add(done.row)
                bar.update(handle, advance=1, description=meter.line(executor.in_flight))
    except BackendError as err:  # e.g. a server died: say that nothing finished is lost
        raise BackendError(f"{err} -- the {len(store.done)} finished episodes are kept in {store.episodes}; "
                           "fix the engine and rerun with --resume") from None
    finally:
        store.close()
        s.close()
    return {"out": str(store.out), "ran": meter.episodes, "total": len(store.done),
            "errors": len(store.errored), "seconds": round(time.perf_counter() - meter.started, 2)}
