"""The embedded engine: a Hugging Face causal LM behind the :class:`Backend` protocol, prefix-cached.

    backend = TransformersBackend("runs/pair/policy", cache_bytes=512 << 20)   # 0 disables the cache
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=0, top_logprobs=5)
    samples = backend.sample([prompt_a, prompt_b], n=4, params=params)   # 2 lists of 4 Samples
    scores = backend.score([ScoreRequest(prompt_a, s.token_ids) for s in samples[0]])
    backend.last_call.cached_tokens, backend.stats.computed_tokens        # per call / cumulative

The prefix cache (``agents/radix_cache.py``) is a radix tree over token ids whose nodes hold
every layer's keys and values for their token span. A call:

1. looks up the longest cached prefix of each distinct prompt (at most ``len - 1`` tokens: the
   last prompt token is always run, its logits predict the first new token) and locks it;
2. copies those KV slices into one preallocated slot buffer per call (rows = distinct prompts);
3. runs only the rest, and every continuation, *packed into its prompt's row*: continuation j of
   a prompt is branch j of that row; a 4-D mask lets a token see the valid slots of its own
   branch and of the shared prompt (branch 0) up to its position, with explicit positions. So K
   candidates are scored in one forward against one copy of the shared prefix, and K samples
   decode together (one forward per step, one slot per live sample);
4. inserts the prompts (and, with ``cache_generated``, the fed continuation tokens) into the
   tree, unlocks, and evicts least-recently-used unlocked leaves down to ``cache_bytes``.

Every forward goes through :meth:`_extend`; a padded or branched slot gives the same numbers as
a plain full forward (~1e-6 in float32). With ``cache_bytes=0`` nothing persists across calls
(identical prompts within one call are still run once).

Sampling randomness is counter-based: sample ``j`` of prompt ``i`` draws its uniforms from a
hash of (seed, i, j, step), so results depend on the seed and the position in the call, not on
what else is in the batch, on which rows finished first, or on what the cache holds.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ttsearch.agents.base import EngineStats, Sample, SamplingParams, ScoreRequest, TokenScores
from ttsearch.agents.radix_cache import RadixCache
from ttsearch.envs.errors import BackendError

_M32 = 0xFFFFFFFF
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_CACHE_BYTES = 512 << 20
KV_TOKEN_AXIS = 3  # node payloads are [layers, 2 (keys, values), kv_heads, tokens, head_dim]


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept a torch dtype or its name ("float32", "bfloat16", "float16")."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def check_model_folder(path: str | Path) -> Path:
    """Raise a BackendError naming the fix unless ``path`` is a Hugging Face model folder."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise BackendError(
            f"no model at {path}: expected a Hugging Face folder with config.json; "
            "train one with `ttsearch pair train` or pass a folder written by save_pretrained"
        )
    return path


class _SlotLayer(DynamicLayer):
    """One layer's cache over a preallocated slot buffer: appends write in place, no regrowth.

    ``keep`` ([rows, q] bool, set around one forward) marks written columns whose slot already
    holds a cached token: those keep their cached keys/values.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self._k, self._v, self._n = keys, values, length  # [rows, kv_heads, capacity, head_dim]
        self.device, self.is_initialized = keys.device, True
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]
        self.keep: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, q = self._n, key_states.shape[-2]
        k_old, v_old = self._k[:, :, n : n + q], self._v[:, :, n : n + q]
        if self.keep is not None:
            keep = self.keep[:, None, :, None]
            key_states, value_states = (
                key_states.where(~keep, k_old),
                value_states.where(~keep, v_old),
            )
        k_old.copy_(key_states)
        v_old.copy_(value_states)
        self._n = n + q
        self.keys, self.values = self._k[:, :, : n + q], self._v[:, :, : n + q]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n


@dataclass(slots=True)
class _Rows:
    """One call's KV rows: the slot buffer, slots in use, and what each slot holds."""

    cache: Any  # a DynamicCache of _SlotLayers over ``buf``
    buf: torch.Tensor  # [layers, 2, rows, kv_heads, capacity, head_dim]
    length: int
    valid: torch.Tensor  # [rows, capacity] bool: the slot holds a real token
    pos: torch.Tensor  # [rows, capacity] long: its position
    branch: torch.Tensor  # [rows, capacity] long: 0 = the row's prompt, j = continuation j
    width: int  # every row's prompt is right-aligned to end at this slot
    cached: list[int]  # prompt tokens of each row taken from the tree


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 without int64 overflow: split x into 16-bit halves.
    return (((((x >> 16) * c) & _M32) << 16) + (x & 0xFFFF) * c) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _stream_keys(seed: int, prompts: int, n: int) -> list[int]:
    """One 32-bit random-stream key per (prompt i, sample j) row, derived from the seed."""
    base = _splitmix64(seed & 0xFFFFFFFFFFFFFFFF)
    return [
        _splitmix64(base ^ _splitmix64((i << 24) + j)) & _M32
        for i in range(prompts)
        for j in range(n)
    ]


