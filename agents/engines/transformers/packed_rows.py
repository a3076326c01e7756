"""The prefix-cached forward path of TransformersBackend: one call's rows, packed.

    runner = PackedRunner(model, cache=RadixCache(budget_bytes=..., token_axis=KV_TOKEN_AXIS))
    rows, last, fed = runner.open(prompts, feeds, extra=decode_slots)   # prompts matched and run
    logits = runner.extend(rows, ids, valid, pos, branch)               # one decode step
    runner.insert_continuations(rows, conts)                            # optional
    runner.release(rows)                                                # unlock, evict to budget

A call has one row per distinct prompt. ``open`` looks up each prompt's longest cached prefix
in the radix tree (its nodes locked until ``release``) and runs only the rest: the uncached
prompt tails in one forward, stored in the tree with their last logits, then every row's
*feeds* in a second forward (feed j of a row is branch j of that row). Cached prefixes are never
copied: queries read them from the tree's nodes (``attention.py``); the call's own keys and
values live in a workspace ``[layers, 2, rows, kv_heads, slots, head_dim]`` whose slots carry
validity, position and branch, so a token sees its row's prompt (branch 0) and its own branch
up to its position. K candidates are thus scored against one shared prefix, and K samples decode
together one slot per live sample.

Numbers equal a plain full forward to float rounding. They are not bit-identical across cache
states: how a prefix is split into cached nodes changes the order of the attention sums.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ttsearch.agents.engines.transformers.attention import AttentionPlan, Segment, planned_attention
from ttsearch.agents.engines.transformers.forward import LeanForward
from ttsearch.agents.engines.transformers.radix_cache import Match, RadixCache

KV_TOKEN_AXIS = 3  # node payloads are [layers, 2, kv_heads, tokens, head_dim]


class _SlotLayer(DynamicLayer):
    """One layer's cache over a preallocated slot buffer: appends write in place, no regrowth."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self._k, self._v, self._n = keys, values, length  # [rows, kv_heads, capacity, head_dim]
        self.device, self.is_initialized = keys.device, True
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, q = self._n, key_states.shape[-2]
        self._k[:, :, n : n + q].copy_(key_states)
        self._v[:, :, n : n + q].copy_(value_states)
        self._n = n + q
        self.keys, self.values = self._k[:, :, : n + q], self._v[:, :, : n + q]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n


IN_PLACE_MIN_TOKENS = 256
"""A cached piece at least this long is read where it lies; a shorter one is copied into the
workspace. Reading in place costs a few attention calls per layer and piece; copying costs the
piece's bytes: a radix tree of many similar prompts holds many short nodes, where copying wins."""


@dataclass(frozen=True, slots=True)
class _Piece:
    """Prompt tokens [start, stop) of a row: in a tree node from ``offset``, or in the workspace
    from slot ``offset`` (``node`` None)."""

    start: int
    stop: int
    node: torch.Tensor | None
    offset: int


