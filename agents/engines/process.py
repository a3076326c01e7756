"""An engine in a process of its own: its forwards never wait for the episodes' Python.

    policy = EngineProcess.start(functools.partial(open_engine, "pair/policy", name="policy"))
    samples = policy.sample(prompts, n=8, params=params, stats=my_meter)   # from any thread
    policy.close()

With many episodes in flight, the episode threads (search logic, prompt rendering, parsing, env
steps) and the engine's own Python (it issues hundreds of small tensor operations per forward)
share one interpreter lock: every time an engine operation returns from C it may wait for an
episode thread to let go. Here the engine runs in a child process (``spawn``) that does nothing
else. It reads every call waiting on its pipe, serves them together through the engine's
``sample_batch``/``score_batch`` (one batched call per kind, as ``BatchingBackend`` does in a
thread), and sends each caller its result and its own cost, which this side adds to the caller's
meter and to ``stats``. Calls are checked here before they are sent, so a bad call fails alone
and at once; an engine failure fails every call of its batch with the engine's error.

``builder`` is any picklable zero-argument callable returning an engine with ``sample_batch``,
``score_batch`` and ``request_checker`` (e.g. ``functools.partial(open_engine, folder,
name="policy")``: a ``TransformersBackend`` over a checkpoint folder).
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from ttsearch.agents.base import EngineStats, Sample, SamplingParams, ScoreRequest, TokenScores
from ttsearch.envs.errors import BackendError


def _serve(builder: Callable[[], Any], conn: Any) -> None:
    """The child: build the engine, announce it, then serve batches until told to stop."""
    try:
        engine = builder()
    except BaseException as err:  # the parent re-raises it where the engine was started
        conn.send(("failed", err))
        return
    conn.send(("ready", {"name": engine.name, "eos": engine.eos_token_ids, "top": engine.supports_top_logprobs,
                         "cache": engine.has_prefix_cache, "checker": engine.request_checker(),
                         "full": bool(getattr(engine, "supports_full_logprobs", False))}))
    while True:
        calls = [conn.recv()]
        while conn.poll():
            calls.append(conn.recv())
        if any(kind == "stop" for kind, _, _ in calls):
            return
        for kind in ("clear", "sample", "score"):
            mine = [(ident, payload) for k, ident, payload in calls if k == kind]
            if mine:
                conn.send(("done", _run(engine, kind, mine)))


def _run(engine: Any, kind: str, calls: list[tuple[int, Any]]) -> list[tuple[int, Any, Any]]:
    """(call id, result or exception, cost) for each call of one batch."""
    try:
        if kind == "clear":
            engine.clear_cache()
            return [(ident, None, EngineStats()) for ident, _ in calls]
        meters = [EngineStats() for _ in calls]
        run = engine.sample_batch if kind == "sample" else engine.score_batch
        results = run([payload for _, payload in calls], meters)
        return [(ident, result, meter) for (ident, _), result, meter in zip(calls, results, meters, strict=True)]
    except BaseException as err:
        return [(ident, err, None) for ident, _ in calls]


class EngineProcess:
    """A thread-safe ``Backend`` whose engine lives in a child process (module docstring)."""

    def __init__(self, conn: Any, process: Any, info: dict[str, Any]):
        self._conn, self._process = conn, process
        self.name = info["name"]
        self._eos, self._top, self._cache = tuple(info["eos"]), info["top"], info["cache"]
        self._full = bool(info.get("full", False))
        self._checker = info["checker"]
        self.stats = EngineStats()
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[Future, EngineStats | None]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name=f"ttsearch-engine-{self.name}", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, builder: Callable[[], Any], *, timeout_s: float = 600.0) -> EngineProcess:
        """Spawn the child, build the engine there, and return once it is ready."""
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(builder, theirs), daemon=True, name="ttsearch-engine")
        process.start()
        theirs.close()
        if not mine.poll(timeout_s):
            process.kill()
            raise BackendError(f"the engine process did not start within {timeout_s:.0f} s")
        status, info = mine.recv()
        if status == "failed":
            process.join()
            raise info
        return cls(mine, process, info)

    # -- the Backend protocol ----------------------------------------------------------------
    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    @property
    def supports_top_logprobs(self) -> bool:
        return self._top

    @property
    def has_prefix_cache(self) -> bool:
        return self._cache

    @property
    def supports_full_logprobs(self) -> bool:
        """Whole log-prob rows cross the pipe (pickled numpy arrays)."""
        return self._full

    @property
    def max_positions(self) -> int:
        """The engine's context length (0: unknown); the agent fits prompts to it."""
        return int(getattr(self._checker, "max_positions", 0) or 0)

    def sample(self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams,
               stats: EngineStats | None = None) -> list[list[Sample]]:
        return self._call("sample", self._checker.check_sample(prompts, n=n, params=params), stats)

    def score(self, requests: Sequence[ScoreRequest], *, stats: EngineStats | None = None) -> list[TokenScores]:
        return self._call("score", self._checker.check_score(requests), stats)

    def clear_cache(self) -> None:
        self._call("clear", None, None)

    def close(self) -> None:
        """Stop the child once the calls already sent are served."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.send(("stop", None, None))
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()

    # -- the pipe ----------------------------------------------------------------------------
    def _call(self, kind: str, payload: Any, meter: EngineStats | None) -> Any:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise BackendError(f"{self.name}: the engine process was closed; no more calls are served")
            ident = next(self._ids)
            self._waiting[ident] = (future, meter)
            self._conn.send((kind, ident, payload))
        return future.result()

    def _read(self) -> None:
        while True:
            try:
                _, answers = self._conn.recv()
            except (EOFError, OSError):  # the child is gone: fail whatever still waits
                self._fail_waiting(BackendError(f"{self.name}: the engine process ended"))
                return
            for ident, result, cost in answers:
                with self._lock:
                    future, meter = self._waiting.pop(ident)
                    if cost is not None:
                        self.stats.add(cost)
                        if meter is not None:
                            meter.add(cost)
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _fail_waiting(self, err: BaseException) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            future.set_exception(err)

    def __repr__(self) -> str:
        return f"EngineProcess(name={self.name!r})"