def _uniform(keys: torch.Tensor, step: int) -> torch.Tensor:
    """Uniforms in [0, 1), a pure function of (row key, step): float64 [rows]."""
    step_key = _splitmix64(step + 0x5BD1E995) & _M32
    x = _fmix32(keys ^ step_key)
    x = _fmix32((x + keys) & _M32)
    return x.double() / 2.0**32


def choose_tokens(
    logits: torch.Tensor, params: SamplingParams, keys: torch.Tensor, step: int
) -> torch.Tensor:
    """Pick one token per row: argmax at temperature 0, else inverse-CDF sampling."""
    if params.temperature == 0:
        return logits.argmax(-1)
    scaled = logits / params.temperature
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = scaled.topk(params.top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(-1)
    order = None
    if params.top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(-1) - probs  # mass strictly above each token
        probs = probs.masked_fill(before >= params.top_p, 0.0)
    cdf = probs.double().cumsum(-1)
    target = _uniform(keys, step) * cdf[:, -1]
    # right=True skips zero-probability tokens: the first index whose cdf exceeds target.
    index = torch.searchsorted(cdf, target[:, None], right=True).clamp(max=cdf.shape[-1] - 1)
    return order.gather(1, index)[:, 0] if order is not None else index[:, 0]


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor, k: int):
    """log-softmax at ``targets`` (and the top-k values) without materialising log_softmax."""
    norm = logits.logsumexp(-1)
    chosen = logits.gather(-1, targets[..., None])[..., 0] - norm
    top = logits.topk(k, dim=-1).values - norm[..., None] if k else None
    return chosen, top


