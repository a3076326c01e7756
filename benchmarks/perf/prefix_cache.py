"""The prefix cache measured: TransformersBackend's radix cache vs recomputing, side by side.

    result = measure(BenchConfig(), threads=1)       # the full run (~3 min on a loaded 2-core box)
    result = measure(QUICK, threads=1)               # tiny models, short episodes (a smoke run)
    # the command: ttsearch bench prefix-cache [--quick] --json   (benchmarks/cli/bench_prefix_cache_cmd.py)

One run, one JSON object:

(a) ``scoring``: K candidates (8 tokens each) scored after a random prefix of 64…2048 tokens,
    cached (the prefix is in the tree; one ``score`` call) vs uncached (a plain full forward of
    prefix + candidate per candidate), K ∈ {4, 16}, interleaved so both see the same load.
    ``ideal_ratio`` = tokens that must be computed (the candidates' fed tokens) ÷ tokens
    computed without a cache.
(b) ``beam``: one ``search.Beam`` episode (width 2, 4 candidates per beam, progress-advantage
    step scores from policy + reference) on the maze with full history and on a long-context
    maze (a ~1000-token mission briefing, then short turns), run with uncached engines
    (``cache_bytes=0``), cached engines, and a naive loop that calls ``model.generate`` per
    candidate and a full forward per scored candidate. All three draw the same counter-based
    samples, so the search must come out identical (``same_results``).
(c) ``memory``: the trees' bytes against the per-engine budget (small enough to force
    evictions), and process RSS sampled during the uncached and the cached episodes.
(d) ``overhead_frac``: the share of the cached episodes' wall time spent outside model forward
    passes, timed by forward hooks on both models (every forward, decode steps included);
    ``overhead_frac_cpu`` is the same with process CPU time.

Models are random-init float32 Qwen2-style (hidden 256, 4 layers, MLP 3072, so that the
linear layers dominate a forward as they do in real LLMs); the tokenizer is trained on maze text. Wall and process-CPU seconds are both
reported, with the load average: the machine may be shared. ``--threads 1`` (the default) is
the setting to use on a loaded machine; idle cores can take more.
"""

from __future__ import annotations

import gc
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ttsearch.agents.base import ScoreRequest
from ttsearch.agents.engines.transformers.backend import TransformersBackend
from ttsearch.benchmarks.perf.prefix_cache_beam import beam_part, clock, progress, rss_bytes, since
from ttsearch.envs.maze.env import SYSTEM_PROMPT
from ttsearch.envs.maze.layout import describe, generate_layout
from ttsearch.training.tiny_model import make_model, train_tokenizer


@dataclass(frozen=True, slots=True)
class BenchConfig:
    prefix_lens: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    ks: tuple[int, ...] = (4, 16)
    candidate_len: int = 8
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    mlp: int = 3072
    width: int = 2
    expand: int = 4
    max_new_tokens: int = 4
    """A maze move is a word and the end-of-turn token; the random models never stop early."""
    maze_steps: int = 10
    long_steps: int = 6
    briefing_words: int = 700
    budget_mb: float = 12.0
    """Cache budget per engine in the beam episodes (the scoring sweep gets room for its prefix)."""
    seed: int = 0


QUICK = BenchConfig(
    prefix_lens=(64, 256),
    ks=(4,),
    hidden=64,
    layers=2,
    mlp=256,
    maze_steps=3,
    long_steps=2,
    briefing_words=60,
    budget_mb=1.0,
)


def scoring_sweep(model: Any, vocab: int, cfg: BenchConfig) -> list[dict[str, Any]]:
    """(a): per (prefix length, K), the cached ``score`` call vs K plain full forwards.

    The K uncached forwards are interleaved with K cached calls (each on fresh candidates, so
    nothing of them is cached), so both see the same machine load: ``cached_s`` is the median
    cached call, ``uncached_s`` K times the median forward (``uncached_sum_s``: their actual
    sum). Every uncached log-prob is compared with the cached one for the same candidate.
    """

    gen = torch.Generator().manual_seed(cfg.seed)
    rand = lambda n: tuple(torch.randint(0, vocab, (n,), generator=gen).tolist())  # noqa: E731
    rows, m = [], cfg.candidate_len
    for prefix_len in cfg.prefix_lens:
        prefix = rand(prefix_len)
        backend = TransformersBackend(model, cache_bytes=1 << 30)
        backend.score([ScoreRequest(prefix, rand(m))])  # the prefix enters the tree
        for k in cfg.ks:
            cached, uncached, diff = [], [], 0.0
            for j in range(k):
                conts = [rand(m) for _ in range(k)]
                start = clock()
                scores = backend.score([ScoreRequest(prefix, c) for c in conts])
                cached.append(since(start))
                computed = backend.last_call.computed_tokens
                c = conts[j]
                start = clock()
                with torch.inference_mode():
                    logits = model(torch.tensor([prefix + c[:-1]]), logits_to_keep=m).logits[0]
                uncached.append(since(start))
                lp = logits.float().log_softmax(-1).gather(1, torch.tensor(c)[:, None])[:, 0]
                diff = max(diff, (lp - torch.tensor(scores[j].logprobs)).abs().max().item())
            # medians on both sides: a load spike on this shared machine moves neither
            c_wall, c_cpu = (_median([x[i] for x in cached]) for i in (0, 1))
            u_wall, u_cpu = (k * _median([x[i] for x in uncached]) for i in (0, 1))
            u_sum = sum(w for w, _ in uncached)
            ideal = k * (m - 1) / (k * (prefix_len + m - 1))
            rows.append(
                {
                    "prefix_len": prefix_len,
                    "k": k,
                    "cached_s": c_wall,
                    "uncached_s": u_wall,
                    "ratio": c_wall / u_wall,
                    "ideal_ratio": ideal,
                    "ratio_over_ideal": c_wall / u_wall / ideal,
                    "cached_cpu_s": c_cpu,
                    "uncached_cpu_s": u_cpu,
                    "ratio_cpu": c_cpu / u_cpu,
                    "computed_tokens": computed,
                    "uncached_tokens": k * (prefix_len + m - 1),
                    "uncached_sum_s": u_sum,
                    "max_abs_logprob_diff": diff,
                }
            )
            progress(f"  prefix {prefix_len} K={k}: {c_wall / u_wall / ideal:.2f} x ideal")
    return rows


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def bench_tokenizer():
    """The bench models' tokenizer, trained on maze text (and a sensor-log filler for long prompts)."""
    texts = [SYSTEM_PROMPT] * 5
    for seed in range(40):
        layout = generate_layout(seed)
        texts += [describe(layout, cell) for cell in layout.free_cells[:3]]
    texts += [
        "Sensor log: sensor reading nominal drift battery signal echo dust calibrated latency ok"
    ] * 20
    texts += ["Invalid action. Valid actions: north, east, south, west."] * 10
    return train_tokenizer(texts, vocab_size=600)


