"""Search controllers × scorers (+ early stopping) at one equal token budget on held-out mazes.

    out = run_search_bench(SearchBenchSettings(episodes=50, budget="tokens=240", workers=2))
    out["results"], out["comparisons"], out["early_stopping"]
    # the command: ttsearch bench search --json   (benchmarks/cli/bench_search_cmd.py)

Every cell runs one controller with one scorer (and optionally an early-stopping rule) on the
same held-out layouts (``list_tasks(env, split="test", limit=N)``; episode seeds fixed by the
task) under the same per-episode :class:`Budget` (default ``tokens=240``: generated + scored
tokens together, so progress advantage pays for its reference pass; to spend about the same
tokens, scorers that need no reference get ``--baseline-scale`` times more samples: a maze PA
candidate costs 2 generated + 1 scored token, a log-prob one 2). It prints one JSON object:
``results`` (success rate ± stderr, mean tokens and other compute per episode, per
cell), ``comparisons`` (the issue's claims as paired differences over the same episodes, with
paired standard errors) and ``early_stopping`` (token saving and success change of each
early-stopping variant against the same controller without it). With ``--out DIR`` every
finished episode is appended to ``DIR/cells/<cell>.jsonl`` and a rerun resumes.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ttsearch.agents import Agent, ModelPair, SamplingParams
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.envs import list_tasks
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers import SCORERS as SCORER_REGISTRY
from ttsearch.scorers import make_scorer, scorer_options
from ttsearch.scorers.metrics import mean_and_stderr, success_rate_and_stderr
from ttsearch.search import CONTROLLERS, Budget, make_controller
from ttsearch.search.base import resolve_horizon
from ttsearch.search.early_stopping import describe, make_early_stop

SCORERS = ("progress_advantage", "progress_advantage_centered", "policy_logprob", "self_certainty",
           "self_certainty_paper")
"""Default scorer labels: a registered scorer name, or a name with a variant suffix (SUFFIXES)."""
SUFFIXES: dict[str, dict[str, Any]] = {"_paper": {"sign": "paper"}, "_decisive": {"span": "decisive"}}
"""``self_certainty_paper`` = self_certainty with the PA paper's sign (+mean of the top-20 log-probs;
plain ``self_certainty`` is DeepConf's −mean); ``progress_advantage_decisive`` = PA on the tokens
the parser says decide the move."""


def scorer_variant(label: str) -> tuple[str, dict[str, Any]]:
    """(registered scorer name, options) of a bench scorer label (module docstring)."""
    if label in SCORER_REGISTRY:
        return label, {}
    for suffix, options in SUFFIXES.items():
        name = label.removesuffix(suffix)
        if name != label and name in SCORER_REGISTRY and set(options) <= set(scorer_options(name)):
            return name, dict(options)
    labels = sorted([*SCORER_REGISTRY, *(n + s for s, o in SUFFIXES.items() for n in SCORER_REGISTRY
                                          if set(o) <= set(scorer_options(n)))])
    raise ConfigError(unknown_choice("bench scorer", label, labels))
CONTROLLER_CONFIGS: dict[str, dict[str, Any]] = {
    "greedy": {},
    "step_best_of_n": {"k": 8},
    "trajectory_best_of_n": {"n": 8},
    "beam": {"width": 3, "expand": 3},
    "best_first": {"expand": 4, "batch": 2},
    "mcts": {"simulations": 2, "expand": 4, "batch": 2},
}
EARLY_STOP_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    # Thresholds chosen on 100 validation layouts (train split from seed 20000, never used to train
    # the pair) with pair runs/pair_v6; the test split was not used to choose them.
    ("step_best_of_n", {"name": "gate", "signal": "policy_prob", "threshold": 0.55}),
    ("step_best_of_n", {"name": "adaptive", "wave": 2, "min_samples": 2, "patience": 1}),
    ("trajectory_best_of_n", {"name": "adaptive", "wave": 2, "min_samples": 2, "patience": 1}),
    ("trajectory_best_of_n", {"name": "deepconf", "warmup": 2, "percentile": 75}),
    ("beam", {"name": "gate", "signal": "policy_prob", "threshold": 0.6}),
]
LOOKAHEAD = ("beam", "best_first", "mcts")
PACED = ("step_best_of_n", "beam", "best_first", "mcts")
"""Step-by-step controllers that get ``horizon`` (keep budget to finish the episode)."""
MATCH_PARAM = {"step_best_of_n": "k", "trajectory_best_of_n": "n", "beam": "expand", "best_first": "expand",
               "mcts": "simulations"}
"""The sample-count option scaled by ``--baseline-scale`` for scorers that need no reference pass."""


@dataclass(frozen=True, slots=True)
class SearchBenchSettings:
    """Everything one ``bench search`` run depends on (the CLI flags, typed)."""

    pair: str | None = None
    """Pair folder (None: the shipped maze pair)."""
    episodes: int = 200
    split: str = "test"
    task_start: int | None = None
    """First layout seed to list tasks from (e.g. 20000: training layouts the pair never saw)."""
    budget: str = "tokens=240"
    max_new_tokens: int = 2
    temperature: float = 1.0
    scorers: tuple[str, ...] = SCORERS
    controllers: tuple[str, ...] = tuple(CONTROLLER_CONFIGS)
    early_stop: bool = True
    """Add the early-stopping variants (``early_stop_variants``, default EARLY_STOP_VARIANTS)."""
    early_stop_variants: tuple[tuple[str, Mapping[str, Any]], ...] | None = None
    cells: tuple[str, ...] | None = None
    """Run only these cell ids."""
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Controller option overrides: ``{"beam": {"width": 4}}``."""
    scorer_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline_scale: float = 1.5
    horizon: str = "auto"
    seed: int = 0
    workers: int = 1
    out: str | None = None

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.baseline_scale <= 0:
            raise ConfigError(f"baseline_scale must be > 0, got {self.baseline_scale}")


