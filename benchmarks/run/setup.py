"""Everything a run loads once: the pair (and its engines), tasks, scorers, parser and arms.

    s = setup(load_config("benchmarks/configs/smoke-maze.yaml"), out=Path("runs/smoke"), concurrency=8)
    s.agent.fork()          # one agent per episode in flight, over the run's shared engines
    s.close()               # stops the batching workers and any SGLang servers the run launched

With ``concurrency > 1`` the calls of all episodes in flight are gathered into shared batched
calls by one worker per embedded model: a thread (``BatchingBackend``), or with ``engine:
{processes: true}`` a process of its own (``EngineProcess``: the engine's forwards then never
wait for the episodes' Python). SGLang servers batch concurrent requests themselves. A pair's prompt settings (``ttsearch_pair.json``) belong to the env it was
trained on; on any other env the env's own system prompt and full history reach the model. The
manifest records which prompt was used.

Evaluation scorers with a merged reference (``reference:`` on a scorer, or the config's
``reference_variants``) get one more reference engine each, over π_α written once to the merge
cache, and an agent of their own (``Setup.variant_agents``) whose rescoring feeds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from ttsearch.agents import (
    Agent,
    ModelPair,
    PlainActionParser,
    PromptConfig,
    PromptRenderer,
    SamplingParams,
)
from ttsearch.agents.checkpoints.lora import servable_folder
from ttsearch.agents.checkpoints.merge import merged_reference_dir
from ttsearch.agents.checkpoints.model_pair import PairManifest, open_engine
from ttsearch.agents.checkpoints.shipped import resolve_pair_dir
from ttsearch.agents.engines.batching import BatchingBackend
from ttsearch.agents.engines.process import EngineProcess
from ttsearch.agents.engines.sglang.backend import SGLangBackend
from ttsearch.benchmarks.run.arms import ResolvedArm, resolve_arm
from ttsearch.benchmarks.run.config import RunConfig
from ttsearch.benchmarks.run.tasks import config_tasks
from ttsearch.envs.errors import ConfigError, TtsearchError
from ttsearch.envs.registry import load_attr
from ttsearch.scorers import make_scorer, scorer_options
from ttsearch.search.base import resolve_horizon

SCHEMA = 3
"""Row and manifest schema (docs/run_schema.md); 2 added error rows and the prompt record, 3 the
steps' token data, final answers, the task role (validation / test) and merged references."""


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
    prompt: dict[str, Any] = field(default_factory=dict)
    """The prompt settings used and where they came from (recorded in the manifest)."""
    closers: list[Any] = field(default_factory=list)
    """Called at the end of the run (stops batching workers and launched SGLang servers)."""
    variant_agents: dict[str, Any] = field(default_factory=dict)
    """Merged-reference label -> an agent over (policy, π_α): rescoring for the scorers using it."""
    scorer_references: dict[str, str | None] = field(default_factory=dict)
    """Scorer label -> its merged reference's label (None: the pair's reference)."""
    validation_ids: frozenset[str] = frozenset()
    """Ids of the config's validation tasks (rows say ``task.role: validation``)."""
    final_answers: bool = False
    """The env ends episodes with a final answer (rows record it; best-of-N may vote)."""

    def agent_for(self, label: str | None, base: Any) -> Any:
        """The agent that searches with scorer ``label``: ``base`` (the episode's fork of
        ``agent``) or a fork of its merged reference's agent."""
        key = self.scorer_references.get(label) if label is not None else None
        return base if key is None else self.variant_agents[key].fork()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def build_scorer(spec, pair) -> Any:
    kwargs = dict(spec.kwargs)
    if "beta" in scorer_options(spec.name):  # progress advantage and its variants: the pair's β
        kwargs.setdefault("beta", pair.beta)
    try:
        return make_scorer(spec.name, **kwargs)
    except TtsearchError as err:
        raise ConfigError(f"scorers[{spec.key}]: {err}") from None