@dataclass(slots=True)
class Rows:
    """One call's rows: the workspace, what each slot holds, and the cached prefixes read."""

    prompts: list[tuple[int, ...]]
    cached: list[int]
    """Prompt tokens of each row read from the tree (the rest, its tail, is computed)."""
    matches: list[Match | None]
    segments: list[Segment]
    pieces: list[list[_Piece]]
    """Where each row's prompt tokens are (tree nodes or workspace slots), in token order."""
    cache: Any  # a DynamicCache of _SlotLayers over ``buf``
    buf: torch.Tensor  # [layers, 2, rows, kv_heads, capacity, head_dim]
    valid: torch.Tensor  # [rows, capacity] bool: the slot holds a real token
    pos: torch.Tensor  # [rows, capacity] long: its position
    branch: torch.Tensor  # [rows, capacity] long: 0 = the row's prompt, j = continuation j
    copied: int
    """Slots [0, copied) hold the short cached pieces copied in; the tails follow."""
    prompt_end: int
    """Each row's prompt tail ends at this slot; feeds and decoded tokens follow it."""
    length: int = 0
    released: bool = field(default=False)

    def kv(self, r: int, start: int, stop: int, slots: list[int] | None = None) -> torch.Tensor:
        """The payload ``[layers, 2, kv_heads, n, head_dim]`` of row ``r``'s tokens [start, stop):
        prompt tokens from where they are (tree node or workspace), then continuation tokens from
        ``slots`` (their workspace slots, in order)."""
        plen, parts = len(self.prompts[r]), []
        for piece in self.pieces[r]:
            a, b = max(start, piece.start), min(stop, piece.stop)
            if a < b:
                lo = piece.offset + a - piece.start
                source = self.buf[:, :, r] if piece.node is None else piece.node
                parts.append(source.narrow(KV_TOKEN_AXIS, lo, b - a))
        if stop > plen:
            index = torch.tensor(slots[max(start - plen, 0) : stop - plen], device=self.buf.device)
            parts.append(self.buf.select(2, r).index_select(KV_TOKEN_AXIS, index))
        return parts[0].clone() if len(parts) == 1 else torch.cat(parts, KV_TOKEN_AXIS)


