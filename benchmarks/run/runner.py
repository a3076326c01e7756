"""The experiment loop of ``ttsearch run``: tasks x arms x seeds, one JSON line per episode.

    config = load_config("benchmarks/configs/smoke-maze.yaml")
    summary = run_experiment(config, out="runs/smoke", resume=False, limit=None)

Writes ``OUT/run.json`` (the manifest, once) and appends one row per finished episode to
``OUT/episodes.jsonl`` (written in one piece, flushed and fsync'ed). A resume truncates a
trailing partial line left by a crash, skips finished keys and refuses a changed config.
After each search, the returned trajectory and every rollout are re-scored in one batched
pass per model (``Agent.rescore``) and every evaluation scorer scores every trajectory; that
pass is reported as ``eval_usage``, apart from the search's own ``usage``.
Row fields: ``docs/run_schema.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
from ttsearch.agents.checkpoints.lora import servable_folder
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.agents.engines.sglang.backend import SGLangBackend
from ttsearch.benchmarks.run.config import DEFAULT_PAIR_PREFIX, ArmSpec, RunConfig
from ttsearch.benchmarks.run.episode_record import task_info, trajectory_record
from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.benchmarks.run.tasks import config_tasks
from ttsearch.envs.errors import BackendError, ConfigError, TtsearchError
from ttsearch.envs.registry import load_attr
from ttsearch.scorers import make_scorer
from ttsearch.scorers.base import token_needs
from ttsearch.search import Budget, Controller, make_controller
from ttsearch.search.base import resolve_horizon
from ttsearch.search.registry import controller_options

SCHEMA = 1
SPLIT_WRITE_ENV = "TTSEARCH_RUN_SPLIT_WRITE_S"
"""Test hook: seconds to pause between the two halves of a row's write (0: one write). The crash
test sets it to SIGKILL the runner mid-line and prove the resume repairs the file."""


def episode_key(arm: str, task_id: str, seed: int) -> str:
    return f"{arm}|{task_id}|{seed}"


def key_hash(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


# -- the run folder ---------------------------------------------------------------------------

class RunStore:
    """``OUT/run.json`` + ``OUT/episodes.jsonl``: crash-safe appends, resumable."""

    def __init__(self, out: str | Path, manifest: dict[str, Any], *, resume: bool):
        self.out = Path(out)
        self.episodes = self.out / "episodes.jsonl"
        self.manifest_path = self.out / "run.json"
        old = self.check(self.out, manifest["config_hash"], resume=resume)
        if old is not None:
            self.manifest = old
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            self.manifest = manifest
            tmp = self.manifest_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(manifest, indent=1) + "\n")
            os.replace(tmp, self.manifest_path)  # atomic: run.json is whole or absent
        self.done = self._load()
        self._sink = JsonlWriter(self.episodes, split_pause_s=float(os.environ.get(SPLIT_WRITE_ENV, "0") or 0))

    @staticmethod
    def check(out: Path, config_hash: str, *, resume: bool) -> dict[str, Any] | None:
        """The existing manifest in ``out`` (None if none); refuse a clash before any work."""
        path = Path(out) / "run.json"
        if not path.exists():
            return None
        old = json.loads(path.read_text())
        if not resume:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose a new --out")
        if old.get("config_hash") != config_hash:
            raise ConfigError(f"--resume: {out} was run with another config (hash {old.get('config_hash')} != "
                              f"{config_hash}); use a new --out, or resume with the same config")
        return old

    def _load(self) -> set[str]:
        """Finished keys (``read_rows`` cuts a trailing partial line left by a crash)."""
        keys: set[str] = set()
        for number, row in enumerate(read_rows(self.episodes), 1):
            key = row.get("key")
            if key is None:
                raise ConfigError(f"{self.episodes} line {number} is not an episode row; "
                                  "move the file away and rerun, or use a new --out")
            if key in keys:
                raise ConfigError(f"{self.episodes} holds key {key!r} twice (line {number}); it was not "
                                  "written by `ttsearch run`; use a new --out")
            keys.add(key)
        return keys

    def append(self, row: dict[str, Any]) -> None:
        self._sink.append(row)
        self.done.add(row["key"])

    def close(self) -> None:
        self._sink.close()


# -- building what the config names ---------------------------------------------------------

@dataclass
class Setup:
    """Everything loaded once per run: the pair, agent, tasks, scorers and resolved arms."""

    config: RunConfig
    pair_dir: Path
    pair: Any
    agent: Any
    env: str
    tasks: list[Any]
    scorers: dict[str, Any]
    arms: list[ResolvedArm] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)
    """Called at the end of the run (stops the SGLang servers the run launched)."""

    def close(self) -> None:
        for close in self.closers:
            close()


def resolve_pair_dir(spec: str) -> Path:
    if spec.startswith(DEFAULT_PAIR_PREFIX):
        return default_pair_dir(spec[len(DEFAULT_PAIR_PREFIX):])
    return Path(spec).resolve()


def build_scorer(spec, pair) -> Any:
    kwargs = dict(spec.kwargs)
    if spec.name == "progress_advantage":
        kwargs.setdefault("beta", pair.beta)
    try:
        return make_scorer(spec.name, **kwargs)
    except TtsearchError as err:
        raise ConfigError(f"scorers[{spec.key}]: {err}") from None


@dataclass(frozen=True, slots=True)
class ResolvedArm:
    """An arm as run: its controller with every option filled in (the horizon too), the label
    of the scorer that guides it, and its per-episode budget."""

    name: str
    controller: str
    controller_kwargs: Mapping[str, Any]
    search_scorer: str | None
    budget: Mapping[str, Any]

    def make_controller(self, seed: int) -> Controller:
        return make_controller(self.controller, seed=seed, **self.controller_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record of the arm (``run.json`` ``arms``)."""
        return {"name": self.name, "controller": self.controller, "controller_kwargs": dict(self.controller_kwargs),
                "search_scorer": self.search_scorer, "budget": dict(self.budget)}


