"""``ttsearch sweep``: success vs compute of one controller over a grid of budgets, on any env.

    settings = SweepSettings(controller="beam", options={"width": 3}, budgets=(60, 120, 240),
                             env="keydoor", episodes=20)                      # or config="run.yaml"
    summary = run_budget_sweep(settings, out="runs/sweep-beam", resume=False)

Where the tasks, pair and sampling come from:

- ``config`` (a ``ttsearch run`` YAML): its ``imports``, pair, tasks (a task lister or inline
  ``items``), sampling, parser and horizon; ``scorer`` may name one of its scorer labels (with
  its options). ``episodes`` keeps the first tasks.
- otherwise ``pair`` (default: the shipped maze pair), ``env`` (default: the pair's env; any
  registered name, entry point or ``module:Class`` with a task lister) with ``env_kwargs``
  for its task lister, ``split`` and ``episodes``.

The folder holds ``sweep.json`` (the settings and their hash), ``points.jsonl`` (one line per
finished budget, ``search.sweep.run_sweep``) and ``sweep.png``. Like ``ttsearch run``, a second
sweep into the same folder is refused unless ``resume``; a resume with other settings is refused;
a resume reruns only the budgets not yet in ``points.jsonl``. Every budget is checked against
the controller's smallest call before the first episode. When the best budget solves no task,
``summary["warnings"]`` says so and no budget is recommended.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ttsearch.agents import Agent, ModelPair, PromptRenderer, SamplingParams
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import default_pair_dir, resolve_pair_dir
from ttsearch.benchmarks.perf.search import make_scorer_for, make_tasks
from ttsearch.benchmarks.run.config import RunConfig, feasibility_problems, load_config
from ttsearch.benchmarks.run.setup import (
    build_parser,
    build_scorer,
    probe_env,
    prompt_for,
)
from ttsearch.benchmarks.run.tasks import config_tasks
from ttsearch.envs.errors import ConfigError, TtsearchError
from ttsearch.envs.registry import env_entry, load_attr
from ttsearch.search import make_controller
from ttsearch.search.base import resolve_horizon
from ttsearch.search.budget import Budget
from ttsearch.search.registry import controller_options
from ttsearch.search.sweep import best_point, budget_grid, cheapest_within, plot_sweep, run_sweep

MANIFEST, POINTS, PLOT = "sweep.json", "points.jsonl", "sweep.png"


@dataclass(frozen=True, slots=True)
class SweepSettings:
    """Everything a sweep depends on (the CLI flags, typed); see the module docstring."""

    controller: str
    budgets: tuple[float, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    scorer: str = "progress_advantage"
    limit: str = "tokens"
    base_budget: str = ""
    tolerance: float = 0.02
    config: str | None = None
    pair: str | None = None
    env: str | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    episodes: int | None = None
    """Tasks to run (default 100 from a task lister; every task of a config)."""
    split: str | None = None
    task_start: int | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    horizon: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes is not None and self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if not 0 <= self.tolerance <= 1:
            raise ConfigError(f"tolerance must be in [0, 1] (0.02 = 2 points), got {self.tolerance}")
        if self.config is not None:
            clash = [name for name in ("pair", "env", "split", "task_start", "max_new_tokens", "temperature")
                     if getattr(self, name) is not None] + (["env_kwargs"] if self.env_kwargs else [])
            if clash:
                flags = ", ".join("--" + name.replace("_", "-") for name in clash)
                raise ConfigError(f"--config sets the pair, tasks and sampling; drop {flags} (or edit the config)")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["options"], out["env_kwargs"] = dict(self.options), dict(self.env_kwargs)
        out["budgets"] = list(self.budgets)
        return out


@dataclass
class Prepared:
    controller: Any
    tasks: list[Any]
    agent: Any
    scorer: Any
    budgets: list[Budget]
    env: str
    options: dict[str, Any]


def settings_hash(settings: SweepSettings, config_hash: str | None) -> str:
    """What a resume must match: every setting but the tolerance (it only changes the pick)."""
    data = {k: v for k, v in settings.to_dict().items() if k != "tolerance"}
    data["config_hash"] = config_hash
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_out(out: Path, digest: str, *, resume: bool) -> None:
    path = out / MANIFEST
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if not resume:
        raise ConfigError(f"{out} already holds a sweep; pass --resume to continue it, or choose a new --out")
    if old.get("hash") != digest:
        raise ConfigError(f"--resume: {out} was swept with other settings (hash {old.get('hash')} != {digest}); "
                          "use a new --out, or resume with the same settings")


def prepare(settings: SweepSettings, config: RunConfig | None = None) -> Prepared:
    """Tasks, agent, scorer, controller and budgets (``config``: the loaded ``settings.config``);
    every budget is checked against the controller's smallest call before any episode."""
    options = dict(settings.options)
    if settings.config is not None:
        config = config or load_config(settings.config)  # imports its modules first
        pair_dir = resolve_pair_dir(config.pair_path)
        env, tasks = config_tasks(config, PairManifest.read(pair_dir), limit=settings.episodes)
        env_prompt, _, env_parser = probe_env(tasks)
        parser = build_parser(config, env_parser)
        choice = config.prompt
        horizon = resolve_horizon(config.horizon, tasks[0])
        s = config.sampling
        sampling = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                  top_k=s.top_k)
        spec = next((sc for sc in config.scorers if sc.key == settings.scorer), None)
    else:
        pair_dir = Path(settings.pair) if settings.pair else default_pair_dir("maze")
        manifest = PairManifest.read(pair_dir)
        env = settings.env or manifest.env or "maze"
        env_kwargs = dict(manifest.env_kwargs) if env == manifest.env else {}
        env_kwargs.update(settings.env_kwargs)
        try:
            if env_entry(env).tasks is None:
                raise ConfigError(f"environment {env!r} has no task list; register it with tasks='module:lister', "
                                  "or sweep a run config that lists its tasks: --config RUN.yaml with "
                                  "tasks: {env: ..., items: [...]}")
            tasks = make_tasks(env, env_kwargs, split=settings.split or "test", episodes=settings.episodes or 100,
                               start=settings.task_start)
        except TtsearchError as err:
            raise ConfigError(f"tasks: {err}") from None
        if not tasks:
            raise ConfigError(f"tasks: environment {env!r} listed no tasks")
        env_prompt, _, env_parser = probe_env(tasks)
        parser = load_attr(env_parser, what="parser")() if env_parser else None
        choice = "auto"
        horizon = resolve_horizon(settings.horizon, tasks[0])
        sampling = SamplingParams(max_new_tokens=settings.max_new_tokens or 2,
                                  temperature=1.0 if settings.temperature is None else settings.temperature)
        spec = None
    if horizon is not None and "horizon" in controller_options(settings.controller):
        options.setdefault("horizon", horizon)
    controller = make_controller(settings.controller, seed=settings.seed, **options)
    budgets = budget_grid(settings.limit, settings.budgets, Budget.parse(settings.base_budget))
    pair = ModelPair.load_dir(pair_dir)
    scorer = build_scorer(spec, pair) if spec is not None else make_scorer_for(settings.scorer, pair)
    problems = [f"{b.to_dict()}: {p}" for b in budgets
                for p in feasibility_problems(controller, scorer, b, max_new_tokens=sampling.max_new_tokens)]
    if problems:
        raise ConfigError("; ".join(problems))
    # the pair's prompt settings on the env it was trained on, the env's own anywhere else
    renderer = PromptRenderer.from_config(pair.tokenizer, prompt_for(pair, env, env_prompt, choice)[0])
    agent = Agent(pair, sampling=sampling, renderer=renderer, **({"parser": parser} if parser is not None else {}))
    return Prepared(controller, tasks, agent, scorer, budgets, env, options)


