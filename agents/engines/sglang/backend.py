"""SGLangBackend: the :class:`Backend` protocol over SGLang's native ``/generate`` API.

    with SGLangBackend.launch("runs/pair/policy", run_dir="runs/sglang") as policy:  # own server
        samples = policy.sample([prompt_ids], n=8, params=SamplingParams(seed=0))[0]
    reference = SGLangBackend("http://127.0.0.1:30000")            # a server started elsewhere
    policy = SGLangBackend("http://127.0.0.1:30000", lora="rl")    # base + LoRA on one server
    engine = SGLangBackend.in_process("runs/pair/policy")          # sglang.Engine, no HTTP

Token ids in, token ids and log-probs out; the HTTP and Engine transports share one request
builder. Facts it relies on (SGLang 0.5.23, docs/design.md, "Engines", re-checked by tests/test_sglang_backend.py):
- Log-probs come as ``[logprob, token_id, text]``. The first input log-prob at
  ``logprob_start_len`` is always None, so scoring a continuation that starts at position ``p``
  asks ``logprob_start_len = p - 1``; the radix cache is reused only up to that position
  (``meta_info.cached_tokens`` reports the hits; they go to ``stats.cached_tokens``).
- Returned sample log-probs are computed after temperature scaling unless the server runs with
  ``SGLANG_RETURN_ORIGINAL_LOGPROB=1``, which our launchers always set. For a server started
  elsewhere, ``logprobs="auto"`` probes once and, if it scales, re-scores sampled tokens with a
  (prefix-cached) prefill, so ``Sample.logprobs`` is always the unmodified distribution.
- ``n > 1`` with ``sampling_params.n``: SGLang prefills the prompt once (a warm-up request)
  then decodes the copies. Per-request seeds (``sampling_seed``) are honoured only by servers
  with ``--enable-deterministic-inference``, which rejects the ``torch_native`` attention
  backend, i.e. never on the CPU path: there ``seed`` is ignored with a one-time warning.
  On a deterministic server each copy gets its own seed (duplicated requests after a prefix
  warm-up, so still one prefill).
- Requests of one ``score`` call that share a prefix are preceded by one warm-up prefill of that
  prefix, so the K candidates of a state cost one prefix prefill, not K.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttsearch.agents.base import EngineStats, Sample, SamplingParams, ScoreRequest, TokenScores
from ttsearch.agents.engines.sglang.server import ServerConfig, ServerHandle, SGLangServer
from ttsearch.agents.engines.sglang.transport import (
    EngineTransport,
    HTTPTransport,
    check_ids,
    read_eos_token_ids,
    read_vocab_size,
)
from ttsearch.envs.errors import BackendError, ConfigError, unknown_choice

LOGPROB_MODES = ("auto", "server", "rescore")
_MASK64 = (1 << 63) - 1


def _seed_for(seed: int, prompt: int, copy: int) -> int:
    """A distinct, reproducible 63-bit seed for copy ``copy`` of prompt ``prompt`` (splitmix64)."""
    x = (seed * 0x9E3779B97F4A7C15 + prompt * 0xBF58476D1CE4E5B9 + copy + 1) & ((1 << 64) - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (x ^ (x >> 31)) & _MASK64


class SGLangBackend:
    """One model (or one LoRA adapter) on an SGLang server or in-process engine."""

    def __init__(
        self,
        target: str | ServerHandle,
        *,
        name: str | None = None,
        lora: str | None = None,
        eos_token_ids: Sequence[int] | None = None,
        vocab_size: int | None = None,
        logprobs: str = "auto",
        timeout_s: float = 300.0,
        retries: int = 2,
        _transport: Any = None,
        _owns: bool = False,
    ):
        if logprobs not in LOGPROB_MODES:
            raise ConfigError(unknown_choice("logprobs mode", logprobs, LOGPROB_MODES))
        if _transport is None:
            handle = SGLangServer.connect(target) if isinstance(target, str) else target
            _transport = HTTPTransport(handle, timeout_s, retries)
            # our server launcher sets SGLANG_RETURN_ORIGINAL_LOGPROB=1; anything else is probed
            if logprobs == "auto" and isinstance(handle, SGLangServer):
                logprobs = "server"
        self._transport = _transport
        self._owns = _owns
        self.lora = lora
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()
        self.name = name or (f"sglang:{lora}" if lora else "sglang")
        info = _transport.server_info()
        self.seeded = bool(info.get("enable_deterministic_inference", False))
        self._warned_seed = False
        path = _transport.model_path()
        local = bool(path) and Path(path).is_dir()
        # An out-of-range id crashes the whole SGLang server (IndexError in the embedding), so
        # ids are checked here when the vocabulary is known.
        self.vocab_size = (
            vocab_size if vocab_size is not None else (read_vocab_size(path) if local else None)
        )
        if eos_token_ids is None:
            if not local:
                raise BackendError(
                    f"{self.name}: cannot read EOS ids: the served model {path!r} is not a local "
                    "folder here; pass eos_token_ids=(...)"
                )
            eos_token_ids = read_eos_token_ids(path)
        self._eos = tuple(int(t) for t in eos_token_ids)
        self._rescore = logprobs == "rescore" or (logprobs == "auto" and self._scales_logprobs())

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def launch(
        cls, model_path: str | Path, *, run_dir: str | Path, name: str = "sglang", **config: Any
    ) -> SGLangBackend:
        """Start an ``sglang.launch_server`` for ``model_path`` owned by this backend."""
        server = SGLangServer(
            ServerConfig(model_path=model_path, **config), run_dir=run_dir, name=name
        )
        try:
            return cls(server, name=name, _owns=True)
        except BaseException:
            server.stop()
            raise

    @classmethod
    def in_process(cls, model_path: str | Path, *, name: str = "sglang-engine", **engine_args: Any):
        """An in-process ``sglang.Engine`` (no HTTP) with the same launch defaults as the server."""

        return cls(
            model_path,
            name=name,
            _transport=EngineTransport.start(model_path, **engine_args),
            _owns=True,
            logprobs="server",
        )

    def close(self) -> None:
        """Stop the server/engine this backend started (nothing for a connected URL)."""
        if self._owns:
            self._owns = False
            self._transport.close()

    def __enter__(self) -> SGLangBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def server(self) -> ServerHandle | None:
        return getattr(self._transport, "handle", None)

    # -- protocol properties ---------------------------------------------------------------
    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    @property
    def supports_top_logprobs(self) -> bool:
        return True

    @property
    def has_prefix_cache(self) -> bool:
        return True

    @property
    def supports_full_logprobs(self) -> bool:
        """False: SGLang returns top-k log-probs per position, never the whole row."""
        return False

    def _refuse_full_rows(self) -> None:
        raise BackendError(f"{self.name}: SGLang returns top-k log-probs only, not whole log-prob rows "
                           "(full_logprobs); an exact per-token KL needs the embedded engine "
                           "(engine: {kind: transformers})")

    def clear_cache(self) -> None:
        """Flush the server's radix cache (SGLang refuses while requests are running)."""
        self._transport.flush_cache()

    # -- requests --------------------------------------------------------------------------
    def _send(
        self,
        input_ids: list[list[int]],
        sampling: dict | list[dict],
        *,
        logprob_start: list[int] | int | None,
        cost: EngineStats,
        top: list[int] | int = 0,
    ) -> list[dict]:
        """The one request builder (HTTP JSON body == Engine.generate kwargs)."""
        check_ids(self.name, input_ids, self.vocab_size)
        payload: dict[str, Any] = {"input_ids": input_ids, "sampling_params": sampling}
        if logprob_start is not None:
            payload.update(
                return_logprob=True, logprob_start_len=logprob_start, top_logprobs_num=top
            )
        if self.lora is not None:
            payload["lora_path"] = [self.lora] * len(input_ids)
        out = self._transport.generate(payload)
        out = out if isinstance(out, list) else [out]
        for item in out:
            meta = item.get("meta_info", {})
            reason = meta.get("finish_reason") or {}
            if isinstance(reason, dict) and reason.get("type") == "abort":
                raise BackendError(
                    f"{self.name}: SGLang aborted a request: {reason.get('message', reason)}"
                )
            prompt = int(meta.get("prompt_tokens", 0))
            cached = int(meta.get("cached_tokens", 0))
            cost.cached_tokens += cached
            cost.computed_tokens += prompt - cached + int(meta.get("completion_tokens", 0))
        return out

    def _charge(self, cost: EngineStats, meter: EngineStats | None) -> None:
        """Add a call's cost to ``stats`` and to the caller's meter (calls may come from many
        threads at once: SGLang batches concurrent requests itself)."""
        with self._stats_lock:
            self.stats.add(cost)
            if meter is not None:
                meter.add(cost)

    def _warm(self, prefixes: list[tuple[int, ...]], cost: EngineStats) -> None:
        """Prefill each prefix once (no output) so the requests that share it hit the cache."""
        if prefixes:
            self._send([list(p) for p in prefixes], {"max_new_tokens": 0}, logprob_start=None, cost=cost)

    # -- sampling --------------------------------------------------------------------------
    def sample(
        self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams,
        stats: EngineStats | None = None,
    ) -> list[list[Sample]]:
        if n < 1:
            raise BackendError(f"n must be >= 1, got {n}")
        if params.full_logprobs:
            self._refuse_full_rows()
        prompts = [[int(t) for t in p] for p in prompts]
        if not prompts:
            return []
        if any(not p for p in prompts):
            raise BackendError(
                "sample() got an empty prompt; render the state with PromptRenderer first"
            )
        base = {
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k if params.top_k else -1,
            "stop_token_ids": sorted({*params.stop_token_ids, *self._eos}),
        }
        seeded = params.seed is not None and self.seeded
        if params.seed is not None and not self.seeded and not self._warned_seed:
            self._warned_seed = True
            warnings.warn(
                f"{self.name}: this SGLang server ignores per-request seeds (it needs "
                "--enable-deterministic-inference, unavailable with torch_native attention); "
                "samples are not reproducible",
                RuntimeWarning,
                stacklevel=2,
            )
        cost = EngineStats(calls=1)
        if seeded:  # every copy its own seed: duplicated requests after one prefix prefill
            if n > 1 or len(set(map(tuple, prompts))) < len(prompts):
                self._warm(list(dict.fromkeys(map(tuple, prompts))), cost)
            ids = [p for p in prompts for _ in range(n)]
            sampling = [
                {**base, "sampling_seed": _seed_for(params.seed, i, j)}
                for i in range(len(prompts))
                for j in range(n)
            ]
        else:  # SGLang's parallel sampling: outputs come grouped by prompt, n per prompt
            ids, sampling = prompts, {**base, "n": n} if n > 1 else base
        # -1: output log-probs only (SGLang rejects a per-prompt list together with n > 1);
        # it does not limit prefix-cache reuse.
        out = self._send(ids, sampling, logprob_start=-1, cost=cost, top=params.top_logprobs)
        if len(out) != len(prompts) * n:
            raise BackendError(f"{self.name}: expected {len(prompts) * n} outputs, got {len(out)}")
        samples = [self._to_sample(item, params.top_logprobs) for item in out]
        transformed = params.temperature not in (0.0, 1.0) or params.top_p < 1.0 or params.top_k
        if self._rescore and transformed:
            samples = self._rescored(prompts, n, samples, params.top_logprobs, cost)
        cost.prompt_tokens += n * sum(map(len, prompts))
        cost.generated_tokens += sum(len(s.token_ids) for s in samples)
        self._charge(cost, stats)
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _to_sample(self, item: dict, k: int) -> Sample:
        meta = item["meta_info"]
        tokens = tuple(int(t) for t in item["output_ids"])
        entries = meta.get("output_token_logprobs") or []
        if len(entries) != len(tokens) or any(e[0] is None for e in entries):
            raise BackendError(
                f"{self.name}: SGLang returned {len(entries)} log-probs for {len(tokens)} tokens"
            )
        top = None
        if k:
            top = tuple(tuple(float(e[0]) for e in pos[:k]) for pos in meta["output_top_logprobs"])
        reason = meta.get("finish_reason") or {}
        return Sample(
            token_ids=tokens,
            logprobs=tuple(float(e[0]) for e in entries),
            top_logprobs=top,
            finish_reason="stop" if reason.get("type") == "stop" else "length",
        )

    def _rescored(self, prompts, n, samples: list[Sample], k: int, cost: EngineStats) -> list[Sample]:
        requests = [
            ScoreRequest(tuple(prompts[i // n]), s.token_ids, k) for i, s in enumerate(samples)
        ]
        scores = self._score(requests, cost=cost, count=False)
        return [
            Sample(s.token_ids, sc.logprobs, sc.top_logprobs, s.finish_reason)
            for s, sc in zip(samples, scores, strict=True)
        ]

    def _scales_logprobs(self) -> bool:
        """Probe: does the server return temperature-scaled sample log-probs?"""
        prompt = [self._eos[0] if self._eos else 0] * 2
        probe = {"max_new_tokens": 1, "temperature": 0.5}
        (sample,) = self._send([prompt], probe, logprob_start=-1, cost=self.stats)
        token = int(sample["output_ids"][0])
        scored = self._score([ScoreRequest(tuple(prompt), (token,))], cost=self.stats, count=False)[0].logprobs[0]
        return abs(float(sample["meta_info"]["output_token_logprobs"][0][0]) - scored) > 1e-4

    # -- scoring ---------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest], *, stats: EngineStats | None = None) -> list[TokenScores]:
        cost = EngineStats(calls=1)
        out = self._score(requests, cost=cost, count=True)
        self._charge(cost, stats)
        return out

    def _score(self, requests: Sequence[ScoreRequest], *, cost: EngineStats, count: bool) -> list[TokenScores]:
        if any(req.full_logprobs for req in requests):
            self._refuse_full_rows()
        results: list[TokenScores | None] = [None] * len(requests)
        active = []
        for i, req in enumerate(requests):
            if not req.continuation_ids:
                results[i] = TokenScores((), () if req.top_logprobs else None)
            elif not req.prefix_ids:
                raise BackendError(
                    "score() needs a non-empty prefix: the first token has no context"
                )
            else:
                active.append(i)
        if not active:
            return results  # type: ignore[return-value]
        prefixes = [tuple(int(t) for t in requests[i].prefix_ids) for i in active]
        seen: dict[tuple[int, ...], int] = {}
        for p in prefixes:
            seen[p] = seen.get(p, 0) + 1
        self._warm([p for p, c in seen.items() if c > 1 and len(p) > 1], cost)
        ids = [
            list(p) + [int(t) for t in requests[i].continuation_ids]
            for p, i in zip(prefixes, active, strict=True)
        ]
        tops = [requests[i].top_logprobs for i in active]
        out = self._send(
            ids, {"max_new_tokens": 0}, logprob_start=[len(p) - 1 for p in prefixes], cost=cost, top=tops
        )
        for slot, item, req in zip(active, out, (requests[i] for i in active), strict=True):
            meta = item["meta_info"]
            entries = meta["input_token_logprobs"][1:]  # entry 0 is the prefix's last token: None
            if len(entries) != len(req.continuation_ids) or any(e[0] is None for e in entries):
                raise BackendError(
                    f"{self.name}: SGLang returned {len(entries)} log-probs for "
                    f"{len(req.continuation_ids)} continuation tokens"
                )
            top = None
            if req.top_logprobs:
                top = tuple(
                    tuple(float(e[0]) for e in pos[: req.top_logprobs])
                    for pos in meta["input_top_logprobs"][1:]
                )
            results[slot] = TokenScores(tuple(float(e[0]) for e in entries), top)
        if count:
            cost.prompt_tokens += sum(map(len, prefixes))
            cost.scored_tokens += sum(len(requests[i].continuation_ids) for i in active)
        return results  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"SGLangBackend(name={self.name!r}, lora={self.lora!r})"
