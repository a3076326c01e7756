"""The beam-search half of ``ttsearch bench prefix-cache``: one episode per engine kind, timed.

    beam, memory = beam_part(tokenizer, policy_model, reference_model, BenchConfig())
    beam["speedup_vs_uncached"], beam["same_results"], memory["tree_peak_bytes"]

``beam_part`` runs ``search.Beam`` (progress-advantage step scores) on the maze with full
history and on :func:`briefing_maze_class` (a long-context maze), with uncached engines,
cached engines and the naive ``model.generate`` loop (``naive_generate.py``); forward hooks
time the model forward passes (:class:`ForwardClock`) and a thread samples resident memory
(:class:`RssSampler`). See ``bench_prefix_cache.py`` for what is reported.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ttsearch.agents import Agent, ModelPair, SamplingParams
from ttsearch.agents.engines.transformers.backend import TransformersBackend
from ttsearch.benchmarks.perf.naive_generate import NaiveGenerateBackend
from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.maze.env import SYSTEM_PROMPT, SlipperyMaze
from ttsearch.scorers import make_scorer
from ttsearch.search import Beam, Budget

if TYPE_CHECKING:
    from ttsearch.benchmarks.perf.prefix_cache import BenchConfig

_T0 = time.perf_counter()


def progress(message: str) -> None:
    print(
        f"[prefix-cache {time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True
    )


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


# -- (a) scoring K candidates after a prefix --------------------------------------------------
def briefing_maze_class():
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
    """Wall and CPU time spent inside the models' forward passes (hooks on the top modules)."""

    def __init__(self, models: list[Any]):
        self.seconds = self.cpu_seconds = 0.0
        self.calls, self._start = 0, (0.0, 0.0)
        self._handles = []
        for model in models:
            self._handles.append(model.register_forward_pre_hook(self._pre))
            self._handles.append(model.register_forward_hook(self._post))

    def _pre(self, *_):
        self._start = clock()

    def _post(self, *_):
        wall, cpu = since(self._start)
        self.seconds += wall
        self.cpu_seconds += cpu
        self.calls += 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class RssSampler:
    """Peak resident memory of this process, sampled every few milliseconds in a thread."""

    def __init__(self, every: float = 0.005):
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

    beam = Beam(width=cfg.width, expand=cfg.expand, seed=cfg.seed, max_steps=steps)
    forwards = ForwardClock(models)
    start = clock()
    try:
        result = beam.run(task, env_factory, agent, make_scorer("progress_advantage"), Budget())
    finally:
        forwards.close()
    wall, cpu = since(start)
    traj = result.trajectory
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "forward_s": forwards.seconds,
        "forwards": forwards.calls,
        "overhead_frac": 1.0 - forwards.seconds / wall,
        "forward_cpu_s": forwards.cpu_seconds,
        "overhead_frac_cpu": 1.0 - forwards.cpu_seconds / cpu,
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


def _engines(kind: str, policy: Any, reference: Any, budget: int) -> tuple[Any, Any]:
    """The two engines of one kind: naive ``generate``, uncached or cached TransformersBackends."""
    if kind == "generate":
        return NaiveGenerateBackend(policy), NaiveGenerateBackend(reference)
    size = budget if kind == "cached" else 0
    return (TransformersBackend(policy, name="policy", cache_bytes=size),
            TransformersBackend(reference, name="reference", cache_bytes=size))


def _note_memory(memory: dict[str, Any], kind: str, pol: Any, ref: Any, rss_peak: int) -> None:
    """Fold one episode's memory figures into ``memory`` (maxima over the episodes)."""
    memory["rss_peak_bytes"][kind] = max(memory["rss_peak_bytes"].get(kind, 0), rss_peak)
    if kind == "cached":
        memory["tree_peak_bytes"] = max(memory["tree_peak_bytes"], pol.cache.peak_bytes, ref.cache.peak_bytes)
        memory["tree_bytes_after_calls_max"] = max(memory["tree_bytes_after_calls_max"], pol.stats.cache_bytes,
                                                   ref.stats.cache_bytes)
    if kind != "generate":
        memory["workspace_bytes"] = max(memory["workspace_bytes"],
                                        pol.runner.workspace_bytes + ref.runner.workspace_bytes)


