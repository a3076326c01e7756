"""The prefix-cached forward path of TransformersBackend: one call's KV rows, packed.

    runner = PackedRunner(model, cache=RadixCache(budget_bytes=..., token_axis=KV_TOKEN_AXIS))
    rows, matches, last, fed = runner.open(prompts, feeds, extra=decode_slots)
    logits = runner.extend(rows, ids, valid, pos, branch)         # one decode step
    runner.insert_continuations(rows, prompts, conts)             # optional
    runner.release(matches)                                       # unlock, evict to the budget

A call has one row per distinct prompt. ``open`` looks up each prompt's longest cached prefix
(locked until ``release``), copies those KV slices into a slot buffer, runs the uncached prompt
tails in one forward, stores the prompts (with their last logits) in the tree, then runs every
row's *feeds* in a second forward: feed j of a row is branch j of that row, packed after the
prompt. The 4-D mask lets a token see the valid slots of its own branch and of the prompt
(branch 0) up to its position; positions are explicit. K candidates are thus scored against
one copy of their shared prefix, and K samples decode together one slot per live sample.

Layout is canonical: row r's prompt fills slots [W − len(p), W) (W = the longest prompt), feeds
and decoded tokens follow W, whatever the cache held. With the same KV bits in the same slots
the reductions are the same, so repeating a call gives bit-identical numbers; a row whose new
tokens another row of the same call stored first is reloaded from the tree for that reason.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ttsearch.agents.engines.transformers.radix_cache import Match, RadixCache

KV_TOKEN_AXIS = 3  # node payloads are [layers, 2 (keys, values), kv_heads, tokens, head_dim]


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
            key_states = key_states.where(~keep, k_old)
            value_states = value_states.where(~keep, v_old)
        k_old.copy_(key_states)
        v_old.copy_(value_states)
        self._n = n + q
        self.keys, self.values = self._k[:, :, : n + q], self._v[:, :, : n + q]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n


@dataclass(slots=True)
class Rows:
    """One call's KV rows: the slot buffer, slots in use, and what each slot holds."""

    cache: Any  # a DynamicCache of _SlotLayers over ``buf``
    buf: torch.Tensor  # [layers, 2, rows, kv_heads, capacity, head_dim]
    length: int
    valid: torch.Tensor  # [rows, capacity] bool: the slot holds a real token
    pos: torch.Tensor  # [rows, capacity] long: its position
    branch: torch.Tensor  # [rows, capacity] long: 0 = the row's prompt, j = continuation j
    width: int  # every row's prompt is right-aligned to end at this slot
    cached: list[int]  # prompt tokens of each row taken from the tree


