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
3. ``score``: runs every distinct continuation as a branch of its prompt's row in one more
   forward, K candidates against one copy of their prefix; ``sample``: decodes the n samples
   of each prompt together, one forward per step, one slot per live sample;
4. unlocks, and evicts least-recently-used unlocked leaves down to ``cache_bytes``.

Log-probs equal a plain full forward (float32, ~1e-6) whatever the tree holds, and repeating a
call gives bit-identical results. ``stats`` (cumulative, what the search ledger reads) and
``last_call`` count prompt, cached and computed tokens, evictions, and the bytes held.

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
from ttsearch.agents.engines.transformers.packed_rows import KV_TOKEN_AXIS, PackedRunner
from ttsearch.agents.engines.transformers.radix_cache import RadixCache
from ttsearch.agents.engines.transformers.token_sampling import (
    choose_tokens,
    stream_keys,
    token_logprobs,
)
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


def _as_ids(seqs: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Token sequences as tuples of Python ints; a sequence object repeated in a batch (one
    prefix shared by K requests) is converted once."""
    seen: dict[int, tuple[int, ...]] = {}
    out = []
    for seq in seqs:
        ids = seen.get(id(seq))
        if ids is None:
            ids = seen[id(seq)] = tuple(map(int, seq))
        out.append(ids)
    return out


class TransformersBackend:
    """A causal LM served in-process (CPU or GPU) with a radix prefix cache.

    ``cache_bytes``: the tree's budget (keys, values and stored logits); 0 disables the cache.
    ``cache_generated``: also keep the KV of continuation tokens that were fed (sampled tokens
    but the last, scored candidates but the last), so a next prompt that extends one of them
    reuses it. See the module docstring.
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
        if getattr(config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
            # flash-attention kernels ignore the explicit 4-D masks every forward here relies on
            model.set_attn_implementation("sdpa")
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
        self._eos = self._collect_eos(model, tokenizer)
        cache = (
            RadixCache(budget_bytes=cache_bytes, token_axis=KV_TOKEN_AXIS) if cache_bytes else None
        )
        self.runner = PackedRunner(model, cache=cache, cache_generated=cache_generated)
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
    def cache(self) -> RadixCache | None:
        """The prefix tree (None when ``cache_bytes=0``)."""
        return self.runner.cache

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

    def _check_length(self, length: int, what: str) -> None:
        if self.max_positions and length > self.max_positions:
            raise BackendError(
                f"{self.name}: {what} needs {length} positions but the model has "
                f"max_position_embeddings={self.max_positions}; shorten the prompt "
                "(PromptConfig.max_history_turns) or lower max_new_tokens"
            )

    def _release(self, matches: list) -> None:
        self.runner.release(matches)

    def _finish_call(self, before: EngineStats) -> None:
        self.stats.calls += 1
        if self.cache is not None:
            self.stats.cache_bytes = self.cache.bytes
            self.stats.evictions += self.cache.evictions - self._evictions_seen
            self._evictions_seen = self.cache.evictions
        self.last_call = self.stats.minus(before)

    # -- sampling ------------------------------------------------------------------------
    def sample(
        self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams
    ) -> list[list[Sample]]:
        if n < 1:
            raise BackendError(f"n must be >= 1, got {n}")
        prompts = _as_ids(prompts)
        if not prompts:
            return []
        if any(not p for p in prompts):
            raise BackendError(
                "sample() got an empty prompt; render the state with PromptRenderer first"
            )
        self._check_length(
            max(map(len, prompts)) + params.max_new_tokens, "prompt + max_new_tokens"
        )
        with torch.inference_mode():
            return self._sample(prompts, n, params)

    def _sample(
        self, prompts: list[tuple[int, ...]], n: int, params: SamplingParams
    ) -> list[list[Sample]]:
        before, dev = self.stats.snapshot(), self.device
        unique = list(dict.fromkeys(prompts))
        where = {p: r for r, p in enumerate(unique)}
        prow = [where[p] for p in prompts]
        total, steps = len(prompts) * n, params.max_new_tokens
        # Internal order groups each row's samples (global index g = i * n + j); branch ids
        # number the samples within their row.
        order = sorted(range(total), key=lambda g: (prow[g // n], g))
        row_list, branch_list, seen = [prow[g // n] for g in order], [], [0] * len(unique)
        for r in row_list:
            seen[r] += 1
            branch_list.append(seen[r])
        rows, matches, last, _ = self.runner.open(
            unique, [[] for _ in unique], (steps - 1) * max(seen)
        )
        try:
            row_of = torch.tensor(row_list, device=dev)
            branch_of = torch.tensor(branch_list, device=dev)
            plen = torch.tensor([len(p) for p in unique], device=dev)
            logits = last[row_of]
            seed = (
                params.seed
                if params.seed is not None
                else int(torch.randint(0, 2**62, (1,)).item())
            )
            keys = torch.tensor(stream_keys(seed, len(prompts), n), dtype=torch.long, device=dev)
            keys = keys[torch.tensor(order, device=dev)]
            stop_ids = torch.tensor(
                sorted({*params.stop_token_ids, *self._eos}), dtype=torch.long, device=dev
            )
            k = min(params.top_logprobs, self.vocab_size)
            tokens = torch.zeros(total, steps, dtype=torch.long, device=dev)
            logprobs = torch.zeros(total, steps, dtype=torch.float32, device=dev)
            tops = torch.zeros(total, steps, k, dtype=torch.float32, device=dev) if k else None
            lengths = torch.zeros(total, dtype=torch.long, device=dev)
            stopped = torch.zeros(total, dtype=torch.bool, device=dev)
            slots = torch.zeros(
                total, steps, dtype=torch.long, device=dev
            )  # where each fed token sits
            alive = torch.arange(total, device=dev)
            computed = sum(len(p) - c for p, c in zip(unique, rows.cached, strict=True))
            for step in range(steps):
                logits = logits.float()
                logp = logits.log_softmax(-1)  # the model's own distribution, whatever the sampling
                chosen = choose_tokens(logits, params, keys[alive], step)
                tokens[alive, step] = chosen
                logprobs[alive, step] = logp.gather(1, chosen[:, None])[:, 0]
                if tops is not None:
                    tops[alive, step] = logp.topk(k, dim=-1).values
                lengths[alive] = step + 1
                hit = torch.isin(chosen, stop_ids)
                stopped[alive[hit]] = True
                keep = ~hit
                if step + 1 == steps or not bool(keep.any()):
                    break
                if not bool(keep.all()):
                    kept = keep.nonzero()[:, 0]
                    alive, chosen = alive[kept], chosen[kept]
                # each live sample gets one slot in its row: column = its rank within the row
                r_a = row_of[alive]
                counts = torch.bincount(r_a, minlength=len(unique))
                cols = torch.arange(len(alive), device=dev) - (counts.cumsum(0) - counts)[r_a]
                shape = (len(unique), int(counts.max()))
                ids, ok = (
                    torch.zeros(shape, dtype=torch.long, device=dev),
                    torch.zeros(shape, dtype=torch.bool, device=dev),
                )
                at, br = torch.zeros_like(ids), torch.zeros_like(ids)
                ids[r_a, cols], ok[r_a, cols] = chosen, True
                at[r_a, cols], br[r_a, cols] = plen[r_a] + step, branch_of[alive]
                slots[alive, step] = rows.length + cols
                logits = self.runner.extend(rows, ids, ok, at, br)[r_a, cols]
                computed += len(alive)
            token_rows, lp_rows, length_list = tokens.tolist(), logprobs.tolist(), lengths.tolist()
            top_rows = tops.tolist() if tops is not None else None
            stop_list, slot_rows = stopped.tolist(), slots.tolist()
            conts: list[list] = [[] for _ in unique]
            for u, r in enumerate(row_list):  # fed tokens: all but the last
                m = length_list[u] - 1
                conts[r].append((tuple(token_rows[u][:m]), slot_rows[u][:m]))
            self.runner.insert_continuations(rows, unique, conts)
        finally:
            self._release(matches)
        inverse = {g: u for u, g in enumerate(order)}
        out: list[list[Sample]] = []
        for i in range(len(prompts)):
            group = []
            for j in range(n):
                u = inverse[i * n + j]
                m = length_list[u]
                group.append(
                    Sample(
                        token_ids=tuple(token_rows[u][:m]),
                        logprobs=tuple(lp_rows[u][:m]),
                        top_logprobs=tuple(map(tuple, top_rows[u][:m]))
                        if top_rows is not None
                        else None,
                        finish_reason="stop" if stop_list[u] else "length",
                    )
                )
            out.append(group)
        prompt_total = n * sum(map(len, prompts))
        prefilled = sum(len(p) - c for p, c in zip(unique, rows.cached, strict=True))
        self.stats.prompt_tokens += prompt_total
        self.stats.cached_tokens += prompt_total - prefilled
        self.stats.computed_tokens += computed
        self.stats.generated_tokens += sum(length_list)
        self._finish_call(before)
        return out

    # -- scoring -------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenScores]:
        results: list[TokenScores | None] = [None] * len(requests)
        active: list[int] = []
        for i, req in enumerate(requests):
            if not req.continuation_ids:
                results[i] = TokenScores((), () if req.top_logprobs else None)
            elif not req.prefix_ids:
                raise BackendError(
                    "score() needs a non-empty prefix: the first token has no context"
                )
            else:
                self._check_length(
                    len(req.prefix_ids) + len(req.continuation_ids), "prefix + continuation"
                )
                active.append(i)
        before = self.stats.snapshot()
        if active:
            with torch.inference_mode():
                self._score([requests[i] for i in active], active, results)
        self._finish_call(before)
        return results  # type: ignore[return-value]

    def _score(self, reqs: list[ScoreRequest], slots: list[int], results: list) -> None:
        prefixes = _as_ids([r.prefix_ids for r in reqs])
        conts = _as_ids([r.continuation_ids for r in reqs])
        unique = list(dict.fromkeys(prefixes))
        where = {p: i for i, p in enumerate(unique)}
        # Each distinct (prefix, continuation) is one branch of its prefix's row; its tokens but
        # the last are fed, all in one forward.
        pairs = list(dict.fromkeys(zip(prefixes, conts, strict=True)))
        feeds: list[list] = [[] for _ in unique]
        place, offset = {}, [0] * len(unique)
        for pair in pairs:
            r, c = where[pair[0]], pair[1]
            place[pair] = (r, offset[r])
            feeds[r].append((len(feeds[r]) + 1, c[:-1]))
            offset[r] += len(c) - 1
        rows, matches, last, fed_logits = self.runner.open(unique, feeds, 0)
        try:
            logits = (
                last[:, None]
                if fed_logits is None
                else torch.cat([last[:, None].to(fed_logits.dtype), fed_logits], 1)
            )
            # kept column 0 predicts a continuation's first token; 1 + offset + t its token t + 1
            row_idx, col_idx, targets = [], [], []
            for pair in pairs:
                (r, off), c = place[pair], pair[1]
                row_idx += [r] * len(c)
                col_idx += [0, *range(1 + off, off + len(c))]
                targets += c
            kmax = min(max(r.top_logprobs for r in reqs), self.vocab_size)
            picked = logits[
                torch.tensor(row_idx, device=self.device), torch.tensor(col_idx, device=self.device)
            ]
            lp, top = token_logprobs(
                picked.float(), torch.tensor(targets, device=self.device), kmax
            )
            lp_list, top_list = lp.tolist(), top.tolist() if kmax else None
            base = rows.width
            remembered: list[list] = [[] for _ in unique]
            for pair in pairs:
                (r, off), c = place[pair], pair[1]
                remembered[r].append((c[:-1], [base + off + t for t in range(len(c) - 1)]))
            self.runner.insert_continuations(rows, unique, remembered)
        finally:
            self._release(matches)
        found, at = {}, 0
        for pair in pairs:
            found[pair] = (at, at + len(pair[1]))
            at += len(pair[1])
        for slot, req, p, c in zip(slots, reqs, prefixes, conts, strict=True):
            a, b = found[(p, c)]
            top = None
            if req.top_logprobs:
                top = tuple(tuple(v[: req.top_logprobs]) for v in top_list[a:b])
            results[slot] = TokenScores(tuple(lp_list[a:b]), top)
        prompt_total = sum(map(len, prefixes))
        prefilled = sum(len(p) - c for p, c in zip(unique, rows.cached, strict=True))
        self.stats.prompt_tokens += prompt_total
        self.stats.cached_tokens += prompt_total - prefilled
        self.stats.computed_tokens += prefilled + sum(len(c) - 1 for _, c in pairs)
        self.stats.scored_tokens += sum(map(len, conts))

    def __repr__(self) -> str:
        cache = f", cache={self.cache.budget_bytes}B" if self.cache is not None else ""
        return f"TransformersBackend(name={self.name!r}, device={self.device}, dtype={self.dtype}{cache})"
