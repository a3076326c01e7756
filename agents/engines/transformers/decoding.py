"""Decoding several ``sample`` calls together: one forward per step for every live sample.

    out, costs = decode(runner, [SampleCall(prompts_a, 8, params_a), SampleCall(prompts_b, 4, params_b)],
                        eos=(2,), vocab_size=32000)
    out[0][i][j]            # sample j of prompt i of the first call (a Sample)

Calls may differ in everything: n, seed, temperature / top-p / top-k, max_new_tokens, stop ids,
top_logprobs. Each sample draws from its own counter-based stream, keyed by its call's seed and
its place in that call (prompt index, copy index), so it gets exactly the tokens it would get in a
call of its own, whatever else is decoded beside it (log-probs agree to float rounding). Identical
prompts of different calls share one row: their prefix is matched and run once. A call with
``full_logprobs`` also gets each generated position's whole log-prob row (the distribution the
token was drawn from, before temperature), float32 numpy [tokens, vocab].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ttsearch.agents.base import EngineStats, Sample, SamplingParams
from ttsearch.agents.engines.transformers.calls import SampleCall
from ttsearch.agents.engines.transformers.packed_rows import PackedRunner, Rows
from ttsearch.agents.engines.transformers.token_sampling import choose_tokens, stream_keys


@dataclass(slots=True)
class _Draws:
    """Every sample of the decode, in row order (a row's samples are adjacent)."""

    origin: list[tuple[int, int, int]]  # (call, prompt index, copy index)
    row: torch.Tensor
    branch: torch.Tensor  # 1.. within the row
    keys: torch.Tensor
    limit: torch.Tensor  # max_new_tokens
    stops: torch.Tensor  # [draws, S] stop ids, -1 padded
    groups: list[tuple[SamplingParams, torch.Tensor]]  # sampling settings -> the draws using them


def _plan(calls: Sequence[SampleCall], where: dict[tuple[int, ...], int], eos: Sequence[int],
          device: torch.device) -> _Draws:
    origin, keys, limit, stops, settings = [], [], [], [], []
    for c, call in enumerate(calls):
        params = call.params
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        call_keys = stream_keys(seed, len(call.prompts), call.n)
        stop = sorted({*params.stop_token_ids, *eos})
        for i in range(len(call.prompts)):
            for j in range(call.n):
                origin.append((c, i, j))
                keys.append(call_keys[i * call.n + j])
                limit.append(params.max_new_tokens)
                stops.append(stop)
                settings.append((params.temperature, params.top_p, params.top_k))
    rows = [where[calls[c].prompts[i]] for c, i, _ in origin]
    order = sorted(range(len(origin)), key=lambda d: (rows[d], d))
    branch, seen = [], {}
    for d in order:
        seen[rows[d]] = seen.get(rows[d], 0) + 1
        branch.append(seen[rows[d]])
    width = max(map(len, stops))
    stop_t = torch.full((len(order), width), -1, dtype=torch.long)
    for k, d in enumerate(order):
        stop_t[k, : len(stops[d])] = torch.tensor(stops[d], dtype=torch.long)
    by_setting: dict[tuple, list[int]] = {}
    for k, d in enumerate(order):
        by_setting.setdefault(settings[d], []).append(k)
    groups = [(SamplingParams(temperature=t, top_p=p, top_k=top_k), torch.tensor(ks, device=device))
              for (t, p, top_k), ks in by_setting.items()]
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return _Draws([origin[d] for d in order], as_tensor([rows[d] for d in order]), as_tensor(branch),
                  as_tensor([keys[d] for d in order]), as_tensor([limit[d] for d in order]),
                  stop_t.to(device), groups)


def _choose(logits: torch.Tensor, draws: _Draws, alive: torch.Tensor, step: int) -> torch.Tensor:
    """One token per live draw, each by its own call's sampling settings."""
    if len(draws.groups) == 1:
        return choose_tokens(logits, draws.groups[0][0], draws.keys[alive], step)
    chosen = torch.empty(len(alive), dtype=torch.long, device=logits.device)
    position = torch.full((len(draws.row),), -1, dtype=torch.long, device=logits.device)
    position[alive] = torch.arange(len(alive), device=logits.device)
    for params, members in draws.groups:
        mine = position[members]
        mine = mine[mine >= 0]
        if len(mine):
            chosen[mine] = choose_tokens(logits[mine], params, draws.keys[alive[mine]], step)
    return chosen


def decode(runner: PackedRunner, calls: Sequence[SampleCall], *, eos: Sequence[int],
           vocab_size: int) -> tuple[list[list[list[Sample]]], list[EngineStats]]:
    """Decode every call's samples together (module docstring); the samples and each call's cost."""
    unique = list(dict.fromkeys(p for call in calls for p in call.prompts))
    where = {p: r for r, p in enumerate(unique)}
    dev = runner.device
    draws = _plan(calls, where, eos, dev)
    steps = int(draws.limit.max())
    per_row = torch.bincount(draws.row, minlength=len(unique))
    rows, last, _ = runner.open(unique, [[] for _ in unique], (steps - 1) * int(per_row.max()))
    try:
        k = min(max(call.params.top_logprobs for call in calls), vocab_size)
        full = any(call.params.full_logprobs for call in calls)
        record = _run(runner, rows, draws, last, steps, k, full)
        conts: list[list] = [[] for _ in unique]
        for u, r in enumerate(draws.row.tolist()):  # fed tokens: all but the last
            m = record["lengths"][u] - 1
            conts[r].append((tuple(record["tokens"][u][:m]), record["slots"][u][:m]))
        runner.insert_continuations(rows, conts)
    finally:
        runner.release(rows)
    return _collect(calls, draws, record), _costs(calls, unique, rows, draws, record)


def _run(runner: PackedRunner, rows: Rows, draws: _Draws, last: torch.Tensor, steps: int, k: int,
         full: bool = False) -> dict:
    """The decode loop; per draw (row order): tokens, log-probs, top log-probs, slots, lengths
    (and with ``full`` every position's whole log-prob row)."""
    total, dev = len(draws.row), runner.device
    plen = torch.tensor([len(p) for p in rows.prompts], device=dev)
    tokens = torch.zeros(total, steps, dtype=torch.long, device=dev)
    logprobs = torch.zeros(total, steps, dtype=torch.float32, device=dev)
    tops = torch.zeros(total, steps, k, dtype=torch.float32, device=dev) if k else None
    rows_full = torch.zeros(total, steps, last.shape[-1], dtype=torch.float32, device=dev) if full else None
    slots = torch.zeros(total, steps, dtype=torch.long, device=dev)  # where each fed token sits
    lengths = torch.zeros(total, dtype=torch.long, device=dev)
    stopped = torch.zeros(total, dtype=torch.bool, device=dev)
    alive, logits, fed = torch.arange(total, device=dev), last[draws.row], 0
    for step in range(steps):
        logits = logits.float()
        logp = logits.log_softmax(-1)  # the model's own distribution, whatever the sampling
        chosen = _choose(logits, draws, alive, step)
        tokens[alive, step] = chosen
        logprobs[alive, step] = logp.gather(1, chosen[:, None])[:, 0]
        if tops is not None:
            tops[alive, step] = logp.topk(k, dim=-1).values
        if rows_full is not None:
            rows_full[alive, step] = logp
        lengths[alive] = step + 1
        hit = (chosen[:, None] == draws.stops[alive]).any(1)
        stopped[alive[hit]] = True
        keep = ~hit & (draws.limit[alive] > step + 1)
        if not bool(keep.any()):
            break
        alive, chosen = alive[keep], chosen[keep]
        # each live draw gets one slot in its row: column = its rank within the row
        r_a = draws.row[alive]
        counts = torch.bincount(r_a, minlength=len(rows.prompts))
        cols = torch.arange(len(alive), device=dev) - (counts.cumsum(0) - counts)[r_a]
        shape = (len(rows.prompts), int(counts.max()))
        ids, ok = torch.zeros(shape, dtype=torch.long, device=dev), torch.zeros(shape, dtype=torch.bool, device=dev)
        at, br = torch.zeros_like(ids), torch.zeros_like(ids)
        ids[r_a, cols], ok[r_a, cols] = chosen, True
        at[r_a, cols], br[r_a, cols] = plen[r_a] + step, draws.branch[alive]
        slots[alive, step] = rows.length + cols
        logits = runner.extend(rows, ids, ok, at, br)[r_a, cols]
        fed += len(alive)
    return {"tokens": tokens.tolist(), "logprobs": logprobs.tolist(), "lengths": lengths.tolist(),
            "tops": tops.tolist() if tops is not None else None, "stopped": stopped.tolist(),
            "full": rows_full.cpu().numpy() if rows_full is not None else None,
            "slots": slots.tolist(), "fed": fed}


def _collect(calls: Sequence[SampleCall], draws: _Draws, record: dict) -> list[list[list[Sample]]]:
    out = [[[None] * call.n for _ in call.prompts] for call in calls]
    for u, (c, i, j) in enumerate(draws.origin):
        m, k = record["lengths"][u], calls[c].params.top_logprobs
        top = None
        if k:
            top = tuple(tuple(v[:k]) for v in record["tops"][u][:m])
        full = record["full"][u, :m].copy() if calls[c].params.full_logprobs else None
        out[c][i][j] = Sample(token_ids=tuple(record["tokens"][u][:m]), logprobs=tuple(record["logprobs"][u][:m]),
                              top_logprobs=top, finish_reason="stop" if record["stopped"][u] else "length",
                              full_logprobs=full)
    return out  # type: ignore[return-value]


def _costs(calls: Sequence[SampleCall], unique: list[tuple[int, ...]], rows: Rows, draws: _Draws,
           record: dict) -> list[EngineStats]:
    """Each call's share: its own prompts and samples; a row's prefill is charged to the first
    call that reads it (later calls of the batch see it as cached), each fed token to its call."""
    costs = [EngineStats(calls=1) for _ in calls]
    charged: set[int] = set()
    where = {p: r for r, p in enumerate(unique)}
    for c, call in enumerate(calls):
        cost = costs[c]
        cost.prompt_tokens = call.n * sum(map(len, call.prompts))
        prefill = 0
        for p in call.prompts:
            r = where[p]
            if r not in charged:
                charged.add(r)
                prefill += len(p) - rows.cached[r]
        cost.cached_tokens = cost.prompt_tokens - prefill
        cost.computed_tokens = prefill
    for u, (c, _, _) in enumerate(draws.origin):
        costs[c].generated_tokens += record["lengths"][u]
        costs[c].computed_tokens += max(record["lengths"][u] - 1, 0)  # every token but the last was fed
    return costs