# -- shared with `ttsearch sweep` ------------------------------------------------------------

def load_agent(pair_dir: str | Path | None, *, max_new_tokens: int, temperature: float):
    """(agent, pair, env spec, env kwargs) for a pair folder (default: the shipped maze pair)."""

    pair = ModelPair.load_dir(pair_dir or default_pair_dir("maze"))
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature))
    return agent, pair, pair.manifest.env or "maze", dict(pair.manifest.env_kwargs)


def make_scorer_for(label: str, pair: Any, options: dict[str, Any] | None = None):
    """The scorer of a bench label (``scorer_variant``), with the pair's β for PA variants."""
    name, variant = scorer_variant(label)
    options = {**variant, **(options or {})}
    if "beta" in scorer_options(name):
        options.setdefault("beta", pair.beta)
    return make_scorer(name, **options)


def make_tasks(env: str, env_kwargs: dict[str, Any], *, split: str, episodes: int, start: int | None = None):
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    extra = {} if start is None else {"start": start}  # a task lister option (maze: first layout seed)
    return list_tasks(env, split=split, limit=episodes, **extra, **env_kwargs)


# -- cells --------------------------------------------------------------------------------------

def build_cells(settings: SearchBenchSettings, horizon: int | None = None) -> list[dict[str, Any]]:
    """The cells to run: controller x scorer, plus early-stopping variants (module docstring)."""
    for name in settings.controllers:
        if name not in CONTROLLERS:
            raise ConfigError(unknown_choice("controller", name, CONTROLLERS))
    overrides = settings.options
    cells = []
    for name in settings.controllers:
        base = {**CONTROLLER_CONFIGS.get(name, {}), **overrides.get(name, {})}
        if horizon is not None and name in PACED:
            base.setdefault("horizon", horizon)
        for scorer in (["none"] if name == "greedy" else settings.scorers):
            options = dict(base)
            free = scorer != "none" and "reference_logprobs" not in SCORER_REGISTRY[scorer_variant(scorer)[0]].requires
            if free and name in MATCH_PARAM:
                key = MATCH_PARAM[name]
                options[key] = max(1, round(options.get(key, 1) * settings.baseline_scale))
            cells.append({"id": f"{name}/{scorer}", "controller": name, "options": options, "scorer": scorer,
                          "early_stop": None, "early_stop_spec": None})
    variants = EARLY_STOP_VARIANTS if settings.early_stop_variants is None else settings.early_stop_variants
    if settings.early_stop and "progress_advantage" in settings.scorers:
        labels = [describe(make_early_stop(dict(spec))) for _, spec in variants]
        for (name, spec), label in zip(variants, labels):
            if name in settings.controllers:
                # one variant of a rule per controller keeps the short id; more get their label
                short = sum(n == name and sp["name"] == spec["name"] for n, sp in variants) == 1
                suffix = spec["name"] if short else label
                options = {**CONTROLLER_CONFIGS.get(name, {}), **overrides.get(name, {})}
                if horizon is not None and name in PACED:
                    options.setdefault("horizon", horizon)
                cells.append({"id": f"{name}/progress_advantage/{suffix}", "controller": name,
                              "options": options, "scorer": "progress_advantage", "early_stop": label,
                              "early_stop_spec": dict(spec)})
    if settings.cells:
        wanted = set(settings.cells)
        unknown = wanted - {c["id"] for c in cells}
        if unknown:
            raise ConfigError(f"unknown cell id(s) {sorted(unknown)}; valid: {', '.join(c['id'] for c in cells)}")
        cells = [c for c in cells if c["id"] in wanted]
    return cells