def beam_part(
    tok: Any, policy: Any, reference: Any, cfg: BenchConfig, *, generate: bool, quiet: bool = False
) -> tuple[dict, dict]:
    """Beam episodes on both envs with each engine kind; (beam summary, memory figures)."""
    budget = int(cfg.budget_mb * 2**20)
    briefing_maze = briefing_maze_class()
    envs = {
        "maze": (lambda: SlipperyMaze(3, max_steps=cfg.maze_steps), cfg.maze_steps),
        "long_context": (lambda: briefing_maze(3, max_steps=cfg.long_steps, briefing_words=cfg.briefing_words),
                         cfg.long_steps),
    }
    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=1.0)
    episodes: dict[str, dict[str, Any]] = {}
    memory: dict[str, Any] = {"budget_bytes_per_engine": budget, "tree_peak_bytes": 0,
                              "tree_bytes_after_calls_max": 0, "workspace_bytes": 0, "rss_peak_bytes": {}}
    # uncached first: the cached run's extra resident memory over it is then what the cache costs
    kinds = ["uncached", "cached"] + (["generate"] if generate else [])
    for kind in kinds:
        for name, (factory, steps) in envs.items():
            if not quiet:
                progress(f"beam episode: {name}, {kind}")
            pol, ref = _engines(kind, policy, reference, budget)
            agent = Agent(ModelPair(pol, ref, tok), sampling=sampling)
            with RssSampler() as sampler:
                out = run_episode(agent, factory, Task(name, "bench", seed=0), cfg, steps, [policy, reference])
            if kind == "cached":
                out["policy_stats"], out["reference_stats"] = asdict(pol.stats), asdict(ref.stats)
            _note_memory(memory, kind, pol, ref, sampler.peak)
            episodes.setdefault(name, {})[kind] = out
    return _summarize_beam(episodes, kinds, cfg, {name: steps for name, (_, steps) in envs.items()}), memory


def _summarize_beam(episodes: dict[str, dict[str, Any]], kinds: list[str], cfg: BenchConfig,
                    steps: dict[str, int]) -> dict[str, Any]:
    names = list(episodes)
    total = {kind: sum(episodes[name][kind]["wall_s"] for name in names) for kind in kinds}
    fwd = sum(episodes[name]["cached"]["forward_s"] for name in names)
    return {
        "speedup_vs_uncached": total["uncached"] / total["cached"],
        "speedup_vs_generate": total["generate"] / total["cached"] if "generate" in kinds else None,
        "overhead_frac": 1.0 - fwd / total["cached"],
        "overhead_frac_cpu": 1.0 - sum(episodes[n]["cached"]["forward_cpu_s"] for n in names)
        / sum(episodes[n]["cached"]["cpu_s"] for n in names),
        "same_results": all(_same(episodes[n]["cached"], episodes[n][k]) for n in names for k in kinds),
        "wall_s": total,
        "cpu_s": {kind: sum(episodes[name][kind]["cpu_s"] for name in names) for kind in kinds},
        "settings": {"width": cfg.width, "expand": cfg.expand, "max_new_tokens": cfg.max_new_tokens, "steps": steps},
        "episodes": {
            name: {**{kind: _brief(ep) for kind, ep in per.items()},
                   **{f"speedup_vs_{kind}": per[kind]["wall_s"] / per["cached"]["wall_s"]
                      for kind in kinds if kind != "cached"}}
            for name, per in episodes.items()
        },
    }


def _brief(ep: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "wall_s",
        "cpu_s",
        "forward_s",
        "forward_cpu_s",
        "overhead_frac_cpu",
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
