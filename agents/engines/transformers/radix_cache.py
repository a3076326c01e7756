"""A radix tree over token ids whose nodes hold KV-cache slices: the embedded engine's prefix cache.

    cache = RadixCache(budget_bytes=512 << 20, token_axis=3)
    hit = cache.match(tokens, max_len=len(tokens) - 1)    # longest cached prefix, locked
    for kv, used in hit.segments: ...                     # payload slices covering tokens[:hit.length]
    cache.insert(tokens, kv_of)                           # kv_of(start, stop) -> payload of that span
    cache.release(hit)                                    # unlock: its nodes may be evicted again
    cache.evict()                                         # LRU leaves until within the budget

Each node owns the payload of its own token span: one tensor whose ``token_axis`` runs over
those tokens (:class:`TransformersBackend` stores ``[layers, 2 (k, v), kv_heads, n, head_dim]``),
so a cached prefix is the concatenation of the payloads on its root-to-node path. A node never
shares storage with another (a split copies both halves), so ``nbytes`` is what is really held.

Eviction removes least-recently-used *leaves* whose lock count is zero, repeatedly (a parent whose
last child went becomes a leaf), until the bytes held are within ``budget_bytes``; ``insert``
makes room that way before it adds bytes, so the tree exceeds its budget only while locked
nodes leave nothing to evict. ``match`` locks the matched path until ``release``, so nodes a
call is using are never evicted under it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ttsearch.envs.errors import ConfigError


class _Node:
    __slots__ = ("children", "end", "kv", "last_use", "lock", "nbytes", "parent", "tokens")

    def __init__(self, tokens: tuple[int, ...], kv: Any, parent: _Node | None):
        self.tokens = tokens
        self.kv = kv
        # optional payload about the node's last token (the engine keeps its logits there)
        self.end: Any = None
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.lock = 0
        self.last_use = 0
        self.nbytes = _nbytes(kv)


def _nbytes(kv: Any) -> int:
    return 0 if kv is None else int(kv.numel() * kv.element_size())


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, compared at C speed
        return n
    i = 0
    while a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True, slots=True)
class Match:
    """The longest cached prefix of a query: ``segments`` are (node payload, tokens used).

    ``end`` is the ``end`` payload stored with the prefix when the match ends exactly where an
    inserted sequence that carried one ended (the engine stores the last logits there).
    """

    length: int
    segments: tuple[tuple[Any, int], ...]
    node: Any  # the deepest matched node (locked until released); None when nothing matched
    end: Any = None


class RadixCache:
    """Token-id radix tree with per-node KV payloads, LRU leaf eviction and locking."""

    def __init__(self, *, budget_bytes: int, token_axis: int):
        if budget_bytes < 0:
            raise ConfigError(f"cache budget must be >= 0 bytes, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self.token_axis = token_axis
        self.root = _Node((), None, None)
        self.root.lock = 1  # the root is never a candidate for eviction
        self.bytes = 0
        self.peak_bytes = 0
        self.evictions = 0
        self.evicted_tokens = 0
        self._clock = 0

    # -- lookup --------------------------------------------------------------------------
    def match(
        self, tokens: Sequence[int], *, max_len: int | None = None, lock: bool = True
    ) -> Match:
        """The longest cached prefix of ``tokens[:max_len]``; its path is locked when ``lock``."""
        tokens = tuple(tokens)
        limit = len(tokens) if max_len is None else max(0, min(max_len, len(tokens)))
        self._clock += 1
        node, pos, segments = self.root, 0, []
        while pos < limit:
            child = node.children.get(tokens[pos])
            if child is None:
                break
            used = _common_length(child.tokens, tokens[pos:limit])
            child.last_use = self._clock
            segments.append((child.kv, used))
            pos += used
            node = child
            if used < len(child.tokens):
                break
        deepest = node if node is not self.root else None
        end = None
        if deepest is not None and segments[-1][1] == len(deepest.tokens):
            end = deepest.end
        if lock and deepest is not None:
            self._add_lock(deepest, 1)
        return Match(pos, tuple(segments), deepest, end)

    def release(self, match: Match) -> None:
        """Undo the lock taken by :meth:`match` (call exactly once per locked match)."""
        if match.node is not None:
            self._add_lock(match.node, -1)

    @staticmethod
    def _add_lock(node: _Node, delta: int) -> None:
        while node.parent is not None:  # the root's own lock stays
            node.lock += delta
            node = node.parent

    # -- insertion -----------------------------------------------------------------------
    def insert(
        self, tokens: Sequence[int], kv_of: Callable[[int, int], Any], *, end: Any = None
    ) -> int:
        """Store ``tokens``; ``kv_of(start, stop)`` gives the payload of the not-yet-cached span.

        Splits a node when ``tokens`` leave it (or end) part-way. ``end``, when given, is kept
        with the node that ends at the last token (replacing an older one). Room is made first
        by evicting LRU leaves off the insertion path; what cannot fit in the budget at all is
        not stored. Returns the number of tokens added.
        """
        tokens = tuple(tokens)
        self._clock += 1
        node, pos, added = self.root, 0, 0
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                kv = kv_of(pos, len(tokens))
                if kv.shape[self.token_axis] != len(tokens) - pos:
                    raise ValueError("kv_of returned a payload of the wrong length")
                if not self._make_room(node, _nbytes(kv) + _nbytes(end)):
                    return 0
                child = _Node(tokens[pos:], kv, node)
                node.children[tokens[pos]] = child
                self._grow(child.nbytes)
                added = used = len(tokens) - pos
            else:
                used = _common_length(child.tokens, tokens[pos:])
                if used < len(child.tokens):
                    child = self._split(child, used)
            child.last_use = self._clock
            node, pos = child, pos + used
        if end is not None and node is not self.root:
            delta = _nbytes(end) - _nbytes(node.end)
            if self._make_room(node, delta):
                node.end = end
                node.nbytes += delta
                self._grow(delta)
        return added

    def _make_room(self, anchor: _Node, size: int) -> bool:
        """Evict (never ``anchor`` or its ancestors) until ``size`` more bytes fit; False if
        they never can."""
        if size > self.budget_bytes:
            return False
        if self.bytes + size > self.budget_bytes:
            self._add_lock(anchor, 1)
            self.evict(self.budget_bytes - size)
            self._add_lock(anchor, -1)
        return True

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node`` after ``at`` tokens; returns the new upper part (same locks)."""
        axis = self.token_axis
        n = node.kv.shape[axis]
        upper = _Node(node.tokens[:at], node.kv.narrow(axis, 0, at).clone(), node.parent)
        upper.lock, upper.last_use = node.lock, node.last_use
        # clone, not a view: each node then owns exactly the bytes it reports
        node.kv = node.kv.narrow(axis, at, n - at).clone()
        old = node.nbytes
        node.nbytes = _nbytes(node.kv) + _nbytes(node.end)
        node.tokens = node.tokens[at:]
        node.parent.children[upper.tokens[0]] = upper
        upper.children[node.tokens[0]] = node
        node.parent = upper
        self._grow(upper.nbytes + node.nbytes - old)
        return upper

    def _grow(self, delta: int) -> None:
        self.bytes += delta
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    # -- eviction ------------------------------------------------------------------------
    def evict(self, target_bytes: int | None = None) -> int:
        """Drop LRU unlocked leaves until ``bytes <= target`` (default: the budget); returns count."""
        target = self.budget_bytes if target_bytes is None else target_bytes
        if self.bytes <= target:
            return 0
        heap = [(n.last_use, id(n), n) for n in self._nodes() if not n.children and n.lock == 0]
        heapq.heapify(heap)
        dropped = 0
        while self.bytes > target and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            del parent.children[leaf.tokens[0]]
            leaf.parent = None
            self.bytes -= leaf.nbytes
            self.evicted_tokens += len(leaf.tokens)
            dropped += 1
            if parent is not self.root and not parent.children and parent.lock == 0:
                heapq.heappush(heap, (parent.last_use, id(parent), parent))
        self.evictions += dropped
        return dropped

    def clear(self) -> None:
        """Forget everything that is not locked."""
        self.evict(0)

    # -- introspection -------------------------------------------------------------------
    def _nodes(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    @property
    def num_nodes(self) -> int:
        return sum(1 for _ in self._nodes())

    @property
    def num_tokens(self) -> int:
        return sum(len(n.tokens) for n in self._nodes())

    def sequences(self) -> list[tuple[int, ...]]:
        """Every root-to-leaf token sequence held (tests and debugging)."""
        out, stack = [], [(self.root, ())]
        while stack:
            node, prefix = stack.pop()
            prefix = prefix + node.tokens
            if not node.children and node is not self.root:
                out.append(prefix)
            stack.extend((c, prefix) for c in node.children.values())
        return sorted(out)

    def check(self) -> None:
        """Assert the structural invariants (tests): keys, parents, byte count, no empty nodes."""
        total = 0
        for node in self._nodes():
            assert node.tokens, "empty node"
            assert node.parent.children[node.tokens[0]] is node, "broken parent link"
            assert node.kv.shape[self.token_axis] == len(node.tokens), "payload length"
            assert node.nbytes == _nbytes(node.kv) + _nbytes(node.end)
            assert node.lock >= 0
            total += node.nbytes
        assert total == self.bytes, f"byte count {self.bytes} != held {total}"

    def __repr__(self) -> str:
        return (
            f"RadixCache(nodes={self.num_nodes}, tokens={self.num_tokens}, bytes={self.bytes}, "
            f"budget={self.budget_bytes}, evictions={self.evictions})"
        )