_WORKER: dict[str, Any] = {}


def _init_worker(pair: str | None, max_new_tokens: int, temperature: float) -> None:
    torch.set_num_threads(1)
    _WORKER["agent"] = load_agent(pair, max_new_tokens=max_new_tokens, temperature=temperature)


def run_cell(cell: dict[str, Any], task_dicts: list[dict[str, Any]], budget_text: str, seed: int,
             out: str | None, scorer_options: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run one cell on every task (skipping those already in ``out``); return per-episode records."""

    agent, pair, _, _ = _WORKER["agent"]
    path = Path(out) / "cells" / (cell["id"].replace("/", "__") + ".jsonl") if out else None
    done = {record["task"]: record for record in read_rows(path)} if path is not None else {}
    kwargs = dict(cell["options"], seed=seed)
    if cell["early_stop_spec"] is not None:
        kwargs["early_stop"] = cell["early_stop_spec"]
    controller = make_controller(cell["controller"], **kwargs)
    name = "progress_advantage" if cell["scorer"] == "none" else cell["scorer"]
    scorer = make_scorer_for(name, pair, (scorer_options or {}).get(name))
    budget = Budget.parse(budget_text)
    records = []
    for data in task_dicts:
        if data["id"] in done:
            records.append(done[data["id"]])
            continue
        task = Task(**data)
        started = time.perf_counter()
        result = controller.run(task, task.make, agent, scorer, budget)
        u = result.usage
        record = {"task": task.id, "success": result.success, "tokens": u.tokens,
                  "generated_tokens": u.generated_tokens, "scored_tokens": u.scored_tokens,
                  "model_calls": u.model_calls, "env_steps": u.env_steps, "steps": len(result.trajectory.steps),
                  "stop_reason": result.stop_reason, "stopped_early": result.stopped_early,
                  "saved_tokens_estimate": result.early_stop.saved_tokens_estimate if result.early_stop else None,
                  "seconds": round(time.perf_counter() - started, 3)}
        records.append(record)
        if path is not None:
            with JsonlWriter(path) as sink:
                sink.append(record)
    return records


def summarize(cell: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    p, stderr = success_rate_and_stderr([r["success"] for r in records])

    def mean(key: str) -> float:
        return sum(r[key] for r in records) / n

    return {"cell": cell["id"], "controller": cell["controller"], "scorer": cell["scorer"],
            "scorer_spec": None if cell["scorer"] == "none" else scorer_variant(cell["scorer"]),
            "early_stop": cell["early_stop"], "options": cell["options"], "episodes": n, "success_rate": p,
            "stderr": stderr, "tokens": mean("tokens"),
            "generated_tokens": mean("generated_tokens"), "scored_tokens": mean("scored_tokens"),
            "model_calls": mean("model_calls"), "env_steps": mean("env_steps"), "steps": mean("steps"),
            "budget_stops": sum(r["stop_reason"].startswith("budget:") for r in records),
            "seconds_per_episode": mean("seconds")}


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[float, float, int]:
    """Mean of success(a) − success(b) over shared tasks, its paired stderr, and the count."""
    sb = {r["task"]: r["success"] for r in b}
    diffs = [float(r["success"]) - float(sb[r["task"]]) for r in a if r["task"] in sb]
    if not diffs:
        return 0.0, 0.0, 0
    mean, stderr = mean_and_stderr(diffs)
    return float(mean), float(stderr), len(diffs)


def comparisons(records: dict[str, list[dict[str, Any]]]) -> tuple[list[dict], list[dict]]:
    claims = []

    def add(claim: str, a: str, b: str) -> None:
        if a in records and b in records:
            diff, se, n = paired(records[a], records[b])
            claims.append({"claim": claim, "a": a, "b": b, "diff": diff, "stderr": se, "episodes": n,
                           "holds": diff > 0})

    pa = "progress_advantage"
    for name in LOOKAHEAD:
        add(f"{name} by PA beats step_best_of_n by PA", f"{name}/{pa}", f"step_best_of_n/{pa}")
    add("step_best_of_n by PA beats greedy", f"step_best_of_n/{pa}", "greedy/none")
    scorers = list(dict.fromkeys(c.split("/")[1] for c in records if c.count("/") == 1))
    for name in CONTROLLER_CONFIGS:
        for other in scorers:
            if other not in (pa, "none"):
                add(f"{name}: PA beats {other}", f"{name}/{pa}", f"{name}/{other}")
        if "progress_advantage_centered" in scorers:
            add(f"{name}: centred PA beats policy_logprob", f"{name}/progress_advantage_centered",
                f"{name}/policy_logprob")
    early = []
    for cell in records:
        parts = cell.split("/")
        if len(parts) == 3 and f"{parts[0]}/{parts[1]}" in records:
            base = f"{parts[0]}/{parts[1]}"
            diff, se, n = paired(records[cell], records[base])
            tokens = sum(r["tokens"] for r in records[cell]) / len(records[cell])
            base_tokens = sum(r["tokens"] for r in records[base]) / len(records[base])
            saving = 1 - tokens / base_tokens if base_tokens else 0.0
            early.append({"cell": cell, "base": base, "token_saving": saving, "success_diff": diff,
                          "stderr": se, "episodes": n, "holds": saving >= 0.30 and diff >= -0.01})
    return claims, early


def run_search_bench(settings: SearchBenchSettings, *, log: Callable[[str], None] = lambda line: None
                     ) -> dict[str, Any]:
    """Run every cell on the same held-out tasks; return the JSON-ready result (module docstring)."""
    budget = Budget.parse(settings.budget)
    # Tasks are listed once here (cheap; no model needed) and shipped to the workers as dicts.
    manifest = PairManifest.read(settings.pair or default_pair_dir("maze"))
    tasks = make_tasks(manifest.env or "maze", dict(manifest.env_kwargs), split=settings.split,
                       episodes=settings.episodes, start=settings.task_start)
    horizon = resolve_horizon(settings.horizon, tasks[0])
    cells = build_cells(settings, horizon)
    task_dicts = [{"env": t.env, "id": t.id, "seed": t.seed, "kwargs": dict(t.kwargs), "split": t.split} for t in tasks]
    scorer_options = {k: dict(v) for k, v in settings.scorer_options.items()}
    started = time.perf_counter()
    records: dict[str, list[dict[str, Any]]] = {}

    def report(cell: dict[str, Any], recs: list[dict[str, Any]]) -> None:
        records[cell["id"]] = recs
        s = summarize(cell, recs)
        log(f"[{time.perf_counter() - started:7.1f}s] {cell['id']}: success {s['success_rate']:.3f} ± "
            f"{s['stderr']:.3f}, {s['tokens']:.1f} tokens/episode")

    job = (task_dicts, settings.budget, settings.seed, settings.out, scorer_options)
    if settings.workers == 1:
        _init_worker(settings.pair, settings.max_new_tokens, settings.temperature)
        for cell in cells:
            report(cell, run_cell(cell, *job))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(settings.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(settings.pair, settings.max_new_tokens, settings.temperature)) as pool:
            futures = {pool.submit(run_cell, cell, *job): cell for cell in cells}
            for future, cell in futures.items():
                report(cell, future.result())
    claims, early = comparisons(records)
    out = {"pair": str(settings.pair or default_pair_dir("maze")), "split": settings.split,
           "task_start": settings.task_start, "episodes": len(tasks), "budget": budget.to_dict(), "horizon": horizon,
           "max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature, "seed": settings.seed,
           "scorer_options": scorer_options, "baseline_scale": settings.baseline_scale,
           "results": [summarize(cell, records[cell["id"]]) for cell in cells], "comparisons": claims,
           "early_stopping": early, "seconds": round(time.perf_counter() - started, 1)}
    if settings.out:
        Path(settings.out).mkdir(parents=True, exist_ok=True)
        (Path(settings.out) / "bench_search.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