class TransformersBackend:
    """A causal LM served in-process (CPU or GPU) with a radix prefix cache. See the module docstring."""

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
            from transformers import AutoModelForCausalLM

            try:
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype or torch.float32, attn_implementation="sdpa"
                )
            except Exception as err:  # a broken folder: say which and why, in one line
                raise BackendError(
                    f"could not load the model at {path}: {err}".splitlines()[0]
                ) from err
            model.to(device or "cpu")
            if tokenizer is None and (path / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

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
        text = config.get_text_config(decoder=True)
        heads = text.num_attention_heads
        self._kv_shape = (
            text.num_hidden_layers,
            getattr(text, "num_key_value_heads", None) or heads,
            getattr(text, "head_dim", None) or text.hidden_size // heads,
        )
        self._eos = self._collect_eos(model, tokenizer)
        params = inspect.signature(model.forward).parameters
        # transformers >= 5.x renamed past_key_values -> cache; accept both.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.cache = (
            RadixCache(budget_bytes=cache_bytes, token_axis=KV_TOKEN_AXIS) if cache_bytes else None
        )
        self.cache_generated = cache_generated

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

    def clear_cache(self) -> None:
        """Drop every cached prefix (not counted as evictions)."""
        if self.cache is not None:
            self.cache = RadixCache(budget_bytes=self.cache.budget_bytes, token_axis=KV_TOKEN_AXIS)
            self.stats.cache_bytes = 0

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

    # -- the forward path ----------------------------------------------------------------
    def _open(
        self,
        prompts: list[tuple[int, ...]],
        feeds: list[list[tuple[int, tuple[int, ...]]]],
        extra: int,
    ):
        """Match, lock and load each prompt's cached prefix; run the rest and the ``feeds``.

        ``feeds[r]`` lists (branch id, tokens) fed after prompt ``r`` in the same forward;
        ``extra`` reserves slots for later decode steps. Returns the rows, the locked matches,
        each prompt's last-token logits [rows, vocab] and the fed tokens' logits [rows, fed,
        vocab] (in feed order; None when nothing is fed).
        """
        cache = self.cache
        matches = [cache.match(p) if cache else None for p in prompts]
        try:
            return self._load_and_run(prompts, matches, feeds, extra)
        except BaseException:
            self._release(matches)
            raise

    def _load_and_run(self, prompts, matches, feeds, extra):
        # A whole prompt counts as cached only with its stored last logits; otherwise its last
        # token is run again (its logits predict the first new token).
        cached = [
            0
            if m is None
            else len(p)
            if m.length == len(p) and m.end is not None
            else min(m.length, len(p) - 1)
            for p, m in zip(prompts, matches, strict=True)
        ]
        # Canonical layout, whatever the cache held: row r's prompt fills slots [W - len, W),
        # feeds and decoded tokens follow W. Same slots, same reductions: a repeated call
        # gives bit-identical results.
        width = max(map(len, prompts))
        tail = max(len(p) - c for p, c in zip(prompts, cached, strict=True))
        fed = max(sum(len(t) for _, t in f) for f in feeds)
        layers, kv_heads, head_dim = self._kv_shape
        rows_n, dev = len(prompts), self.device
        buf = torch.empty(
            layers, 2, rows_n, kv_heads, width + fed + extra, head_dim, dtype=self.dtype, device=dev
        )
        valid = torch.zeros(rows_n, buf.shape[4], dtype=torch.bool, device=dev)
        pos = torch.zeros(rows_n, buf.shape[4], dtype=torch.long, device=dev)
        for r, (p, m) in enumerate(zip(prompts, matches, strict=True)):
            lo = width - len(p)
            if lo:  # never-written slots may hold NaN bit patterns; masked keys must be finite
                buf[:, :, r, :, :lo].zero_()
            if cached[r]:
                self._copy_path(buf, r, lo, m.segments, 0, cached[r])
            valid[r, lo:width] = True
            pos[r, lo:width] = torch.arange(len(p), device=dev)
        kv_cache = DynamicCache()
        kv_cache.layers = [_SlotLayer(buf[i, 0], buf[i, 1], width - tail) for i in range(layers)]
        rows = _Rows(kv_cache, buf, width - tail, valid, pos, torch.zeros_like(pos), width, cached)
        last = feed_logits = None
        if tail:  # the uncached prompt tails, in the last `tail` prompt slots
            ids, at = ([[0] * tail for _ in prompts] for _ in range(2))
            ok = [[False] * tail for _ in prompts]
            for r, (p, c) in enumerate(zip(prompts, cached, strict=True)):
                lo = tail - (len(p) - c)
                ids[r][lo:], ok[r][lo:], at[r][lo:] = p[c:], [True] * (len(p) - c), range(c, len(p))
            ids, ok, at = self._tensors(ids, ok, at)
            for layer in kv_cache.layers:
                layer.keep = ~ok
            try:
                last = self._extend(rows, ids, ok, at, torch.zeros_like(ids), keep=1, meta=False)[
                    :, -1
                ]
            finally:
                for layer in kv_cache.layers:
                    layer.keep = None
        stored = [r for r, (p, c) in enumerate(zip(prompts, cached, strict=True)) if c == len(p)]
        if stored:
            ends = torch.stack([matches[r].end for r in stored])
            last = (
                ends
                if last is None
                else last.index_put((torch.tensor(stored, device=dev),), ends.to(last.dtype))
            )
        self._insert_prompts(rows, prompts, last)
        if fed:  # the feeds: one branch per continuation, after the prompt
            ids, at, br = ([[0] * fed for _ in prompts] for _ in range(3))
            ok = [[False] * fed for _ in prompts]
            for r, p in enumerate(prompts):
                col = 0
                for b, toks in feeds[r]:
                    m = len(toks)
                    ids[r][col : col + m], ok[r][col : col + m] = toks, [True] * m
                    at[r][col : col + m], br[r][col : col + m] = range(len(p), len(p) + m), [b] * m
                    col += m
            feed_logits = self._extend(rows, *self._tensors(ids, ok, at, br))
        return rows, matches, last, feed_logits

    @staticmethod
    def _copy_path(buf: torch.Tensor, r: int, lo: int, segments, start: int, stop: int) -> None:
        """Copy tokens [start, stop) of a cached path (its node segments) into row r from slot lo."""
        at = 0
        for kv, used in segments:
            a, b = max(start, at), min(stop, at + used)
            if a < b:
                buf[:, :, r, :, lo + a : lo + b] = kv.narrow(KV_TOKEN_AXIS, a - at, b - a)
            at += used
            if at >= stop:
                break

    def _insert_prompts(self, rows: _Rows, prompts, last: torch.Tensor) -> None:
        """Store each prompt (with its last logits) right after it was run.

        When part of a row's tail was just stored by an earlier row of this call, the row's
        slots are reloaded from the tree, so everything after this point reads the bits later
        calls will read.
        """
        cache, width = self.cache, rows.width
        if cache is None:
            return
        for r, p in enumerate(prompts):
            c, lo = rows.cached[r], width - len(p)
            if c == len(p):
                continue
            # clone: a view would keep the whole call's logits tensor alive in the tree
            added = cache.insert(
                p,
                lambda a, b, r=r, lo=lo: rows.buf[:, :, r, :, lo + a : lo + b].clone(),
                end=last[0].clone(),
            )
            if added < len(p) - c:
                self._copy_path(
                    rows.buf, r, lo, cache.match(p, lock=False).segments, c, len(p) - added
                )

    def _insert_continuations(
        self, rows: _Rows, prompts, conts: list[list[tuple[tuple[int, ...], list[int]]]]
    ) -> None:
        """With ``cache_generated``: store prompt + each continuation's fed tokens."""
        if self.cache is None or not self.cache_generated:
            return
        for r, p in enumerate(prompts):
            for toks, slots in conts[r]:
                if toks:
                    index = torch.tensor(
                        [*range(rows.width - len(p), rows.width), *slots], device=self.device
                    )

                    def kv_of(a: int, b: int, r=r, index=index) -> torch.Tensor:
                        return rows.buf.select(2, r).index_select(KV_TOKEN_AXIS, index[a:b])

                    self.cache.insert(p + toks, kv_of)

    def _tensors(self, *lists):
        return [torch.tensor(x, device=self.device) for x in lists]

    def _extend(
        self, rows: _Rows, ids, valid, pos, branch, *, keep: int = 0, meta: bool = True
    ) -> torch.Tensor:
        """Append ``ids`` [rows, q] (``valid`` marks real tokens) at ``pos`` on ``branch``; logits.

        A query sees the valid keys of its row at positions up to its own that belong to the
        prompt (branch 0) or to its own branch, and always itself: a padding query then has one
        finite key instead of none (a fully masked row would give NaN).
        """
        n, q = rows.length, ids.shape[1]
        end = n + q
        if meta:  # else the slots' metadata was written when the rows were laid out
            rows.valid[:, n:end], rows.pos[:, n:end], rows.branch[:, n:end] = valid, pos, branch
        k_valid, k_pos, k_branch = (
            rows.valid[:, None, :end],
            rows.pos[:, None, :end],
            rows.branch[:, None, :end],
        )
        allowed = (
            k_valid
            & (k_pos <= pos[:, :, None])
            & ((k_branch == 0) | (k_branch == branch[:, :, None]))
        )
        own = torch.arange(q, device=self.device)
        allowed[:, own, n + own] = True
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        out = self.model(
            input_ids=ids,
            attention_mask=mask[:, None],
            position_ids=pos,
            use_cache=True,
            logits_to_keep=keep,
            **{self._cache_kw: rows.cache},
        )
        rows.length = end  # the slot layers wrote keys/values in place
        return out.logits

    def _release(self, matches: list) -> None:
        """Unlock this call's matched paths, then evict down to the budget."""
        if self.cache is not None:
            for m in matches:
                self.cache.release(m)
            matches.clear()
            self._evict()

    def _evict(self) -> None:
        before = self.cache.evictions
        self.cache.evict()
        self.stats.evictions += self.cache.evictions - before

    def _check_length(self, length: int, what: str) -> None:
        if self.max_positions and length > self.max_positions:
            raise BackendError(
                f"{self.name}: {what} needs {length} positions but the model has "
                f"max_position_embeddings={self.max_positions}; shorten the prompt "
                "(PromptConfig.max_history_turns) or lower max_new_tokens"
            )

    def _finish_call(self, before: EngineStats) -> None:
        self.stats.calls += 1
        if self.cache is not None:
            self.stats.cache_bytes = self.cache.bytes
        self.last_call = self.stats.minus(before)

    # -- sampling ------------------------------------------------------------------------
    def sample(
        self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams
    ) -> list[list[Sample]]:
        if n < 1:
            raise BackendError(f"n must be >= 1, got {n}")
        prompts = [tuple(int(t) for t in p) for p in prompts]
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
        rows, matches, last, _ = self._open(unique, [[] for _ in unique], (steps - 1) * max(seen))
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
            keys = torch.tensor(_stream_keys(seed, len(prompts), n), dtype=torch.long, device=dev)
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
                logits = self._extend(rows, ids, ok, at, br)[r_a, cols]
                computed += len(alive)
            token_rows, lp_rows, length_list = tokens.tolist(), logprobs.tolist(), lengths.tolist()
            top_rows = tops.tolist() if tops is not None else None
            stop_list, slot_rows = stopped.tolist(), slots.tolist()
            conts: list[list] = [[] for _ in unique]
            for u, r in enumerate(row_list):  # fed tokens: all but the last
                m = length_list[u] - 1
                conts[r].append((tuple(token_rows[u][:m]), slot_rows[u][:m]))
            self._insert_continuations(rows, unique, conts)
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
        prefixes = [tuple(int(t) for t in r.prefix_ids) for r in reqs]
        conts = [tuple(int(t) for t in r.continuation_ids) for r in reqs]
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
        rows, matches, last, fed_logits = self._open(unique, feeds, 0)
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
            lp, top = _token_logprobs(
                picked.float(), torch.tensor(targets, device=self.device), kmax
            )
            lp_list, top_list = lp.tolist(), top.tolist() if kmax else None
            base = rows.width
            remembered: list[list] = [[] for _ in unique]
            for pair in pairs:
                (r, off), c = place[pair], pair[1]
                remembered[r].append((c[:-1], [base + off + t for t in range(len(c) - 1)]))
            self._insert_continuations(rows, unique, remembered)
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