class PackedRunner:
    """Runs a model over packed, prefix-cached rows (see the module docstring)."""

    def __init__(self, model: Any, *, cache: RadixCache | None, cache_generated: bool = True):
        self.model, self.cache, self.cache_generated = model, cache, cache_generated
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        text = model.config.get_text_config(decoder=True)
        heads = text.num_attention_heads
        self.kv_shape = (
            text.num_hidden_layers,
            getattr(text, "num_key_value_heads", None) or heads,
            getattr(text, "head_dim", None) or text.hidden_size // heads,
        )
        # transformers >= 5.x renamed past_key_values -> cache; accept both.
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        self._buffer: torch.Tensor | None = None

    # -- a call --------------------------------------------------------------------------
    def open(
        self,
        prompts: list[tuple[int, ...]],
        feeds: list[list[tuple[int, tuple[int, ...]]]],
        extra: int,
    ):
        """Match, lock and load each prompt's cached prefix; run the rest, then the ``feeds``.

        ``feeds[r]`` lists (branch id, tokens) fed after prompt ``r``; ``extra`` reserves slots
        for decode steps. Returns the rows, the locked matches (pass them to :meth:`release`),
        each prompt's last-token logits [rows, vocab] and the fed tokens' logits [rows, fed,
        vocab] in feed order (None when nothing is fed).
        """
        matches = [self.cache.match(p) if self.cache else None for p in prompts]
        try:
            return self._load_and_run(prompts, matches, feeds, extra)
        except BaseException:
            self.release(matches)
            raise

    def release(self, matches: list[Match | None]) -> None:
        """Unlock a call's matched paths and evict down to the budget."""
        if self.cache is not None:
            for m in matches:
                self.cache.release(m)
            matches.clear()
            self.cache.evict()

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
        width = max(map(len, prompts))
        tail = max(len(p) - c for p, c in zip(prompts, cached, strict=True))
        fed = max(sum(len(t) for _, t in f) for f in feeds)
        layers, kv_heads, head_dim = self.kv_shape
        rows_n, dev = len(prompts), self.device
        buf = self._workspace((layers, 2, rows_n, kv_heads, width + fed + extra, head_dim))
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
        rows = Rows(kv_cache, buf, width - tail, valid, pos, torch.zeros_like(pos), width, cached)
        last = feed_logits = None
        if tail:  # the uncached prompt tails, written into the last `tail` prompt slots
            ids, at, ok = (
                [[0] * tail for _ in prompts],
                [[0] * tail for _ in prompts],
                [[False] * tail for _ in prompts],
            )
            for r, (p, c) in enumerate(zip(prompts, cached, strict=True)):
                lo = tail - (len(p) - c)
                ids[r][lo:], ok[r][lo:], at[r][lo:] = p[c:], [True] * (len(p) - c), range(c, len(p))
            ids, ok, at = self._tensors(ids, ok, at)
            if not bool(ok.all()):  # shorter tails: their leading columns hold cached tokens
                for layer in kv_cache.layers:
                    layer.keep = ~ok
            try:
                last = self.extend(rows, ids, ok, at, torch.zeros_like(ids), keep=1, meta=False)[
                    :, -1
                ]
            finally:
                for layer in kv_cache.layers:
                    layer.keep = None
        stored = [r for r, (p, c) in enumerate(zip(prompts, cached, strict=True)) if c == len(p)]
        if stored:
            ends = torch.stack([matches[r].end for r in stored])
            index = torch.tensor(stored, device=dev)
            last = ends if last is None else last.index_put((index,), ends.to(last.dtype))
        self._insert_prompts(rows, prompts, last)
        if fed:  # one branch per continuation, after the prompt
            ids, at, br = ([[0] * fed for _ in prompts] for _ in range(3))
            ok = [[False] * fed for _ in prompts]
            for r, p in enumerate(prompts):
                col = 0
                for b, toks in feeds[r]:
                    m = len(toks)
                    ids[r][col : col + m], ok[r][col : col + m] = toks, [True] * m
                    at[r][col : col + m], br[r][col : col + m] = range(len(p), len(p) + m), [b] * m
                    col += m
            feed_logits = self.extend(rows, *self._tensors(ids, ok, at, br))
        return rows, matches, last, feed_logits

    def extend(
        self, rows: Rows, ids, valid, pos, branch, *, keep: int = 0, meta: bool = True
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
        k_branch = rows.branch[:, None, :end]
        allowed = (
            rows.valid[:, None, :end]
            & (rows.pos[:, None, :end] <= pos[:, :, None])
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

    # -- the tree ------------------------------------------------------------------------
    def _insert_prompts(self, rows: Rows, prompts, last: torch.Tensor) -> None:
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

            def kv_of(a: int, b: int, r=r, lo=lo) -> torch.Tensor:
                return rows.buf[:, :, r, :, lo + a : lo + b].clone()

            # clone: a view would keep the whole call's logits tensor alive in the tree
            added = cache.insert(p, kv_of, end=last[r].clone())
            if added < len(p) - c:
                segments = cache.match(p, lock=False).segments
                self._copy_path(rows.buf, r, lo, segments, c, len(p) - added)

    def insert_continuations(
        self, rows: Rows, prompts, conts: list[list[tuple[tuple[int, ...], list[int]]]]
    ) -> None:
        """With ``cache_generated``: store prompt + each continuation's fed tokens.

        ``conts[r]`` lists (fed tokens, their slots) of row ``r``.
        """
        if self.cache is None or not self.cache_generated:
            return
        for r, p in enumerate(prompts):
            n = len(p)
            lo = rows.width - n
            for toks, slots in conts[r]:
                if toks:

                    def kv_of(a: int, b: int, r=r, lo=lo, n=n, slots=slots) -> torch.Tensor:
                        # prompt tokens sit at lo + i, continuation token t at slots[t]
                        index = [
                            *range(lo + a, lo + min(b, n)),
                            *slots[max(a - n, 0) : max(b - n, 0)],
                        ]
                        index = torch.tensor(index, device=self.device)
                        return rows.buf.select(2, r).index_select(KV_TOKEN_AXIS, index)

                    self.cache.insert(p + toks, kv_of)

    # -- helpers -------------------------------------------------------------------------
    def _workspace(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A slot buffer of ``shape`` over memory kept from call to call.

        Fresh multi-megabyte allocations are returned to the OS and page-faulted back in on
        every call, which costs as much as the copies themselves; one grown-as-needed buffer
        does not. Nothing of it outlives a call (the tree stores copies).
        """
        numel = 1
        for size in shape:
            numel *= size
        if self._buffer is None or self._buffer.numel() < numel:
            self._buffer = None  # free the old one first
            self._buffer = torch.empty(numel + numel // 4, dtype=self.dtype, device=self.device)
        return self._buffer[:numel].view(shape)

    @property
    def workspace_bytes(self) -> int:
        return 0 if self._buffer is None else self._buffer.numel() * self._buffer.element_size()

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

    def _tensors(self, *lists):
        return [torch.tensor(x, device=self.device) for x in lists]
