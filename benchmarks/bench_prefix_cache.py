"""The prefix cache measured: TransformersBackend's radix cache vs recomputing, side by side.

    ttsearch bench prefix-cache --json               # the full run (a few minutes on 2 cores)
    ttsearch bench prefix-cache --quick --json       # small sweep, short episodes (a smoke run)

One run, one JSON object:

(a) ``scoring``: K candidates (8 tokens each) scored after a random prefix of 64…2048 tokens,
    cached (the prefix is in the tree; one ``score`` call) vs uncached (a plain full forward of
    prefix + candidate, per candidate), K ∈ {4, 16}. ``ideal_ratio`` = tokens that must be
    computed (the candidates' fed tokens) ÷ tokens computed without a cache.
(b) ``beam``: one ``search.Beam`` episode (progress-advantage scoring, policy + reference) on the
    maze with full history and on a long-context maze (every observation carries a ~300-token
    sensor log), run three ways: cached engines, uncached engines (``cache_bytes=0``), and a
    naive loop that calls ``model.generate`` per candidate and a full forward per scored
    candidate (the same counter-based sampling, so the search must come out identical).
(c) ``memory``: the trees' bytes against the configured budget, process RSS against the models
    plus the budget (sampled during the cached episodes).
(d) ``overhead_frac``: the share of the cached episodes' wall time spent outside model forward
    passes, timed by forward hooks on both models (every forward, decode steps included).

Models are random-init float32 Qwen2-style (hidden 256, 4 layers, MLP 2048: forward passes
dominate); the tokenizer is trained on maze text. Wall and process-CPU seconds are both
reported, with the load average, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from ttsearch.envs.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BenchConfig:
    prefix_lens: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    ks: tuple[int, ...] = (4, 16)
    candidate_len: int = 8
    repeats: int = 3
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    mlp: int = 2048
    width: int = 2
    expand: int = 4
    max_new_tokens: int = 4
    """A maze move is a word and the end-of-turn token; the random models never stop early."""
    maze_steps: int = 10
    long_steps: int = 6
    briefing_words: int = 700
    budget_mb: float = 16.0
    """Cache budget per engine in the beam episodes (the scoring sweep gets room for its prefix)."""
    seed: int = 0


QUICK = BenchConfig(
    prefix_lens=(64, 256),
    ks=(4,),
    repeats=1,
    hidden=64,
    layers=2,
    mlp=256,
    maze_steps=3,
    long_steps=2,
    briefing_words=60,
    budget_mb=1.0,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quick", action="store_true", help="a small, fast configuration (smoke run)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine more threads only wait for each other)",
    )
    parser.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="cache budget per engine in the beam episodes (default 16)",
    )
    parser.add_argument(
        "--no-generate", action="store_true", help="skip the naive model.generate baseline"
    )


_T0 = time.perf_counter()


def _progress(message: str) -> None:
    import sys

    print(
        f"[prefix-cache {time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True
    )


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


# -- (a) scoring K candidates after a prefix --------------------------------------------------
def scoring_sweep(model: Any, vocab: int, cfg: BenchConfig) -> list[dict[str, Any]]:
    import torch

    from ttsearch.agents.base import ScoreRequest
    from ttsearch.agents.transformers_backend import TransformersBackend

    gen = torch.Generator().manual_seed(cfg.seed)
    rand = lambda n: tuple(torch.randint(0, vocab, (n,), generator=gen).tolist())  # noqa: E731
    rows, m = [], cfg.candidate_len
    for prefix_len in cfg.prefix_lens:
        prefix = rand(prefix_len)
        backend = TransformersBackend(model, cache_bytes=1 << 30)
        backend.score([ScoreRequest(prefix, rand(m))])  # the prefix enters the tree
        for k in cfg.ks:
            walls, cpus, diff = [], [], 0.0
            for rep in range(cfg.repeats):  # fresh candidates each time: nothing of them is cached
                conts = [rand(m) for _ in range(k)]
                start = _clock()
                cached = backend.score([ScoreRequest(prefix, c) for c in conts])
                wall, cpu = _since(start)
                walls.append(wall)
                cpus.append(cpu)
                computed = backend.last_call.computed_tokens
                if rep == 0:  # the uncached baseline: a full forward of prefix + candidate, each
                    start = _clock()
                    with torch.inference_mode():
                        for c, got in zip(conts, cached, strict=True):
                            logits = model(
                                torch.tensor([prefix + c[:-1]]), logits_to_keep=m
                            ).logits[0]
                            lp = (
                                logits.float()
                                .log_softmax(-1)
                                .gather(1, torch.tensor(c)[:, None])[:, 0]
                            )
                            diff = max(diff, (lp - torch.tensor(got.logprobs)).abs().max().item())
                    u_wall, u_cpu = _since(start)
            c_wall, c_cpu = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]  # medians
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
                    "max_abs_logprob_diff": diff,
                }
            )
    return rows


# -- (b) beam episodes ------------------------------------------------------------------------
def _briefing_maze_class():
    from ttsearch.envs.base import Env, Observation, StepResult
    from ttsearch.envs.maze import SYSTEM_PROMPT, SlipperyMaze

    words = (
        "sensor",
        "reading",
        "nominal",
        "drift",
        "battery",
        "signal",
        "north",
        "east",
        "south",
        "west",
        "wall",
        "pit",
        "goal",
        "echo",
        "dust",
        "calibrated",
        "latency",
        "ok",
    )

    class BriefingMaze(Env):
        """The slippery maze behind a long mission briefing: a long-context text environment.

        The first observation carries a ~1000-token synthetic briefing (a sensor log); every
        later turn is a short maze observation, so the context stays long and mostly shared.
        """

        deterministic = True
        system_prompt = SYSTEM_PROMPT + " Read the mission briefing first."

        def __init__(self, layout_seed: int = 3, *, max_steps: int = 6, briefing_words: int = 700):
            self.inner = SlipperyMaze(layout_seed, max_steps=max_steps)
            h, log = 17, []
            for i in range(briefing_words):
                h = (h * 1103515245 + 12345) % 2**31
                log.append(
                    f"{words[h % len(words)]} {h % 97}" if i % 9 == 0 else words[h % len(words)]
                )
            self.briefing = "Mission briefing (sensor log): " + " ".join(log) + ".\n\n"

        def reset(self, *, seed: int | None = None) -> Observation:
            obs = self.inner.reset(seed=seed)
            return Observation(self.briefing + obs.text, obs.admissible_actions, obs.info)

        def step(self, action: str) -> StepResult:
            return self.inner.step(action)

        def snapshot(self) -> Any:
            return self.inner.snapshot()

        def restore(self, snapshot: Any) -> None:
            self.inner.restore(snapshot)

    return BriefingMaze


class ForwardClock:
    """Wall time spent inside the models' forward passes (hooks on the top-level modules)."""

    def __init__(self, models: list[Any]):
        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        self._handles = []
        for model in models:
            self._handles.append(model.register_forward_pre_hook(self._pre))
            self._handles.append(model.register_forward_hook(self._post))

    def _pre(self, *_):
        self._start = time.perf_counter()

    def _post(self, *_):
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class RssSampler:
    """Peak resident memory of this process, sampled every few milliseconds in a thread."""

    def __init__(self, every: float = 0.005):
        import threading

        self.peak, self._stop, self._every = rss_bytes(), threading.Event(), every
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_episode(
    agent: Any, env_factory: Any, task: Any, cfg: BenchConfig, steps: int, models: list[Any]
) -> dict[str, Any]:
    """One beam-search episode; its result, wall/CPU time and time inside forward passes."""
    from ttsearch.scorers import make_scorer
    from ttsearch.search import Beam, Budget

    beam = Beam(width=cfg.width, expand=cfg.expand, seed=cfg.seed, max_steps=steps)
    clock = ForwardClock(models)
    start = _clock()
    try:
        result = beam.run(task, env_factory, agent, make_scorer("progress_advantage"), Budget())
    finally:
        clock.close()
    wall, cpu = _since(start)
    traj = result.trajectory
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "forward_s": clock.seconds,
        "forwards": clock.calls,
        "overhead_frac": 1.0 - clock.seconds / wall,
        "stop_reason": result.stop_reason,
        "actions": list(traj.actions),
        "generated": [list(s.generated_token_ids) for s in traj.steps],
        "score": result.score,
        "nodes": len(result.tree),
        "usage": asdict(result.usage),
    }