def resolve_arm(arm: ArmSpec, config: RunConfig, horizon: int | None) -> ResolvedArm:
    """The arm as run: controller kwargs with the horizon filled in, its budget and scorer label."""
    kwargs = dict(arm.kwargs)
    if horizon is not None and "horizon" in controller_options(arm.controller):
        kwargs.setdefault("horizon", horizon)
    return ResolvedArm(arm.name, arm.controller, kwargs, arm.scorer, config.arm_budget(arm))


def build_parser(config: RunConfig) -> Any:
    """The config's action parser: ``plain`` or a ``module:Class`` spec (built with no arguments)."""

    if config.parser == "plain":
        return PlainActionParser(match_admissible=config.match_admissible)
    try:
        parser = load_attr(config.parser, what="parser")()
    except TtsearchError as err:
        raise ConfigError(f"parser: {err}") from None
    except TypeError as err:
        raise ConfigError(f"parser: {config.parser} cannot be built without arguments ({err})") from None
    if not callable(getattr(parser, "parse", None)):
        raise ConfigError(f"parser: {config.parser} has no parse(text, *, admissible) method")
    return parser


def serve_pair(pair: Any, pair_dir: Path, engine: Any, run_dir: Path) -> tuple[Any, list[Any]]:
    """The pair served as ``engine`` says: (pair, closers). SGLang servers are launched for the
    run (logs in ``run_dir``) unless the config gives the URLs of running ones."""
    if engine.kind == "transformers":
        return pair, []

    if engine.policy_url is not None:
        return pair.with_backends(SGLangBackend(engine.policy_url, name="policy"),
                                  SGLangBackend(engine.reference_url, name="reference")), []

    manifest = pair.manifest
    # A LoRA policy is served merged: SGLang's LoRA path does not start on a CPU.
    policy_dir = servable_folder(manifest.policy_dir(pair_dir), run_dir)
    policy = SGLangBackend.launch(policy_dir, run_dir=run_dir, name="policy")
    try:
        reference = SGLangBackend.launch(manifest.reference_dir(pair_dir), run_dir=run_dir, name="reference")
    except BaseException:
        policy.close()
        raise
    return pair.with_backends(policy, reference), [policy.close, reference.close]


def setup(config: RunConfig, *, limit: int | None = None, out: Path | None = None) -> Setup:
    pair_dir = resolve_pair_dir(config.pair)
    # Tasks, parser and horizon before the weights: an env or config problem fails in seconds.
    env, tasks = config_tasks(config, PairManifest.read(pair_dir), limit=limit)
    parser = build_parser(config)
    horizon = resolve_horizon(config.horizon, tasks[0])
    pair = ModelPair.load_dir(pair_dir)
    s = config.sampling
    sampling = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    scorers = {spec.key: build_scorer(spec, pair) for spec in config.scorers}
    arms = [resolve_arm(arm, config, horizon) for arm in config.arms]
    pair, closers = serve_pair(pair, pair_dir, config.engine, (out or Path(".")) / "sglang")
    agent = Agent(pair, sampling=sampling, parser=parser)
    return Setup(config, pair_dir, pair, agent, env, tasks, scorers, arms, closers)


