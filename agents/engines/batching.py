"""Many episodes, one engine: concurrent calls gathered into shared batched calls.

    engine = BatchingBackend(TransformersBackend("runs/pair/policy"))
    # from any number of threads (one per episode in flight):
    samples = engine.sample(prompts, n=8, params=params, stats=my_meter)
    engine.close()

Each episode thread calls ``sample``/``score`` as it would on a plain backend and blocks until
its answer is ready. One worker thread owns the wrapped engine: whenever it is free it takes
every call waiting (of the oldest call's kind, ``sample`` or ``score``) and serves them together
through the engine's ``sample_batch``/``score_batch``: one prefix-cache lookup, shared forwards,
each call's samples drawn from its own seeded streams. So the batch grows with the number of
episodes in flight (calls that arrive while a batch runs form the next one), and what a call
returns does not depend on what it was batched with (log-probs to float rounding).

Accounting: each call's own cost is added to the ``stats`` meter its caller passes (the
episode's budget ledger reads it) and to ``self.stats``; a prefix computed by one call of a
batch is charged to that call and counted as cached for the others (see the engine's
``sample_batch``). A bad call fails alone: it is checked in the caller's thread before it is
queued. An engine error fails every call of its batch with that error.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ttsearch.agents.base import EngineStats, Sample, SamplingParams, ScoreRequest, TokenScores
from ttsearch.envs.errors import BackendError


@dataclass(slots=True)
class _Call:
    kind: str  # "sample" | "score" | "clear"
    payload: Any
    meter: EngineStats | None
    future: Future = field(default_factory=Future)


class BatchingBackend:
    """A thread-safe ``Backend`` over an engine with ``sample_batch``/``score_batch``."""

    def __init__(self, engine: Any, *, max_calls: int = 512):
        for method in ("sample_batch", "score_batch", "request_checker"):
            if not callable(getattr(engine, method, None)):
                raise BackendError(f"{type(engine).__name__} cannot batch calls (no {method}()); "
                                   "use it directly, one episode at a time")
        if max_calls < 1:
            raise BackendError(f"max_calls must be >= 1, got {max_calls}")
        self.engine, self.max_calls = engine, max_calls
        self._checker = engine.request_checker()
        self.name = engine.name
        self.batches = 0
        """Batched engine calls made (``stats.calls`` counts the callers' calls)."""
        self._pending: list[_Call] = []
        self._lock = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name=f"ttsearch-engine-{self.name}", daemon=True)
        self._worker.start()

    # -- the Backend protocol ----------------------------------------------------------------
    @property
    def stats(self) -> EngineStats:
        return self.engine.stats

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.engine.eos_token_ids

    @property
    def supports_top_logprobs(self) -> bool:
        return self.engine.supports_top_logprobs

    @property
    def has_prefix_cache(self) -> bool:
        return self.engine.has_prefix_cache

    @property
    def supports_full_logprobs(self) -> bool:
        return bool(getattr(self.engine, "supports_full_logprobs", False))

    @property
    def max_positions(self) -> int:
        """The engine's context length (0: unknown); the agent fits prompts to it."""
        return int(getattr(self.engine, "max_positions", 0) or 0)

    def sample(self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams,
               stats: EngineStats | None = None) -> list[list[Sample]]:
        call = self._checker.check_sample(prompts, n=n, params=params)
        return self._submit(_Call("sample", call, stats))

    def score(self, requests: Sequence[ScoreRequest], *, stats: EngineStats | None = None) -> list[TokenScores]:
        return self._submit(_Call("score", self._checker.check_score(requests), stats))

    def clear_cache(self) -> None:
        """Drop every cached prefix, between batches (never under a running one)."""
        self._submit(_Call("clear", None, None))

    def close(self) -> None:
        """Stop the worker once the calls already queued are served."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._worker.join()

    # -- the worker ----------------------------------------------------------------------------
    def _submit(self, call: _Call) -> Any:
        with self._lock:
            if self._closed:
                raise BackendError(f"{self.name}: the engine was closed; no more calls are served")
            self._pending.append(call)
            self._lock.notify()
        return call.future.result()

    def _next_batch(self) -> list[_Call] | None:
        with self._lock:
            while not self._pending and not self._closed:
                self._lock.wait()
            if not self._pending:
                return None
            kind = self._pending[0].kind
            if kind == "clear":
                return [self._pending.pop(0)]
            batch = [c for c in self._pending if c.kind == kind][: self.max_calls]
            taken = set(map(id, batch))
            self._pending = [c for c in self._pending if id(c) not in taken]
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                if batch[0].kind == "clear":
                    self.engine.clear_cache()
                    results = [None]
                elif batch[0].kind == "sample":
                    results = self.engine.sample_batch([c.payload for c in batch], [c.meter for c in batch])
                else:
                    results = self.engine.score_batch([c.payload for c in batch], [c.meter for c in batch])
                self.batches += 1
            except BaseException as err:  # the callers re-raise it in their own threads
                for call in batch:
                    call.future.set_exception(err)
                continue
            for call, result in zip(batch, results, strict=True):
                call.future.set_result(result)

    def __repr__(self) -> str:
        return f"BatchingBackend({self.engine!r})"
