"""Scoring several ``score`` calls together: every continuation a branch of its prefix's row.

    results, costs = score_calls(runner, [requests_a, requests_b], vocab_size=32000)
    results[0][i].logprobs      # log p(continuation token t | prefix, earlier tokens), request i of call 0

Each distinct prefix is one row (matched in the radix tree, its uncached tail run once); each
distinct (prefix, continuation) is one branch of that row whose tokens but the last are fed, all
in one forward. Requests with an empty continuation score nothing and cost nothing. A request
with ``full_logprobs`` also gets each position's whole log-prob row (float32 numpy, [tokens,
vocab]) from the same logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ttsearch.agents.base import EngineStats, ScoreRequest, TokenScores
from ttsearch.agents.engines.transformers.packed_rows import PackedRunner
from ttsearch.agents.engines.transformers.token_sampling import token_logprobs


def score_calls(runner: PackedRunner, calls: Sequence[Sequence[ScoreRequest]], *,
                vocab_size: int) -> tuple[list[list[TokenScores]], list[EngineStats]]:
    """Score every call's requests together (module docstring); the scores and each call's cost."""
    flat = [(c, i, req) for c, call in enumerate(calls) for i, req in enumerate(call) if req.continuation_ids]
    results: list[list[TokenScores | None]] = [
        [None if req.continuation_ids else _empty(req, vocab_size) for req in call] for call in calls]
    costs = [EngineStats(calls=1) for _ in calls]
    if not flat:
        return results, costs  # type: ignore[return-value]
    pairs = list(dict.fromkeys((req.prefix_ids, req.continuation_ids) for _, _, req in flat))
    unique = list(dict.fromkeys(p for p, _ in pairs))
    where = {p: r for r, p in enumerate(unique)}
    feeds: list[list] = [[] for _ in unique]
    place, offset = {}, [0] * len(unique)
    for prefix, cont in pairs:
        r = where[prefix]
        place[(prefix, cont)] = (r, offset[r])
        feeds[r].append((len(feeds[r]) + 1, cont[:-1]))
        offset[r] += len(cont) - 1
    rows, last, fed_logits = runner.open(unique, feeds, 0)
    try:
        logits = last[:, None] if fed_logits is None else torch.cat([last[:, None].to(fed_logits.dtype), fed_logits], 1)
        # kept column 0 predicts a continuation's first token; 1 + offset + t its token t + 1
        row_idx, col_idx, targets = [], [], []
        for prefix, cont in pairs:
            r, off = place[(prefix, cont)]
            row_idx += [r] * len(cont)
            col_idx += [0, *range(1 + off, off + len(cont))]
            targets += cont
        kmax = min(max(req.top_logprobs for _, _, req in flat), vocab_size)
        picked = logits[torch.tensor(row_idx, device=runner.device), torch.tensor(col_idx, device=runner.device)]
        lp, top = token_logprobs(picked.float(), torch.tensor(targets, device=runner.device), kmax)
        lp_list, top_list = lp.tolist(), top.tolist() if kmax else None
        rows_full = _full_rows(picked, pairs, {(r.prefix_ids, r.continuation_ids) for _, _, r in flat if r.full_logprobs})
        remembered: list[list] = [[] for _ in unique]
        for prefix, cont in pairs:
            r, off = place[(prefix, cont)]
            remembered[r].append((cont[:-1], [rows.prompt_end + off + t for t in range(len(cont) - 1)]))
        runner.insert_continuations(rows, remembered)
    finally:
        runner.release(rows)
    found, at = {}, 0
    for pair in pairs:
        found[pair] = (at, at + len(pair[1]))
        at += len(pair[1])
    for c, i, req in flat:
        a, b = found[(req.prefix_ids, req.continuation_ids)]
        top_k = None if not req.top_logprobs else tuple(tuple(v[: req.top_logprobs]) for v in top_list[a:b])
        full = rows_full[(req.prefix_ids, req.continuation_ids)] if req.full_logprobs else None
        results[c][i] = TokenScores(tuple(lp_list[a:b]), top_k, full)
    _charge(costs, flat, unique, rows.cached)
    return results, costs  # type: ignore[return-value]


def _empty(req: ScoreRequest, vocab_size: int) -> TokenScores:
    """An empty continuation's scores: no tokens, and no rows where rows were asked for."""
    full = np.zeros((0, vocab_size), dtype=np.float32) if req.full_logprobs else None
    return TokenScores((), () if req.top_logprobs else None, full)


def _full_rows(picked: torch.Tensor, pairs: list, wanted: set) -> dict:
    """Each wanted (prefix, continuation)'s whole log-prob rows, float32 numpy [tokens, vocab]
    (``picked`` holds every pair's rows in ``pairs`` order)."""
    out, at = {}, 0
    for pair in pairs:
        n = len(pair[1])
        if pair in wanted:
            out[pair] = picked[at:at + n].float().log_softmax(-1).cpu().numpy()
        at += n
    return out


def _charge(costs: list[EngineStats], flat, unique: list, cached: list[int]) -> None:
    """A prefix row's prefill is charged to the first request that reads it, a continuation's
    fed tokens to the first request that scores it; the rest reads them as cached."""
    where = {p: r for r, p in enumerate(unique)}
    charged_rows, charged_pairs = set(), set()
    for c, _, req in flat:
        cost, prefix, cont = costs[c], req.prefix_ids, req.continuation_ids
        cost.prompt_tokens += len(prefix)
        cost.scored_tokens += len(cont)
        r = where[prefix]
        prefill = 0 if r in charged_rows else len(prefix) - cached[r]
        charged_rows.add(r)
        cost.cached_tokens += len(prefix) - prefill
        cost.computed_tokens += prefill
        if (prefix, cont) not in charged_pairs:
            charged_pairs.add((prefix, cont))
            cost.computed_tokens += len(cont) - 1
