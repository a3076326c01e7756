"""Episodes across machines on Ray: actors play them, this process writes every row.

    ttsearch run CONFIG --out DIR --ray                   # a local Ray cluster for the run
    ttsearch run CONFIG --out DIR --ray auto              # the cluster `ray start --head` runs
    executor: {kind: ray, address: "ray://head:10001", workers: 4}     # the same in a config

Each of ``workers`` actors loads the run's setup itself (its own embedded engines, or the
config's SGLang servers / router by URL, so N GPU workers behind ``sglang-router`` serve every
actor) and plays up to ``concurrency`` episodes at once in threads (a threaded actor: its calls
meet in its engines' batching layer). The driver hands out one episode per remote call, keeps
every actor busy, and appends each row as it comes back, in finishing order, through the one
``RunStore`` writer: the JSONL stays whole-line, kill-safe and resumable exactly as in a local
run, and an actor never writes a file. Env faults come back as error rows; an engine failure
on an actor stops the run like a local one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import ray

from ttsearch.benchmarks.run.config import RunConfig, parse_config
from ttsearch.benchmarks.run.local import Finished, Job, Outcome, play_job
from ttsearch.benchmarks.run.setup import setup
from ttsearch.envs.errors import ConfigError
from ttsearch.envs.guard import Watchdog


class EpisodeWorker:
    """A Ray actor (threaded): one run setup, many episodes in flight over its engines."""

    def __init__(self, config: dict[str, Any], limit: int | None, concurrency: int):
        self.config = parse_config(config, source="ray worker config")
        self.s = setup(self.config, limit=limit, concurrency=concurrency)
        self.watchdog = Watchdog() if self.config.env_timeout_s is not None else None
        jobs = (Job(arm, task, seed) for task in self.s.tasks for arm in self.s.arms for seed in self.config.seeds)
        self.jobs = {job.key: job for job in jobs}

    def play(self, key: str) -> tuple[dict[str, Any], Any]:
        """(row, tree) of one episode; a hung env call returns its error row without waiting."""
        results: queue.Queue = queue.Queue()
        job = self.jobs[key]
        # the episode runs in a thread of its own so that a hung env call cannot hold this call
        threading.Thread(target=play_job, args=(self.s, job, Outcome(job, results)),
                         kwargs={"env_timeout_s": self.config.env_timeout_s, "watchdog": self.watchdog},
                         daemon=True).start()
        _, item = results.get()
        if isinstance(item, BaseException):
            raise item
        return item.row, item.tree


class RayExecutor:
    """Plays a run's episodes on Ray actors (see the module docstring)."""

    def __init__(self, config: RunConfig, *, limit: int | None, address: str | None, workers: int,
                 concurrency: int):
        if not ray.is_initialized():
            if address in (None, "local"):
                ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
                self._owns_cluster = True
            else:
                try:
                    ray.init(address=address, log_to_driver=False)
                except ConnectionError as err:
                    raise ConfigError(f"--ray {address}: no Ray cluster there ({err}); start one with "
                                      "`ray start --head`, or give no address for a local cluster") from None
                self._owns_cluster = False
        else:
            self._owns_cluster = False
        actor = ray.remote(max_concurrency=concurrency, num_cpus=1)(EpisodeWorker)
        data = config.model_dump(mode="json")
        self.actors = [actor.remote(data, limit, concurrency) for _ in range(workers)]
        self.depth = workers * concurrency
        self.in_flight = 0

    def run(self, todo: Sequence[Job]) -> Iterator[Finished]:
        pending = list(reversed(todo))
        waiting: dict[Any, Job] = {}
        turn = 0
        try:
            while pending or waiting:
                while pending and len(waiting) < self.depth:
                    job = pending.pop()
                    ref = self.actors[turn % len(self.actors)].play.remote(job.key)
                    waiting[ref] = job
                    turn += 1
                self.in_flight = len(waiting)
                (ready,), _ = ray.wait(list(waiting), num_returns=1)
                job = waiting.pop(ready)
                row, tree = ray.get(ready)  # an actor's exception is re-raised here
                yield Finished(job, row, tree)
        finally:
            self.in_flight = 0
            for actor in self.actors:
                ray.kill(actor)
            if self._owns_cluster:
                ray.shutdown()