class PackedRunner:
    """Runs a model over packed, prefix-cached rows (see the module docstring)."""

    def __init__(self, model: Any, *, cache: RadixCache | None, cache_generated: bool = True, lean: bool = True,
                 in_place_min_tokens: int = IN_PLACE_MIN_TOKENS):
        self.model, self.cache, self.cache_generated = model, cache, cache_generated
        self.in_place_min_tokens = in_place_min_tokens
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
        self.lean = LeanForward.for_model(model) if lean else None
        """The engine's own forward (``forward.py``) where the architecture allows, else the model's."""
        self.clock: Any = None
        """Optional ``enter()``/``leave()`` around every forward (benchmarks time forwards with it)."""

    # -- a call --------------------------------------------------------------------------
    def open(self, prompts: list[tuple[int, ...]], feeds: list[list[tuple[int, tuple[int, ...]]]],
             extra: int) -> tuple[Rows, torch.Tensor, torch.Tensor | None]:
        """Match and lock each prompt's cached prefix; run the tails, store them, run the feeds.

        ``feeds[r]`` lists (branch id, tokens) fed after prompt ``r``; ``extra`` reserves slots
        for decode steps. Returns the rows (pass them to :meth:`release`), each prompt's
        last-token logits [rows, vocab] and the fed tokens' logits [rows, fed, vocab] in feed
        order (None when nothing is fed).
        """
        matches = [self.cache.match(p) if self.cache else None for p in prompts]
        try:
            rows = self._layout(prompts, matches, feeds, extra)
            last = self._run_tails(rows)
            self._insert_prompts(rows, last)
            return rows, last, self._run_feeds(rows, feeds)
        except BaseException:
            self._unlock(matches)
            raise

    def release(self, rows: Rows) -> None:
        """Unlock a call's matched paths and evict down to the budget."""
        if not rows.released:
            rows.released = True
            self._unlock(rows.matches)

    def _unlock(self, matches: list[Match | None]) -> None:
        if self.cache is not None:
            for m in matches:
                self.cache.release(m)
            self.cache.evict()

    def _layout(self, prompts, matches, feeds, extra) -> Rows:
        # A whole prompt counts as cached only with its stored last logits; otherwise its last
        # token is run again (its logits predict the first new token).
        cached = [0 if m is None else len(p) if m.length == len(p) and m.end is not None
                  else min(m.length, len(p) - 1) for p, m in zip(prompts, matches, strict=True)]
        split = [self._split_path(m, c, self.in_place_min_tokens) for m, c in zip(matches, cached, strict=True)]
        copied = max(sum(n for _, _, n, _ in short) for _, short in split)
        tail = max(len(p) - c for p, c in zip(prompts, cached, strict=True))
        fed = max(sum(len(t) for _, t in f) for f in feeds)
        layers, kv_heads, head_dim = self.kv_shape
        n, dev = len(prompts), self.device
        buf = self._workspace((layers, 2, n, kv_heads, copied + tail + fed + extra, head_dim))
        if copied + tail:  # never-written slots may hold NaN bit patterns; masked keys must be finite
            buf[:, :, :, :, : copied + tail].zero_()
        valid = torch.zeros(n, buf.shape[4], dtype=torch.bool, device=dev)
        pos = torch.zeros(n, buf.shape[4], dtype=torch.long, device=dev)
        pieces: list[list[_Piece]] = []
        for r, ((long, short), p, c) in enumerate(zip(split, prompts, cached, strict=True)):
            row = [_Piece(start, start + k, kv, lo) for kv, lo, k, start in long]
            slot = copied - sum(k for _, _, k, _ in short)
            for kv, lo, k, start in short:  # copied pieces end at slot ``copied``
                buf[:, :, r, :, slot : slot + k] = kv.narrow(KV_TOKEN_AXIS, lo, k)
                valid[r, slot : slot + k] = True
                pos[r, slot : slot + k] = torch.arange(start, start + k, device=dev)
                row.append(_Piece(start, start + k, None, slot))
                slot += k
            row.append(_Piece(c, len(p), None, copied + tail - (len(p) - c)))
            pieces.append(sorted(row, key=lambda piece: piece.start))
        kv_cache = DynamicCache()
        kv_cache.layers = [_SlotLayer(buf[i, 0], buf[i, 1], copied) for i in range(layers)]
        return Rows(list(prompts), cached, list(matches), self._segments(split), pieces, kv_cache, buf,
                    valid, pos, torch.zeros_like(pos), copied, copied + tail, length=copied)

    @staticmethod
    def _split_path(match: Match | None, cached: int, in_place_min: int) -> tuple[list, list]:
        """A row's cached prefix as (long pieces read in place, short pieces to copy), each
        (node payload, offset in it, tokens, first position)."""
        long, short, at = [], [], 0
        for kv, used in (match.segments if match is not None else ()):
            take = min(used, cached - at)
            if take <= 0:
                break
            (long if take >= in_place_min else short).append((kv, 0, take, at))
            at += take
        return long, short

    def _segments(self, split) -> list[Segment]:
        """The distinct long pieces the rows read in place, each with the rows that read it."""
        users: dict[tuple[int, int], tuple[torch.Tensor, int, list[int]]] = {}
        for r, (long, _) in enumerate(split):
            for kv, _, take, _ in long:
                users.setdefault((id(kv), take), (kv, take, []))[2].append(r)
        return [Segment(kv, take, torch.tensor(rs, device=self.device)) for kv, take, rs in users.values()]

    def _run_tails(self, rows: Rows) -> torch.Tensor:
        """Run every row's uncached prompt tail (right-aligned to end at ``rows.prompt_end``); the
        prompts' last-token logits (stored ones for prompts cached whole)."""
        n, tail = len(rows.prompts), rows.prompt_end - rows.copied
        last = None
        if tail:
            ids, at, ok = ([[0] * tail for _ in range(n)] for _ in range(3))
            for r, (p, c) in enumerate(zip(rows.prompts, rows.cached, strict=True)):
                lo = tail - (len(p) - c)
                ids[r][lo:], at[r][lo:], ok[r][lo:] = p[c:], range(c, len(p)), [True] * (len(p) - c)
                ok[r][:lo] = [False] * lo
            ids, at, ok = (torch.tensor(x, device=self.device) for x in (ids, at, ok))
            last = self.extend(rows, ids, ok.bool(), at, torch.zeros_like(ids), keep=1)[:, -1]
        stored = [r for r, (p, c) in enumerate(zip(rows.prompts, rows.cached, strict=True)) if c == len(p)]
        if stored:
            ends = torch.stack([rows.matches[r].end for r in stored])
            index = torch.tensor(stored, device=self.device)
            last = ends if last is None else last.index_put((index,), ends.to(last.dtype))
        return last

    def _run_feeds(self, rows: Rows, feeds) -> torch.Tensor | None:
        fed = max(sum(len(t) for _, t in f) for f in feeds)
        if not fed:
            return None
        n = len(rows.prompts)
        ids, at, br = ([[0] * fed for _ in range(n)] for _ in range(3))
        ok = [[False] * fed for _ in range(n)]
        for r, p in enumerate(rows.prompts):
            col = 0
            for b, toks in feeds[r]:
                m = len(toks)
                ids[r][col : col + m], ok[r][col : col + m] = toks, [True] * m
                at[r][col : col + m], br[r][col : col + m] = range(len(p), len(p) + m), [b] * m
                col += m
        return self.extend(rows, *(torch.tensor(x, device=self.device) for x in (ids, ok, at, br)))

    def extend(self, rows: Rows, ids, valid, pos, branch, *, keep: int = 0) -> torch.Tensor:
        """Append ``ids`` [rows, q] (``valid`` marks real tokens) at ``pos`` on ``branch``; logits.

        A query sees its row's cached prefix, and the valid workspace keys of its row at
        positions up to its own that belong to the prompt (branch 0) or to its own branch, and
        always itself: a padding query then has one finite key instead of none.
        """
        n, q = rows.length, ids.shape[1]
        end = n + q
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
        plan = AttentionPlan(rows.segments, mask[:, None])
        if self.clock is not None:
            self.clock.enter()
        try:
            logits = self._forward(ids, pos, rows, plan, keep)
        finally:
            if self.clock is not None:
                self.clock.leave()
        rows.length = end  # the slot layers wrote keys/values in place
        return logits

    def _forward(self, ids, pos, rows: Rows, plan: AttentionPlan, keep: int) -> torch.Tensor:
        if self.lean is not None:
            logits = self.lean(ids, pos, rows.cache.layers, plan, keep=keep)
        else:
            with planned_attention(self.model):
                logits = self.model(input_ids=ids, position_ids=pos, use_cache=True, logits_to_keep=keep,
                                    ttsearch_plan=plan, **{self._cache_kw: rows.cache}).logits
        return logits

    # -- the tree ------------------------------------------------------------------------
    def _insert_prompts(self, rows: Rows, last: torch.Tensor) -> None:
        """Store each prompt (with its last logits) right after it was run."""
        if self.cache is None:
            return
        for r, (p, c) in enumerate(zip(rows.prompts, rows.cached, strict=True)):
            if c < len(p):
                # clone: a view would keep the whole call's logits tensor alive in the tree
                self.cache.insert(p, lambda a, b, r=r: rows.kv(r, a, b), end=last[r].clone())

    def insert_continuations(self, rows: Rows, conts: list[list[tuple[tuple[int, ...], list[int]]]]) -> None:
        """With ``cache_generated``: store prompt + each continuation's fed tokens.

        ``conts[r]`` lists (fed tokens, their workspace slots) of row ``r``.
        """
        if self.cache is None or not self.cache_generated:
            return
        for r, p in enumerate(rows.prompts):
            for toks, slots in conts[r]:
                if toks:
                    self.cache.insert(p + toks, lambda a, b, r=r, slots=slots: rows.kv(r, a, b, slots))

    # -- helpers -------------------------------------------------------------------------
    def _workspace(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A workspace of ``shape`` over memory kept from call to call.

        Fresh multi-megabyte allocations are returned to the OS and page-faulted back in on
        every call, which costs as much as the work itself; one grown-as-needed buffer does not.
        Nothing of it outlives a call (the tree stores copies).
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