def _same(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-4) -> bool:
    return (
        a["actions"] == b["actions"]
        and a["generated"] == b["generated"]
        and a["nodes"] == b["nodes"]
        and a["score"] is not None
        and b["score"] is not None
        and abs(a["score"] - b["score"]) <= tol
    )


def beam_part(
    tok: Any, policy: Any, reference: Any, cfg: BenchConfig, *, generate: bool, quiet: bool = False
) -> tuple[dict, dict]:
    """Beam episodes on both envs with each engine kind; (beam summary, memory figures)."""
    from ttsearch.agents import Agent, ModelPair, SamplingParams
    from ttsearch.agents.transformers_backend import TransformersBackend
    from ttsearch.benchmarks.naive_generate import NaiveGenerateBackend
    from ttsearch.envs.base import Task
    from ttsearch.envs.maze import SlipperyMaze

    budget = int(cfg.budget_mb * 2**20)
    briefing_maze = _briefing_maze_class()
    envs = {
        "maze": (lambda: SlipperyMaze(3, max_steps=cfg.maze_steps), cfg.maze_steps),
        "long_context": (
            lambda: briefing_maze(3, max_steps=cfg.long_steps, briefing_words=cfg.briefing_words),
            cfg.long_steps,
        ),
    }
    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=1.0)

    def engines(kind: str):
        if kind == "generate":
            return NaiveGenerateBackend(policy), NaiveGenerateBackend(reference)
        size = budget if kind == "cached" else 0
        return (
            TransformersBackend(policy, name="policy", cache_bytes=size),
            TransformersBackend(reference, name="reference", cache_bytes=size),
        )

    episodes: dict[str, dict[str, Any]] = {}
    memory: dict[str, Any] = {
        "budget_bytes_per_engine": budget,
        "tree_peak_bytes": 0,
        "tree_bytes_after_calls_max": 0,
        "workspace_bytes": 0,
        "rss_peak_bytes": {},
    }
    # uncached first: the cached run's extra resident memory over it is then what the cache costs
    kinds = ["uncached", "cached"] + (["generate"] if generate else [])
    for kind in kinds:
        for name, (factory, steps) in envs.items():
            if not quiet:
                _progress(f"beam episode: {name}, {kind}")
            pol, ref = engines(kind)
            agent = Agent(ModelPair(pol, ref, tok), sampling=sampling)
            with RssSampler() as sampler:
                out = run_episode(
                    agent, factory, Task(name, "bench", seed=0), cfg, steps, [policy, reference]
                )
            memory["rss_peak_bytes"][kind] = max(
                memory["rss_peak_bytes"].get(kind, 0), sampler.peak
            )
            if kind == "cached":
                out["policy_stats"], out["reference_stats"] = asdict(pol.stats), asdict(ref.stats)
                memory["tree_peak_bytes"] = max(
                    memory["tree_peak_bytes"], pol.cache.peak_bytes, ref.cache.peak_bytes
                )
                memory["tree_bytes_after_calls_max"] = max(
                    memory["tree_bytes_after_calls_max"],
                    pol.stats.cache_bytes,
                    ref.stats.cache_bytes,
                )
            if kind != "generate":
                memory["workspace_bytes"] = max(
                    memory["workspace_bytes"],
                    pol.runner.workspace_bytes + ref.runner.workspace_bytes,
                )
            episodes.setdefault(name, {})[kind] = out
    total = {kind: sum(episodes[name][kind]["wall_s"] for name in envs) for kind in kinds}
    fwd = sum(episodes[name]["cached"]["forward_s"] for name in envs)
    beam = {
        "speedup_vs_uncached": total["uncached"] / total["cached"],
        "speedup_vs_generate": total["generate"] / total["cached"] if generate else None,
        "overhead_frac": 1.0 - fwd / total["cached"],
        "same_results": all(
            _same(episodes[n]["cached"], episodes[n][k]) for n in envs for k in kinds
        ),
        "wall_s": total,
        "cpu_s": {kind: sum(episodes[name][kind]["cpu_s"] for name in envs) for kind in kinds},
        "settings": {
            "width": cfg.width,
            "expand": cfg.expand,
            "max_new_tokens": cfg.max_new_tokens,
            "steps": {name: steps for name, (_, steps) in envs.items()},
        },
        "episodes": {
            name: {
                **{kind: _brief(ep) for kind, ep in per.items()},
                **{
                    f"speedup_vs_{kind}": per[kind]["wall_s"] / per["cached"]["wall_s"]
                    for kind in kinds
                    if kind != "cached"
                },
            }
            for name, per in episodes.items()
        },
    }
    return beam, memory


