"""Search controllers × scorers (+ early stopping) at one equal token budget on held-out mazes.

    ttsearch bench search --json                                   # shipped maze pair, 200 held-out layouts
    ttsearch bench search --episodes 50 --budget tokens=240 --workers 2 --out runs/bench-search --json
    ttsearch bench search --cells beam/progress_advantage,greedy --option beam.width=3

Every cell runs one controller with one scorer (and optionally an early-stopping rule) on the
same held-out layouts (``list_tasks(env, split="test", limit=N)``; episode seeds fixed by the
task) under the same per-episode :class:`Budget` (default ``tokens=240``: generated + scored
tokens together, so progress advantage pays for its reference pass; to spend about the same
tokens, scorers that need no reference get ``--baseline-scale`` times more samples: a maze PA
candidate costs 2 generated + 1 scored token, a log-prob one 2). It prints one JSON object:
``results`` (success rate ± binomial stderr, mean tokens and other compute per episode, per
cell), ``comparisons`` (the issue's claims as paired differences over the same episodes, with
paired standard errors) and ``early_stopping`` (token saving and success change of each
early-stopping variant against the same controller without it). With ``--out DIR`` every
finished episode is appended to ``DIR/cells/<cell>.jsonl`` and a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from ttsearch.agents import Agent, ModelPair, SamplingParams
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.envs import list_tasks
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import CONTROLLERS, Budget, make_controller
from ttsearch.search.early_stopping import describe, make_early_stop

SCORERS = ("progress_advantage", "policy_logprob", "self_certainty")
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


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--episodes", type=int, default=200, help="held-out layouts per cell (default 200)")
    parser.add_argument("--split", default="test", help="task split (tune on 'train', report on 'test')")
    parser.add_argument("--task-start", type=int, default=None,
                        help="first layout seed to list tasks from (e.g. 20000: training layouts the pair never saw)")
    parser.add_argument("--budget", default="tokens=240", help="per-episode budget, e.g. tokens=240,env_steps=400")
    parser.add_argument("--max-new-tokens", type=int, default=2, help="sampling cap per turn (maze moves: 1 token + stop)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--scorers", default=",".join(SCORERS), help="comma-separated scorer names")
    parser.add_argument("--controllers", default=",".join(CONTROLLER_CONFIGS), help="comma-separated controllers")
    parser.add_argument("--no-early-stop", action="store_true", help="skip the early-stopping variants")
    parser.add_argument("--early-stop", action="append", default=[], metavar="CONTROLLER=JSON",
                        help='replace the default early-stopping variants, e.g. '
                             'step_best_of_n=\'{"name": "gate", "threshold": 0.8}\' (repeatable)')
    parser.add_argument("--cells", default=None, help="run only these cell ids (comma-separated)")
    parser.add_argument("--option", action="append", default=[], metavar="CONTROLLER.KEY=VALUE",
                        help="override a controller option, e.g. beam.width=4 (repeatable)")
    parser.add_argument("--baseline-scale", type=float, default=1.5,
                        help="sample-count factor for scorers without a reference pass (equal compute; 1 = same samples)")
    parser.add_argument("--horizon", default="auto",
                        help="step limit the step-by-step controllers pace their budget to: auto (the env's "
                             "max_steps), none, or a number")
    parser.add_argument("--scorer-option", action="append", default=[], metavar="SCORER.KEY=VALUE",
                        help="scorer option, e.g. progress_advantage.step_agg=sum (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="controller seed")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (one cell each)")
    parser.add_argument("--out", default=None, help="folder for per-episode records (resumable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# -- shared with `ttsearch sweep` ------------------------------------------------------------

def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(items: list[str], *, flag: str = "--option", owner: str = "CONTROLLER",
                  example: str = "beam.width=4") -> dict[str, dict[str, Any]]:
    """``["beam.width=4", ...]`` -> ``{"beam": {"width": 4}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        controller, dot, option = key.partition(".")
        if not sep or not dot:
            raise ConfigError(f"{flag} {item!r} must look like {owner}.KEY=VALUE, e.g. {example}")
        out.setdefault(controller, {})[option] = parse_value(value)
    return out


def load_agent(pair_dir: str | Path | None, *, max_new_tokens: int, temperature: float):
    """(agent, pair, env spec, env kwargs) for a pair folder (default: the shipped maze pair)."""

    pair = ModelPair.load_dir(pair_dir or default_pair_dir("maze"))
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature))
    return agent, pair, pair.manifest.env or "maze", dict(pair.manifest.env_kwargs)