def run_manifest(config: RunConfig, pair_dir: Path, arms: list[ResolvedArm]) -> dict[str, Any]:
    return {"schema": SCHEMA, "config": config.normalised(), "config_hash": config.config_hash(),
            "pair": str(pair_dir), "scorers": config.scorer_labels(), "arms": [arm.to_dict() for arm in arms],
            "applications": {"uq_fa_arms": list(config.applications.uq_fa_arms)},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# -- one episode ------------------------------------------------------------------------------

def _unique(trajectories: list[Any]) -> list[Any]:
    seen, out = set(), []
    for t in trajectories:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def run_episode(s: Setup, arm: ResolvedArm, task: Any, seed: int, controllers: dict) -> tuple[dict[str, Any], Any]:
    """Search one task with one arm and seed; return (row, search tree)."""

    started = time.perf_counter()
    ckey = (arm.name, seed)
    if ckey not in controllers:
        controllers[ckey] = arm.make_controller(seed)
    label = arm.search_scorer
    scorer = s.scorers[label] if label is not None else next(iter(s.scorers.values()))
    result = controllers[ckey].run(task, task.make, s.agent, scorer, Budget(**arm.budget))
    rollouts = list(result.rollouts)
    chosen = next((i for i, r in enumerate(rollouts) if r is result.trajectory), None) if rollouts else None
    pool = _unique([result.trajectory, *rollouts])
    reference, top = token_needs(s.scorers.values())
    top = top or s.config.top_logprobs  # top log-probs are recorded in every row
    # A cold prefix cache makes the rescored log-probs bit-identical functions of the trajectory,
    # whatever ran before in this process: a resumed run reproduces every score (the random
    # baseline hashes the log-prob bits, so 1e-8 cache noise would otherwise change it).
    for engine in (s.pair.policy, s.pair.reference):
        engine.clear_cache()
    pol0, ref0 = s.pair.policy.stats.scored_tokens, s.pair.reference.stats.scored_tokens
    rescored = dict(zip(map(id, pool), s.agent.rescore(pool, reference=reference, top_logprobs=top)))
    eval_usage = {"policy_scored_tokens": s.pair.policy.stats.scored_tokens - pol0,
                  "reference_scored_tokens": s.pair.reference.stats.scored_tokens - ref0}
    records = {i: trajectory_record(t, s.scorers) for i, t in rescored.items()}
    tree = result.tree
    chosen_nodes = [n for n, status in tree.graph.nodes(data="status") if status == "chosen"]
    tree_path = tree.path(max(chosen_nodes, key=lambda n: tree.graph.nodes[n]["depth"])) if chosen_nodes else None
    row = {
        "schema": SCHEMA, "key": episode_key(arm.name, task.id, seed), "arm": arm.name,
        "controller": arm.controller, "controller_kwargs": dict(arm.controller_kwargs),
        "search_scorer": label, "budget": result.budget.to_dict(), "seed": seed,
        "task": {"id": task.id, "env": task.env, "seed": task.seed, "split": task.split, "info": task_info(task)},
        "success": result.success, "reward": result.trajectory.total_reward,
        "n_steps": len(result.trajectory.steps), "stop_reason": result.stop_reason,
        "stopped_early": result.stopped_early, "usage": result.usage.to_dict(), "eval_usage": eval_usage,
        "wall_s": round(time.perf_counter() - started, 4),
        "trajectory": records[id(result.trajectory)],
        "rollouts": [records[id(r)] for r in rollouts] if rollouts else None,
        "chosen": chosen, "tree_path": tree_path,
    }
    return row, tree


def episodes(s: Setup) -> Iterator[tuple[ResolvedArm, Any, int]]:
    """(arm, task, seed) in run order: task-major, so a partial run covers every arm."""
    for task in s.tasks:
        for arm in s.arms:
            for seed in s.config.seeds:
                yield arm, task, seed


def run_experiment(config: RunConfig, out: str | Path, *, resume: bool = False, limit: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``; returns counts."""

    RunStore.check(Path(out), config.config_hash(), resume=resume)  # before loading any model
    s = setup(config, limit=limit, out=Path(out))
    try:
        store = RunStore(out, run_manifest(config, s.pair_dir, s.arms), resume=resume)
    except BaseException:
        s.close()
        raise
    todo = [(a, t, seed) for a, t, seed in episodes(s) if episode_key(a.name, t.id, seed) not in store.done]
    console = Console(stderr=True)
    if progress:
        console.print(f"run {config.name!r}: {len(s.tasks)} tasks x {len(s.arms)} arms x {len(config.seeds)} seeds; "
                      f"{len(store.done)} episodes already in {store.episodes}")
    controllers: dict = {}
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=not progress) as bar:
            handle = bar.add_task("episodes", total=len(todo))
            for arm, task, seed in todo:
                bar.update(handle, description=f"{arm.name} {task.id}")
                row, tree = run_episode(s, arm, task, seed, controllers)
                if config.save_trees:  # before the row: a row on disk implies its tree is too
                    trees = store.out / "trees"
                    trees.mkdir(exist_ok=True)
                    tree.write_json(trees / f"{key_hash(row['key'])}.json")
                store.append(row)
                bar.advance(handle)
    except BackendError as err:  # e.g. a server died: say that nothing finished is lost
        raise BackendError(f"{err} -- the {len(store.done)} finished episodes are kept in {store.episodes}; "
                           "fix the engine and rerun with --resume") from None
    finally:
        store.close()
        s.close()
    return {"out": str(store.out), "ran": len(todo), "total": len(store.done),
            "seconds": round(time.perf_counter() - started, 2)}