def _brief(ep: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "wall_s",
        "cpu_s",
        "forward_s",
        "forwards",
        "overhead_frac",
        "stop_reason",
        "score",
        "nodes",
        "actions",
        "policy_stats",
        "reference_stats",
    )
    usage = ep["usage"]
    return {
        **{k: ep[k] for k in keep if k in ep},
        "prompt_tokens": usage["prompt_tokens"],
        "cached_tokens": usage["cached_tokens"],
        "computed_tokens": usage["computed_tokens"],
    }


def _tokenizer():
    from ttsearch.agents.tiny_model import train_tokenizer
    from ttsearch.envs.maze import SYSTEM_PROMPT, describe, generate_layout

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
    import gc

    from ttsearch.agents.tiny_model import make_model

    model = make_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32)
    tiny = replace(QUICK, maze_steps=1, long_steps=1, briefing_words=5)
    beam_part(tok, model, model, tiny, generate=True, quiet=True)
    del model
    gc.collect()


def measure(cfg: BenchConfig, *, threads: int, generate: bool = True) -> dict[str, Any]:
    import torch

    from ttsearch.agents.tiny_model import make_model

    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    start = _clock()
    tok = _tokenizer()
    shape = dict(
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        num_heads=cfg.heads,
        intermediate_size=cfg.mlp,
        max_position_embeddings=4096,
    )
    _progress("warming up")
    _warm_up(tok, cfg)
    rss_base = rss_bytes()  # libraries loaded and warmed, no models yet
    policy, reference = make_model(tok, seed=1, **shape), make_model(tok, seed=2, **shape)
    model_bytes = sum(
        p.numel() * p.element_size() for m in (policy, reference) for p in m.parameters()
    )
    beam, memory = beam_part(tok, policy, reference, cfg, generate=generate)
    _progress("scoring sweep")
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
    wall, cpu = _since(start)
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


def main(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    cfg = QUICK if args.quick else BenchConfig()
    if args.budget_mb is not None:
        if args.budget_mb <= 0:
            raise ConfigError(f"--budget-mb must be > 0, got {args.budget_mb}")
        cfg = replace(cfg, budget_mb=args.budget_mb)
    result = measure(cfg, threads=args.threads, generate=not args.no_generate)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"scoring (cached vs full recompute per candidate), load {result['machine']['load_before']}"
    )
    for r in result["scoring"]:
        print(
            f"  prefix {r['prefix_len']:5d}  K={r['k']:2d}  cached {r['cached_s']:.4f}s  uncached "
            f"{r['uncached_s']:.3f}s  ratio {r['ratio']:.4f}  ideal {r['ideal_ratio']:.4f}"
        )
    b = result["beam"]
    print(
        f"beam: {b['speedup_vs_uncached']:.2f}x vs uncached, {b['speedup_vs_generate'] or float('nan'):.2f}x vs "
        f"generate, overhead {b['overhead_frac']:.1%}, same results: {b['same_results']}"
    )
    print(f"targets: {result['targets']}")
    return 0