def make_scorer_for(name: str, pair: Any, options: dict[str, Any] | None = None):
    options = dict(options or {})
    if name == "progress_advantage":
        options.setdefault("beta", pair.beta)
    return make_scorer(name, **options)


def make_tasks(env: str, env_kwargs: dict[str, Any], *, split: str, episodes: int, start: int | None = None):
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    extra = {} if start is None else {"start": start}  # a task lister option (maze: first layout seed)
    return list_tasks(env, split=split, limit=episodes, **extra, **env_kwargs)


# -- cells --------------------------------------------------------------------------------------

def resolve_horizon(text: str, tasks: list) -> int | None:
    if text == "none":
        return None
    if text == "auto":
        env = tasks[0].make()
        try:
            return getattr(env, "max_steps", None)
        finally:
            env.close()
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--horizon must be auto, none or a number, got {text!r}") from None


def build_cells(args: argparse.Namespace, horizon: int | None = None) -> list[dict[str, Any]]:
    scorers = [s for s in args.scorers.split(",") if s]
    controllers = [c for c in args.controllers.split(",") if c]
    for name in controllers:
        if name not in CONTROLLERS:
            raise ConfigError(f"unknown controller {name!r}; choose from: {', '.join(CONTROLLERS)}")
    overrides = parse_options(args.option)
    if args.baseline_scale <= 0:
        raise ConfigError(f"--baseline-scale must be > 0, got {args.baseline_scale}")
    cells = []
    for name in controllers:
        base = {**CONTROLLER_CONFIGS.get(name, {}), **overrides.get(name, {})}
        if horizon is not None and name in PACED:
            base.setdefault("horizon", horizon)
        for scorer in (["none"] if name == "greedy" else scorers):
            options = dict(base)
            if scorer not in ("none", "progress_advantage", "reference_logprob") and name in MATCH_PARAM:
                key = MATCH_PARAM[name]
                options[key] = max(1, round(options.get(key, 1) * args.baseline_scale))
            cells.append({"id": f"{name}/{scorer}", "controller": name, "options": options, "scorer": scorer,
                          "early_stop": None, "early_stop_spec": None})
    variants = EARLY_STOP_VARIANTS
    if args.early_stop:
        variants = []
        for item in args.early_stop:
            name, sep, text = item.partition("=")
            spec = parse_value(text)
            if not sep or not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"--early-stop {item!r} must look like CONTROLLER={{\"name\": ..., options}}")
            variants.append((name, spec))
    if not args.no_early_stop and "progress_advantage" in scorers:
        labels = [describe(make_early_stop(spec)) for _, spec in variants]
        for (name, spec), label in zip(variants, labels):
            if name in controllers:
                # one variant of a rule per controller keeps the short id; more get their label
                short = sum(n == name and sp["name"] == spec["name"] for n, sp in variants) == 1
                suffix = spec["name"] if short else label
                options = {**CONTROLLER_CONFIGS.get(name, {}), **overrides.get(name, {})}
                if horizon is not None and name in PACED:
                    options.setdefault("horizon", horizon)
                cells.append({"id": f"{name}/progress_advantage/{suffix}", "controller": name,
                              "options": options, "scorer": "progress_advantage", "early_stop": label,
                              "early_stop_spec": spec})
    if args.cells:
        wanted = set(args.cells.split(","))
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
    p = sum(r["success"] for r in records) / n

    def mean(key: str) -> float:
        return sum(r[key] for r in records) / n

    return {"cell": cell["id"], "controller": cell["controller"], "scorer": cell["scorer"],
            "early_stop": cell["early_stop"], "options": cell["options"], "episodes": n, "success_rate": p,
            "stderr": math.sqrt(p * (1 - p) / n), "tokens": mean("tokens"),
            "generated_tokens": mean("generated_tokens"), "scored_tokens": mean("scored_tokens"),
            "model_calls": mean("model_calls"), "env_steps": mean("env_steps"), "steps": mean("steps"),
            "budget_stops": sum(r["stop_reason"].startswith("budget:") for r in records),
            "seconds_per_episode": mean("seconds")}


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[float, float, int]:
    """Mean of success(a) − success(b) over shared tasks, its paired stderr, and the count."""
    sb = {r["task"]: r["success"] for r in b}
    diffs = [float(r["success"]) - float(sb[r["task"]]) for r in a if r["task"] in sb]
    n = len(diffs)
    if n == 0:
        return 0.0, 0.0, 0
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n), n


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
    for name in CONTROLLER_CONFIGS:
        for other in ("policy_logprob", "self_certainty"):
            add(f"{name}: PA beats {other}", f"{name}/{pa}", f"{name}/{other}")
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