def build_parser(config: RunConfig, env_parser: str | None = None) -> Any:
    """The config's action parser: ``plain`` or a ``module:Class`` spec (built with no arguments).
    ``env_parser``: the env's own (``Env.action_parser``), used in place of ``plain``."""
    spec = env_parser if config.parser == "plain" and env_parser else config.parser
    if spec == "plain":
        return PlainActionParser(match_admissible=config.match_admissible)
    try:
        parser = load_attr(spec, what="parser")()
    except TtsearchError as err:
        raise ConfigError(f"parser: {err}") from None
    except TypeError as err:
        raise ConfigError(f"parser: {spec} cannot be built without arguments ({err})") from None
    if not callable(getattr(parser, "parse", None)):
        raise ConfigError(f"parser: {spec} has no parse(text, *, admissible) method")
    return parser


def serve_reference(folder: Path, name: str, config: RunConfig, *, concurrency: int) -> tuple[Any, list[Any]]:
    """One more reference engine (a merged π_α) served like the pair's: (backend, closers)."""
    if config.engine.kind != "transformers":
        raise ConfigError("merged references (scorer 'reference:', reference_variants) need the embedded "
                          "engine (engine: {kind: transformers}); SGLang would need a server per variant")
    if config.engine.processes and concurrency > 1:
        engine = EngineProcess.start(partial(open_engine, folder, name=name))
        return engine, [engine.close]
    engine = open_engine(folder, name=name)
    if concurrency > 1:
        engine = BatchingBackend(engine)
        return engine, [engine.close]
    return engine, []


def variant_agents(config: RunConfig, pair_dir: Path, agent: Any, *, concurrency: int) -> tuple[dict[str, Any], list[Any]]:
    """An agent over (the run's policy, π_α) for every merged reference an evaluation scorer uses."""
    manifest, agents, closers = agent.pair.manifest, {}, []
    for spec in config.evaluation_scorers():
        if spec.reference is None or spec.reference_key in agents:
            continue
        folder = merged_reference_dir(manifest.policy_dir(pair_dir), manifest.reference_dir(pair_dir),
                                      spec.reference.to_merge())
        engine, close = serve_reference(folder, f"reference@{spec.reference_key}", config, concurrency=concurrency)
        closers += close
        variant = agent.pair.with_backends(agent.pair.policy, engine)
        variant.reference_merge = spec.reference.to_merge()
        agents[spec.reference_key] = Agent(variant, sampling=agent.sampling, parser=agent.parser,
                                           renderer=agent.renderer)
    return agents, closers


def serve_pair(pair: Any, pair_dir: Path, config: RunConfig, run_dir: Path, *, concurrency: int
               ) -> tuple[Any, list[Any]]:
    """The pair served as the config says: (pair, closers). SGLang servers are launched for the
    run (logs in ``run_dir``) unless the config gives the URLs of running ones."""
    engine = config.engine
    if engine.kind == "transformers":
        cache = None if engine.cache_mb is None else engine.cache_mb << 20
        if cache is not None:
            for backend in {id(b): b for b in (pair.policy, pair.reference)}.values():
                backend.set_cache_bytes(cache)
        if concurrency <= 1:
            return pair, []
        if not engine.processes:  # many episodes in flight: one batching worker thread per model
            policy = BatchingBackend(pair.policy)
            reference = policy if pair.reference is pair.policy else BatchingBackend(pair.reference)
            return pair.with_backends(policy, reference), list({id(b): b.close for b in (policy, reference)}.values())
        manifest = pair.manifest  # each model in an engine process of its own
        policy = EngineProcess.start(partial(open_engine, manifest.policy_dir(pair_dir), name="policy",
                                             cache_bytes=cache))
        try:
            reference_dir = pair.reference.path if pair.reference_merge is not None else manifest.reference_dir(pair_dir)
            reference = EngineProcess.start(partial(open_engine, reference_dir, name="reference",
                                                    cache_bytes=cache))
        except BaseException:
            policy.close()
            raise
        return pair.with_backends(policy, reference), [policy.close, reference.close]
    if engine.policy_url is not None:
        return pair.with_backends(SGLangBackend(engine.policy_url, name="policy"),
                                  SGLangBackend(engine.reference_url, name="reference")), []
    manifest = pair.manifest
    # A LoRA policy is served merged: SGLang's LoRA path does not start on a CPU.
    policy_dir = servable_folder(manifest.policy_dir(pair_dir), run_dir)
    policy = SGLangBackend.launch(policy_dir, run_dir=run_dir, name="policy")
    try:
        reference_dir = pair.reference.path if pair.reference_merge is not None else manifest.reference_dir(pair_dir)
        reference = SGLangBackend.launch(reference_dir, run_dir=run_dir, name="reference")
    except BaseException:
        policy.close()
        raise
    return pair.with_backends(policy, reference), [policy.close, reference.close]


