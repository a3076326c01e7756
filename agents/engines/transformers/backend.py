"""The embedded engine: a Hugging Face causal LM behind the :class:`Backend` protocol, prefix-cached.

    backend = TransformersBackend("runs/pair/policy", cache_bytes=512 << 20)   # 0: no cache
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=0, top_logprobs=5)
    samples = backend.sample([prompt_a, prompt_b], n=4, params=params)   # 2 lists of 4 Samples
    scores = backend.score([ScoreRequest(prompt_a, s.token_ids) for s in samples[0]])
    backend.last_call.cached_tokens, backend.stats.computed_tokens        # this call / cumulative

A radix tree over token ids (``radix_cache.py``) holds every layer's keys and values of the
prompts seen so far (and, with ``cache_generated``, of the continuation tokens that were fed),
plus the last-position logits of each stored prompt. A call (``packed_rows.py``):

1. takes each distinct prompt's longest cached prefix (a whole prompt only together with its
   stored logits, else its last token is run again) and locks it for the call;
2. runs all uncached prompt tails in one forward and stores them;
3. ``score`` (``scoring.py``): runs every distinct continuation as a branch of its prompt's row
   in one more forward, K candidates against their one shared prefix; ``sample``
   (``decoding.py``): decodes the n samples of each prompt together, one forward per step, one
   slot per live sample;
4. unlocks, and evicts least-recently-used unlocked leaves down to ``cache_bytes``.

Cached prefixes are read in place, never copied (``attention.py``). Log-probs equal a plain full
forward to float rounding (float32: ~1e-6) whatever the tree holds. ``stats`` (cumulative) and
``last_call`` count calls, prompt, cached and computed tokens, evictions, and the bytes held; a
call's ``stats=`` meter gets that call's own cost (what an episode's budget ledger reads when
many episodes share the engine). ``sample_batch``/``score_batch`` serve several calls at once:
the batching layer (``ttsearch.agents.engines.batching``) uses them.

Sampling randomness is counter-based (``token_sampling.py``): sample ``j`` of prompt ``i``
draws its uniforms from a hash of (seed, i, j, step), so results depend on the seed and the
position in the call, not on the rest of the batch or on what the cache holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttsearch.agents.base import EngineStats, Sample, SamplingParams, ScoreRequest, TokenScores
from ttsearch.agents.checkpoints.lora import (
    check_model_folder,
    is_adapter_folder,
    load_adapter_model,
)
from ttsearch.agents.engines.transformers.calls import CallChecker, SampleCall
from ttsearch.agents.engines.transformers.decoding import decode
from ttsearch.agents.engines.transformers.packed_rows import (
    IN_PLACE_MIN_TOKENS,
    KV_TOKEN_AXIS,
    PackedRunner,
)
from ttsearch.agents.engines.transformers.radix_cache import RadixCache
from ttsearch.agents.engines.transformers.scoring import score_calls
from ttsearch.envs.errors import BackendError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_CACHE_BYTES = 512 << 20


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept a torch dtype or its name ("float32", "bfloat16", "float16")."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


class TransformersBackend:
    """A causal LM served in-process (CPU or GPU) with a radix prefix cache.

    ``cache_bytes``: the tree's budget (keys, values and stored logits); 0 disables the cache.
    ``cache_generated``: also keep the KV of continuation tokens that were fed (sampled tokens
    but the last, scored candidates but the last), so a next prompt that extends one of them
    reuses it. ``in_place_min_tokens``: cached pieces this long are read in place, shorter ones
    copied (``packed_rows.IN_PLACE_MIN_TOKENS``). See the module docstring.
    """

    def __init__(
        self,
        model_path_or_model: str | Path | Any,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        name: str | None = None,
        tokenizer: Any = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        cache_generated: bool = True,
        in_place_min_tokens: int = IN_PLACE_MIN_TOKENS,
    ):
        if cache_bytes < 0:
            raise BackendError(
                f"cache_bytes must be >= 0 (0 disables the cache), got {cache_bytes}"
            )
        dtype = resolve_dtype(dtype)
        if isinstance(model_path_or_model, (str, Path)):
            path = check_model_folder(model_path_or_model)

            try:
                if is_adapter_folder(path):  # a LoRA policy: its base model + the adapter, merged
                    model = load_adapter_model(path, dtype=dtype or torch.float32)
                else:
                    model = AutoModelForCausalLM.from_pretrained(
                        path, dtype=dtype or torch.float32, attn_implementation="sdpa"
                    )
            except BackendError:
                raise
            except Exception as err:  # a broken folder: say which and why, in one line
                raise BackendError(
                    f"could not load the model at {path}: {err}".splitlines()[0]
                ) from err
            model.to(device or "cpu")
            if tokenizer is None and (path / "tokenizer_config.json").is_file():

                tokenizer = AutoTokenizer.from_pretrained(path)
            self.path: Path | None = path
            default_name = path.name
        else:
            model = model_path_or_model
            if device is not None or dtype is not None:
                model.to(device=device, dtype=dtype)
            self.path = None
            default_name = type(model).__name__
        config = model.config
        layer_types = getattr(config, "layer_types", None) or ()
        if getattr(config, "use_sliding_window", False) or "sliding_attention" in layer_types:
            raise BackendError(
                f"{default_name}: sliding-window attention is not supported by TransformersBackend; "
                "serve this model with SGLangBackend"
            )
        unsupported = sorted({t for t in layer_types if t != "full_attention"})
        if unsupported:
            raise BackendError(
                f"{default_name}: layer types {', '.join(unsupported)} are not supported by "
                "TransformersBackend (full attention only); serve this model with SGLangBackend"
            )
        model.eval()  # inference only: dropout off, results deterministic
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or default_name
        self.stats = EngineStats()
        self.last_call = EngineStats()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.max_positions = int(getattr(config, "max_position_embeddings", 0) or 0)
        self.checker = CallChecker(self.name, self.max_positions)
        self._eos = self._collect_eos(model, tokenizer)
        cache = (
            RadixCache(budget_bytes=cache_bytes, token_axis=KV_TOKEN_AXIS) if cache_bytes else None
        )
        self.runner = PackedRunner(model, cache=cache, cache_generated=cache_generated,
                                   in_place_min_tokens=in_place_min_tokens)
        self._evictions_seen = 0

    # -- protocol properties -------------------------------------------------------------
    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    @property
    def supports_top_logprobs(self) -> bool:
        return True

    @property
    def has_prefix_cache(self) -> bool:
        return self.cache is not None

    @property
    def supports_full_logprobs(self) -> bool:
        return True

    @property
    def cache(self) -> RadixCache | None:
        """The prefix tree (None when ``cache_bytes=0``)."""
        return self.runner.cache

    def set_cache_bytes(self, budget: int) -> None:
        """Resize the prefix tree's budget (evicting down to it); 0 drops the cache. Long
        multi-turn prompts need room: SmolLM2-135M's keys and values take 46 KB a token in
        float32, so the default 512 MiB holds about 11k tokens (two of BFCL's tool lists)."""
        if budget < 0:
            raise BackendError(f"cache_bytes must be >= 0 (0 disables the cache), got {budget}")
        if not budget:
            self.runner.cache = None
        elif self.cache is None:
            self.runner.cache = RadixCache(budget_bytes=budget, token_axis=KV_TOKEN_AXIS)
        else:
            self.cache.budget_bytes = int(budget)
            self.cache.evict()

    def clear_cache(self) -> None:
        """Drop every cached prefix (not counted as evictions)."""
        if self.cache is not None:
            self.runner.cache = RadixCache(
                budget_bytes=self.cache.budget_bytes, token_axis=KV_TOKEN_AXIS
            )
            self.stats.cache_bytes, self._evictions_seen = 0, 0

    @staticmethod
    def _collect_eos(model: Any, tokenizer: Any) -> tuple[int, ...]:
        found: list[int] = []
        gen = getattr(model, "generation_config", None)
        for source in (
            getattr(gen, "eos_token_id", None),
            model.config.eos_token_id,
            getattr(tokenizer, "eos_token_id", None),
        ):
            for tid in [source] if isinstance(source, int) else (source or ()):
                if tid is not None and tid not in found:
                    found.append(int(tid))
        return tuple(found)

    def _account(self, costs: Sequence[EngineStats], meters: Sequence[EngineStats | None]) -> None:
        """Add each call's cost to its meter and all of them to ``stats``; set ``last_call``."""
        total = EngineStats()
        for cost, meter in zip(costs, meters, strict=True):
            total.add(cost)
            if meter is not None:
                meter.add(cost)
        if self.cache is not None:
            total.evictions = self.cache.evictions - self._evictions_seen
            self._evictions_seen = self.cache.evictions
        self.stats.add(total)
        if self.cache is not None:
            self.stats.cache_bytes = self.cache.bytes
        total.cache_bytes = self.stats.cache_bytes
        self.last_call = total

    # -- sampling ------------------------------------------------------------------------
    def sample(self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams,
               stats: EngineStats | None = None) -> list[list[Sample]]:
        return self.sample_batch([self.check_sample(prompts, n=n, params=params)], [stats])[0]

    def check_sample(self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams) -> SampleCall:
        """A ``sample`` call's arguments, checked (one-line BackendError) and normalised."""
        return self.checker.check_sample(prompts, n=n, params=params)

    def request_checker(self) -> CallChecker:
        """What checks this engine's calls, without the model (a batching layer checks with it)."""
        return self.checker

    def sample_batch(self, calls: Sequence[SampleCall], meters: Sequence[EngineStats | None]
                     ) -> list[list[list[Sample]]]:
        """Several checked ``sample`` calls decoded together (``decoding.py``); each call's cost
        goes to its meter. What the batching layer sends when many episodes are in flight."""
        live = [c for c, call in enumerate(calls) if call.prompts]
        out: list[list[list[Sample]]] = [[] for _ in calls]
        costs = [EngineStats(calls=1) for _ in calls]
        if live:
            with torch.inference_mode():
                samples, live_costs = decode(self.runner, [calls[c] for c in live], eos=self._eos,
                                             vocab_size=self.vocab_size)
            for c, got, cost in zip(live, samples, live_costs, strict=True):
                out[c], costs[c] = got, cost
        self._account(costs, meters)
        return out

    # -- scoring -------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest], *, stats: EngineStats | None = None) -> list[TokenScores]:
        return self.score_batch([self.check_score(requests)], [stats])[0]

    def check_score(self, requests: Sequence[ScoreRequest]) -> list[ScoreRequest]:
        """A ``score`` call's requests, checked (one-line BackendError) and normalised to tuples."""
        return self.checker.check_score(requests)

    def score_batch(self, calls: Sequence[Sequence[ScoreRequest]], meters: Sequence[EngineStats | None]
                    ) -> list[list[TokenScores]]:
        """Several checked ``score`` calls in one pass (``scoring.py``); each call's cost goes to
        its meter."""
        with torch.inference_mode():
            results, costs = score_calls(self.runner, calls, vocab_size=self.vocab_size)
        self._account(costs, meters)
        return results

    def __repr__(self) -> str:
        cache = f", cache={self.cache.budget_bytes}B" if self.cache is not None else ""
        return f"TransformersBackend(name={self.name!r}, device={self.device}, dtype={self.dtype}{cache})"
