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
    max_new_tokens: int = 8
    maze_steps: int = 8
    long_steps: int = 5
    log_words: int = 160
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
    log_words=40,
    budget_mb=1.0,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quick", action="store_true", help="a small, fast configuration (smoke run)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="cache budget per engine in the beam episodes (default 16)",
    )
    parser.add_argument(
        "--no-generate", action="store_true", help="skip the naive model.generate baseline"
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
def _long_maze_class():
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

    class LongLogMaze(Env):
        """The slippery maze; every observation starts with a long synthetic sensor log."""

        deterministic = True
        system_prompt = SYSTEM_PROMPT + " Each turn starts with a sensor log you may ignore."

        def __init__(self, layout_seed: int = 3, *, max_steps: int = 5, log_words: int = 160):
            self.inner = SlipperyMaze(layout_seed, max_steps=max_steps)
            self.log_words, self._t = log_words, 0

        def _wrap(self, obs: Observation) -> Observation:
            h = (self._t * 7919 + 17) % 104729
            log = []
            for i in range(self.log_words):
                h = (h * 1103515245 + 12345) % 2**31
                log.append(
                    f"{words[h % len(words)]} {h % 97}" if i % 9 == 0 else words[h % len(words)]
                )
            text = "Sensor log: " + " ".join(log) + ".\n" + obs.text
            return Observation(text, obs.admissible_actions, obs.info)

        def reset(self, *, seed: int | None = None) -> Observation:
            self._t = 0
            return self._wrap(self.inner.reset(seed=seed))

        def step(self, action: str) -> StepResult:
            result = self.inner.step(action)
            self._t += 1
            return replace(result, observation=self._wrap(result.observation))

        def snapshot(self) -> Any:
            return (self.inner.snapshot(), self._t)

        def restore(self, snapshot: Any) -> None:
            inner, self._t = snapshot
            self.inner.restore(inner)

    return LongLogMaze


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
    tok: Any, policy: Any, reference: Any, cfg: BenchConfig, *, generate: bool
) -> tuple[dict, dict]:
    from ttsearch.agents import Agent, ModelPair, SamplingParams
    from ttsearch.agents.transformers_backend import TransformersBackend
    from ttsearch.benchmarks.naive_generate import NaiveGenerateBackend
    from ttsearch.envs.base import Task
    from ttsearch.envs.maze import SlipperyMaze

    budget = int(cfg.budget_mb * 2**20)
    long_maze = _long_maze_class()
    envs = {
        "maze": (lambda: SlipperyMaze(3, max_steps=cfg.maze_steps), cfg.maze_steps),
        "long_context": (
            lambda: long_maze(3, max_steps=cfg.long_steps, log_words=cfg.log_words),
            cfg.long_steps,
        ),
    }
    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=1.0)

    def engines(kind: str):
        if kind == "generate":
            return NaiveGenerateBackend(policy, name="policy"), NaiveGenerateBackend(
                reference, name="reference"
            )
        size = budget if kind == "cached" else 0
        return (
            TransformersBackend(policy, name="policy", cache_bytes=size),
            TransformersBackend(reference, name="reference", cache_bytes=size),
        )

    episodes: dict[str, dict[str, Any]] = {}
    memory: dict[str, Any] = {
        "budget_bytes_per_engine": budget,
        "tree_peak_bytes": {},
        "tree_bytes_after_calls_max": {},
    }
    kinds = ["cached", "uncached"] + (["generate"] if generate else [])
    for kind in kinds:
        for name, (factory, steps) in envs.items():
            pol, ref = engines(kind)
            agent = Agent(ModelPair(pol, ref, tok), sampling=sampling)
            task = Task(name, "bench", seed=0)
            sampler = RssSampler()
            with sampler:
                out = run_episode(agent, factory, task, cfg, steps, [policy, reference])
            out["rss_peak_bytes"] = sampler.peak
            if kind == "cached":
                out["policy_stats"], out["reference_stats"] = asdict(pol.stats), asdict(ref.stats)
                memory["tree_peak_bytes"][name] = max(pol.cache.peak_bytes, ref.cache.peak_bytes)
                memory["tree_bytes_after_calls_max"][name] = max(pol.cache.bytes, ref.cache.bytes)
                memory["workspace_bytes"] = max(
                    memory.get("workspace_bytes", 0),
                    *(e.runner.workspace_bytes for e in (pol, ref)),
                )
            episodes.setdefault(name, {})[kind] = out
    total = {kind: sum(episodes[name][kind]["wall_s"] for name in envs) for kind in kinds}
    fwd = sum(episodes[name]["cached"]["forward_s"] for name in envs)
    same = all(
        _same(episodes[name]["cached"], episodes[name][kind]) for name in envs for kind in kinds
    )
    beam = {
        "speedup_vs_uncached": total["uncached"] / total["cached"],
        "speedup_vs_generate": total["generate"] / total["cached"] if generate else None,
        "overhead_frac": 1.0 - fwd / total["cached"],
        "same_results": same,
        "wall_s": total,
        "settings": {
            "width": cfg.width,
            "expand": cfg.expand,
            "max_new_tokens": cfg.max_new_tokens,
            "steps": {name: steps for name, (_, steps) in envs.items()},
        },
        "episodes": {
            name: {
                **{kind: _brief(ep) for kind, ep in per.items()},
                "speedup_vs_uncached": per["uncached"]["wall_s"] / per["cached"]["wall_s"],
                **(
                    {"speedup_vs_generate": per["generate"]["wall_s"] / per["cached"]["wall_s"]}
                    if generate
                    else {}
                ),
            }
            for name, per in episodes.items()
        },
    }
    memory["rss_peak_bytes_cached"] = max(
        episodes[name]["cached"]["rss_peak_bytes"] for name in envs
    )
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