def run_budget_sweep(settings: SweepSettings, out: str | Path, *, resume: bool = False,
                     log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run (or resume) the sweep into ``out``; returns the summary (module docstring)."""
    out = Path(out)
    config = load_config(settings.config) if settings.config else None
    config_hash = config.config_hash() if config is not None else None
    digest = settings_hash(settings, config_hash)
    _check_out(out, digest, resume=resume)  # before any weights load
    p = prepare(settings, config)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if not manifest.exists():
        tmp = manifest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"hash": digest, "settings": settings.to_dict(), "config_hash": config_hash,
                                   "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                                  indent=1) + "\n")
        os.replace(tmp, manifest)
    log(f"sweep {settings.controller} / {settings.scorer} on {len(p.tasks)} {p.env} tasks, "
        f"{len(p.budgets)} budgets -> {out / POINTS}")
    points = run_sweep(p.controller, p.tasks, p.agent, p.scorer, p.budgets, out=out / POINTS, key=digest,
                       progress=log)
    best = best_point(points)
    cheapest = cheapest_within(points, settings.tolerance)
    warnings = []
    if best.successes == 0:
        warnings.append(f"no budget solved any of the {best.episodes} tasks: there is no compute-optimal budget "
                        "to recommend; raise the budgets, check the env with `ttsearch check-env`, and check "
                        "that the pair can read this env's observations")
        cheapest = None
    title = f"{settings.controller} / {settings.scorer} on {len(p.tasks)} {p.env} tasks"
    plot = plot_sweep(points, out / PLOT, title=title, cheapest=cheapest)
    return {"controller": settings.controller, "options": p.options, "scorer": settings.scorer, "env": p.env, "limit": settings.limit,
            "episodes": len(p.tasks), "points": [pt.to_dict() for pt in points], "best": best.to_dict(),
            "cheapest_within_tolerance": None if cheapest is None else cheapest.to_dict(),
            "tolerance": settings.tolerance, "warnings": warnings, "points_file": str(out / POINTS),
            "plot": str(plot)}