def main(args: argparse.Namespace) -> int:
    budget = Budget.parse(args.budget)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    # Tasks are listed once here (cheap; no model needed) and shipped to the workers as dicts.
    manifest = PairManifest.read(args.pair or default_pair_dir("maze"))
    tasks = make_tasks(manifest.env or "maze", dict(manifest.env_kwargs), split=args.split, episodes=args.episodes,
                       start=args.task_start)
    horizon = resolve_horizon(args.horizon, tasks)
    scorer_options = parse_options(args.scorer_option, flag="--scorer-option", owner="SCORER",
                                   example="progress_advantage.step_agg=sum")
    cells = build_cells(args, horizon)
    task_dicts = [{"env": t.env, "id": t.id, "seed": t.seed, "kwargs": dict(t.kwargs), "split": t.split} for t in tasks]
    started = time.perf_counter()
    records: dict[str, list[dict[str, Any]]] = {}

    def report(cell: dict[str, Any], recs: list[dict[str, Any]]) -> None:
        records[cell["id"]] = recs
        s = summarize(cell, recs)
        print(f"[{time.perf_counter() - started:7.1f}s] {cell['id']}: success {s['success_rate']:.3f} ± "
              f"{s['stderr']:.3f}, {s['tokens']:.1f} tokens/episode", file=sys.stderr, flush=True)

    if args.workers == 1:
        _init_worker(args.pair, args.max_new_tokens, args.temperature)
        for cell in cells:
            report(cell, run_cell(cell, task_dicts, args.budget, args.seed, args.out, scorer_options))
    else:

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(args.pair, args.max_new_tokens, args.temperature)) as pool:
            futures = {pool.submit(run_cell, cell, task_dicts, args.budget, args.seed, args.out, scorer_options): cell
                       for cell in cells}
            for future, cell in futures.items():
                report(cell, future.result())
    results = [summarize(cell, records[cell["id"]]) for cell in cells]
    claims, early = comparisons(records)
    out = {"pair": str(args.pair or default_pair_dir("maze")), "split": args.split, "task_start": args.task_start,
           "episodes": len(tasks),
           "budget": budget.to_dict(), "horizon": horizon, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
           "seed": args.seed, "scorer_options": scorer_options, "baseline_scale": args.baseline_scale,
           "results": results, "comparisons": claims, "early_stopping": early,
           "seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_search.json").write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    _print_table(out)
    return 0


def _print_table(out: dict[str, Any]) -> None:
    table = Table(title=f"search on {out['episodes']} {out['split']} mazes at budget {out['budget']}")
    for column in ("cell", "success", "± stderr", "tokens/ep", "calls/ep", "budget stops"):
        table.add_column(column)
    for r in out["results"]:
        table.add_row(r["cell"], f"{r['success_rate']:.3f}", f"{r['stderr']:.3f}", f"{r['tokens']:.1f}",
                      f"{r['model_calls']:.1f}", str(r["budget_stops"]))
    console = Console()
    console.print(table)
    for c in out["comparisons"]:
        console.print(f"{'holds ' if c['holds'] else 'FAILS '} {c['claim']}: {c['diff']:+.3f} ± {c['stderr']:.3f}")
    for e in out["early_stopping"]:
        console.print(f"{'holds ' if e['holds'] else 'FAILS '} {e['cell']}: {e['token_saving']:.0%} fewer tokens, "
                      f"success {e['success_diff']:+.3f} ± {e['stderr']:.3f}")