def _warm_up(tok: Any) -> None:
    """Load every lazily imported code path once (forward, generate), so RSS growth is ours."""
    import gc

    import torch

    from ttsearch.agents.base import SamplingParams, ScoreRequest
    from ttsearch.agents.tiny_model import make_model
    from ttsearch.agents.transformers_backend import TransformersBackend
    from ttsearch.benchmarks.naive_generate import NaiveGenerateBackend

    model = make_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32)
    for engine in (TransformersBackend(model), NaiveGenerateBackend(model)):
        engine.sample([(1, 2, 3)], n=2, params=SamplingParams(max_new_tokens=2, seed=0))
        engine.score([ScoreRequest((1, 2, 3), (4, 5))])
    del model, engine
    gc.collect()
    torch.set_num_threads(torch.get_num_threads())


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
    _warm_up(tok)
    rss_base = rss_bytes()  # libraries loaded and warmed, no models yet
    policy, reference = make_model(tok, seed=1, **shape), make_model(tok, seed=2, **shape)
    model_bytes = sum(
        p.numel() * p.element_size() for m in (policy, reference) for p in m.parameters()
    )
    beam, memory = beam_part(tok, policy, reference, cfg, generate=generate)
    scoring = scoring_sweep(policy, len(tok), cfg)
    budget_total = 2 * memory["budget_bytes_per_engine"]
    grown = memory["rss_peak_bytes_cached"] - rss_base
    memory.update(
        {
            "rss_base_bytes": rss_base,
            "model_bytes": model_bytes,
            "rss_growth_bytes": grown,
            "trees_within_budget": all(
                v <= memory["budget_bytes_per_engine"]
                for v in memory["tree_bytes_after_calls_max"].values()
            ),
            "rss_growth_within_models_plus_budget": grown <= model_bytes + budget_total,
        }
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
            "memory_ok": memory["trees_within_budget"]
            and memory["rss_growth_within_models_plus_budget"],
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