def _warm_up(tok: Any, cfg: BenchConfig) -> None:
    """Run every code path once (engines, generate, search, scorers) on a tiny model, so that
    one-time imports and allocations are neither timed nor counted as memory growth."""

    model = make_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32)
    tiny = replace(QUICK, maze_steps=1, long_steps=1, briefing_words=5)
    beam_part(tok, model, model, tiny, generate=True, quiet=True)
    del model
    gc.collect()


def model_shape(cfg: BenchConfig) -> dict[str, int]:
    """``make_model`` arguments of the bench's random float32 Qwen2-style models."""
    return dict(hidden_size=cfg.hidden, num_layers=cfg.layers, num_heads=cfg.heads,
                intermediate_size=cfg.mlp, max_position_embeddings=4096)


def measure(cfg: BenchConfig, *, threads: int, generate: bool = True) -> dict[str, Any]:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    start = clock()
    tok = bench_tokenizer()
    shape = model_shape(cfg)
    progress("warming up")
    _warm_up(tok, cfg)
    rss_base = rss_bytes()  # libraries loaded and warmed, no models yet
    policy, reference = make_model(tok, seed=1, **shape), make_model(tok, seed=2, **shape)
    model_bytes = sum(
        p.numel() * p.element_size() for m in (policy, reference) for p in m.parameters()
    )
    beam, memory = beam_part(tok, policy, reference, cfg, generate=generate)
    progress("scoring sweep")
    scoring = scoring_sweep(policy, len(tok), cfg)
    budget_total = 2 * memory["budget_bytes_per_engine"]
    peaks = memory.pop("rss_peak_bytes")
    memory.update(
        {
            "rss_base_bytes": rss_base,
            "model_bytes": model_bytes,
            "rss_peak_bytes_uncached": peaks["uncached"],
            "rss_peak_bytes_cached": peaks["cached"],
            "rss_extra_for_cache_bytes": peaks["cached"] - peaks["uncached"],
            "rss_growth_cached_bytes": peaks["cached"] - rss_base,
            "trees_within_budget": memory["tree_bytes_after_calls_max"]
            <= memory["budget_bytes_per_engine"],
            # the cache may cost its budget (two engines) over the same search without it
            "cache_memory_within_budget": peaks["cached"] - peaks["uncached"] <= budget_total,
        }
    )
    memory["rss_growth_within_models_plus_budget"] = (
        memory["rss_growth_cached_bytes"] <= model_bytes + budget_total
    )
    at = [r for r in scoring if r["prefix_len"] == 1024 and r["k"] == 16]
    wall, cpu = since(start)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "threads": threads,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "torch": torch.__version__,
        },
        "model": {"arch": "qwen2", "dtype": "float32", **shape, "vocab": len(tok)},
        "config": asdict(cfg),
        "scoring": scoring,
        "beam": beam,
        "memory": memory,
        "targets": {
            "scoring_1024_k16_ratio_over_ideal": at[0]["ratio_over_ideal"] if at else None,
            "scoring_ok": bool(at) and at[0]["ratio"] <= 1.5 * at[0]["ideal_ratio"],
            "beam_vs_uncached_ok": beam["speedup_vs_uncached"] >= 3,
            "beam_vs_generate_ok": generate and beam["speedup_vs_generate"] >= 5,
            "same_results": beam["same_results"],
            "overhead_ok": beam["overhead_frac"] < 0.10,
            "memory_ok": memory["trees_within_budget"] and memory["cache_memory_within_budget"],
        },
        "total_wall_s": wall,
        "total_cpu_s": cpu,
    }
