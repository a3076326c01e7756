"""Episodes in flight in one process: up to N at once over the run's shared engines.

    executor = LocalExecutor(s, concurrency=8, env_timeout_s=60)
    for done in executor.run(todo):            # (arm, task, seed) jobs; results in finishing order
        store.append(done.row)

Each episode runs in its own daemon thread with its own agent (``s.agent.fork()``: its own
budget meters) and its own guarded envs (``ttsearch.envs.guard``): the model calls of all
episodes meet in the engines' batching layer, and their env steps overlap with each other's
model calls. An env that raises or returns a malformed value ends its episode with an error row;
an env call that runs past ``env_timeout_s`` is given up by a watchdog, the episode gets its
error row at once and its thread is left behind (it is a daemon: it never holds up the run or
the exit). Any other exception (an engine failure, a bug) stops the run and is re-raised here.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ttsearch.benchmarks.run.arms import ResolvedArm
from ttsearch.benchmarks.run.episode import error_row, play_episode
from ttsearch.benchmarks.run.setup import Setup
from ttsearch.benchmarks.run.store import episode_key
from ttsearch.envs.base import Task
from ttsearch.envs.guard import EnvFault, GuardedEnv, Watchdog


@dataclass(frozen=True, slots=True)
class Job:
    arm: ResolvedArm
    task: Task
    seed: int

    @property
    def key(self) -> str:
        return episode_key(self.arm.name, self.task.id, self.seed)


@dataclass(frozen=True, slots=True)
class Finished:
    """An episode's outcome: its row (an error row when an env fault ended it) and its tree."""

    job: Job
    row: dict[str, Any]
    tree: Any = None


class Outcome:
    """The first answer of an episode wins (the thread's, or the watchdog's on a timeout)."""

    def __init__(self, job: Job, results: queue.Queue):
        self.job, self._results, self._lock, self._posted = job, results, threading.Lock(), False

    def post(self, item: Finished | BaseException) -> None:
        with self._lock:
            if self._posted:
                return
            self._posted = True
        self._results.put((self.job, item))


class LocalExecutor:
    """Runs a run's episodes in up to ``concurrency`` threads (see the module docstring)."""

    def __init__(self, s: Setup, *, concurrency: int, env_timeout_s: float | None):
        self.s, self.concurrency, self.env_timeout_s = s, max(1, concurrency), env_timeout_s
        self.in_flight = 0
        self._watchdog: Watchdog | None = None

    def run(self, todo: Sequence[Job]) -> Iterator[Finished]:
        results: queue.Queue = queue.Queue()
        self._watchdog = Watchdog() if self.env_timeout_s is not None else None
        pending, live = list(reversed(todo)), set()
        try:
            while pending or live:
                while pending and len(live) < self.concurrency:
                    job = pending.pop()
                    live.add(job.key)
                    threading.Thread(target=self._play, args=(job, Outcome(job, results)),
                                     name=f"ttsearch-episode-{job.key}", daemon=True).start()
                self.in_flight = len(live)
                job, item = results.get()
                live.discard(job.key)
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self._watchdog is not None:
                self._watchdog.stop()
            self.in_flight = 0

    def _play(self, job: Job, outcome: Outcome) -> None:
        play_job(self.s, job, outcome, env_timeout_s=self.env_timeout_s, watchdog=self._watchdog)


def play_job(s: Setup, job: Job, outcome: Outcome, *, env_timeout_s: float | None,
             watchdog: Watchdog | None) -> None:
    """Play one episode in this thread and post its outcome (an error row on an env fault; the
    watchdog posts it first when an env call hangs)."""
    started = time.perf_counter()

    def timed_out(fault: EnvFault) -> None:  # from the watchdog's thread on a timeout
        role = "validation" if job.task.id in s.validation_ids else "test"
        outcome.post(Finished(job, error_row(job.arm, job.task, job.seed, fault,
                                             wall_s=time.perf_counter() - started, role=role)))

    def make_env() -> GuardedEnv:
        return GuardedEnv.open(job.task.make, where=f"{job.task.env}/{job.task.id}", timeout_s=env_timeout_s,
                               watchdog=watchdog, on_timeout=timed_out)

    try:
        row, tree = play_episode(s, job.arm, job.task, job.seed, agent=s.agent.fork(), env_factory=make_env)
        outcome.post(Finished(job, row, tree))
    except EnvFault as fault:
        timed_out(fault)
    except BaseException as err:  # engine failures and bugs stop the run, in the main thread
        outcome.post(err)