def probe_env(tasks: list[Any]) -> tuple[str, bool, str | None]:
    """The first task's env: its system prompt, whether it ends with a final answer
    (``Env.has_final_answer``) and the parser its messages need (``Env.action_parser``)."""
    probe = tasks[0].make()
    try:
        return (probe.system_prompt, bool(getattr(probe, "has_final_answer", False)),
                getattr(probe, "action_parser", None))
    finally:
        probe.close()


def prompt_for(pair: Any, env: str, env_prompt: str, choice: str = "auto") -> tuple[PromptConfig, dict[str, Any]]:
    """The pair's prompt settings (``choice="pair"``, or ``"auto"`` on the env the pair was
    trained on), else the env's own system prompt (``env_prompt``) with the full history; and
    the record of what was used (``system_prompt``: the text the model is given)."""
    trained_on = pair.manifest.env
    if choice == "pair" or (choice == "auto" and trained_on == env):
        config = pair.prompt
        source = "pair"
    else:
        config = PromptConfig()
        source = "env" if trained_on in (None, env) else f"env (the pair was trained on {trained_on!r})"
    used = env_prompt if config.system_prompt is None else config.system_prompt
    # the settings first: their system_prompt is None (the env's) where ``used`` says which text
    return config, {**config.to_dict(), "source": source, "system_prompt": used}


def setup(config: RunConfig, *, limit: int | None = None, out: Path | None = None, concurrency: int = 1) -> Setup:
    pair_dir = resolve_pair_dir(config.pair_path)
    # Tasks, parser and horizon before the weights: an env or config problem fails in seconds.
    manifest = PairManifest.read(pair_dir)
    env, tasks = config_tasks(config, manifest, limit=limit)
    validation = config_tasks(config, manifest, limit=limit, validation=True)[1] if config.validation else []
    shared = sorted({t.id for t in tasks} & {t.id for t in validation})
    if shared:
        raise ConfigError(f"validation: task id(s) {', '.join(shared[:5])} are also test tasks; validate on "
                          "other tasks (another split, or a task-lister start past the test tasks)")
    env_prompt, answers, env_parser = probe_env(tasks)
    parser = build_parser(config, env_parser)
    horizon = resolve_horizon(config.horizon, tasks[0])
    merge = config.pair_reference.to_merge() if config.pair_reference is not None else None
    pair = ModelPair.load_dir(pair_dir, reference=merge)
    s = config.sampling
    sampling = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    specs = config.evaluation_scorers()
    scorers = {spec.key: build_scorer(spec, pair) for spec in specs}
    arms = [resolve_arm(arm, config, horizon) for arm in config.arms]
    prompt_config, prompt = prompt_for(pair, env, env_prompt, config.prompt)
    prompt["parser"] = f"{type(parser).__module__}:{type(parser).__qualname__}"
    pair, closers = serve_pair(pair, pair_dir, config, (out or Path(".")) / "sglang", concurrency=concurrency)
    agent = Agent(pair, sampling=sampling, parser=parser,
                  renderer=PromptRenderer.from_config(pair.tokenizer, prompt_config))
    variants, more = variant_agents(config, pair_dir, agent, concurrency=concurrency)
    return Setup(config, pair_dir, pair, agent, env, tasks + validation, scorers, arms, prompt, closers + more,
                 variants, {spec.key: spec.reference_key for spec in specs}, frozenset(t.id for t in validation),
                 answers)


def run_manifest(s: Setup) -> dict[str, Any]:
    config = s.config
    return {"schema": SCHEMA, "config": config.normalised(), "config_hash": config.config_hash(),
            "pair": str(s.pair_dir), "scorers": config.scorer_labels(), "arms": [arm.to_dict() for arm in s.arms],
            "scorer_specs": {spec.key: {"name": spec.name, "kwargs": dict(spec.kwargs),
                                        "reference": None if spec.reference is None else spec.reference.to_merge().to_dict(),
                                        "tuned": spec.tuned} for spec in config.evaluation_scorers()},
            "validation_tasks": sorted(s.validation_ids),
            "applications": {"uq_fa_arms": list(config.applications.uq_fa_arms)}, "prompt": s.prompt,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
