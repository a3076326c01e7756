"""The parts of a run config (``config.py`` holds the whole and its cross-field checks).

    ScorerSpec(name="progress_advantage", label="pa@linear-0.5", reference={"merge": "linear", "alpha": 0.5})
    PairSpec(path="default:maze", reference={"merge": "ties", "alpha": 0.5})   # the pair's reference is π_α
    expand_variants(scorers, [ReferenceSpec(alpha=0.25)], None)                # every PA label again, at π_α

A scorer may read its reference log-probs from a merged reference π_α = π_ref + α·(π_θ − π_ref)
(``ttsearch.agents.checkpoints.merge``) instead of the pair's: ``reference:`` on the scorer. A run
config's ``reference_variants:`` sweeps α for every progress-advantage scorer (or the labels in
``reference_variant_scorers``): each gets one more label per variant, ``<label>@<variant>``
(``pa@linear-0.25``), so every table names its α. ``tuned:`` holds what ``ttsearch tune-scorer``
recorded about a picked scorer (the objective and its validation value); the runner ignores it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ttsearch.agents.checkpoints.merge import ReferenceMerge
from ttsearch.envs.errors import TtsearchError, unknown_choice
from ttsearch.envs.registry import REGISTRY, env_names, load_attr
from ttsearch.scorers.registry import SCORERS, scorer_options


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceSpec(_Model):
    """A merged reference π_α (``ReferenceMerge``): method, α, and the method's density / seed."""

    merge: Literal["linear", "ties", "dare"] = "linear"
    alpha: float = Field(ge=0, le=1)
    density: float | None = Field(default=None, gt=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _valid(self) -> ReferenceSpec:
        try:
            self.to_merge()
        except TtsearchError as err:
            raise ValueError(str(err)) from None
        return self

    def to_merge(self) -> ReferenceMerge:
        return ReferenceMerge(merge=self.merge, alpha=self.alpha, density=self.density, seed=self.seed)

    @property
    def label(self) -> str:
        return self.to_merge().label


class ScorerSpec(_Model):
    """An evaluation scorer: a registered scorer name, a label (default: the name) and options;
    ``reference``: score against a merged reference instead of the pair's."""

    name: str
    label: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    reference: ReferenceSpec | None = None
    tuned: dict[str, Any] | None = None
    """Provenance written by ``ttsearch tune-scorer`` (objective, validation value); not used to score."""

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SCORERS:
            raise ValueError(unknown_choice("scorer", value, SCORERS))
        return value

    @model_validator(mode="after")
    def _options(self) -> ScorerSpec:
        unknown = sorted(set(self.kwargs) - set(scorer_options(self.name)))
        if unknown:
            raise ValueError(f"scorer {self.name!r} has no option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(scorer_options(self.name)) or '(none)'}")
        if self.reference is not None and "reference_logprobs" not in SCORERS[self.name].requires:
            raise ValueError(f"scorer {self.name!r} reads no reference log-probs: 'reference' does not apply")
        return self

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def reference_key(self) -> str | None:
        """The merged reference's label, None for the pair's own (what groups the rescoring)."""
        return None if self.reference is None else self.reference.label


class PairSpec(_Model):
    """``pair: {path: default:maze, reference: {merge: linear, alpha: 0.5}}``: the pair with its
    reference replaced by π_α for search and scoring alike."""

    path: str
    reference: ReferenceSpec | None = None


class TaskItem(_Model):
    """One task listed inline: ``Task(env=tasks.env, id=id, seed=seed, kwargs={**tasks.kwargs, **kwargs})``."""

    id: str = Field(min_length=1)
    seed: int = 0
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(_Model):
    """Which tasks: ``list_tasks(env, split=..., limit=..., [episode_seed=...,] **kwargs)``, or
    the ``items`` listed inline (then ``limit``, when given, keeps the first ones)."""

    env: str | None = None
    """Environment name (default: the pair's env from its manifest) or a ``"module:Class"`` spec."""
    split: str = "test"
    limit: int | None = Field(default=None, ge=1)
    """How many tasks (required with a task lister; optional with ``items``)."""
    episode_seed: int | None = None
    """Passed to the env's task lister when set (the maze seeds its episodes with it)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Task-lister / env options, laid over the pair manifest's env kwargs (minus gamma)."""
    items: list[TaskItem] | None = Field(default=None, min_length=1)
    """Tasks listed inline, for any env (one without a task lister too)."""

    @field_validator("env")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if ":" in value:
            try:  # imported now: a missing module is a config error, before any weights load
                load_attr(value, what="environment")
            except TtsearchError as err:
                raise ValueError(str(err)) from None
        elif value not in REGISTRY and value not in env_names():
            raise ValueError(unknown_choice("environment", value, env_names())
                             + " (or a 'module:Class' spec, or add the module that registers it to 'imports')")
        return value

    @model_validator(mode="after")
    def _which(self) -> TaskSpec:
        if self.items is None:
            if self.limit is None:
                raise ValueError("give 'limit' (how many tasks the env's task lister yields) or list the "
                                 "tasks in 'items': [{id: ..., seed: ..., kwargs: {...}}]")
            entry = REGISTRY.get(self.env) if self.env is not None else None
            if self.env is not None and (":" in self.env or (entry is not None and entry.tasks is None)):
                raise ValueError(f"environment {self.env!r} has no task list; list its tasks in 'items': "
                                 "[{id: ..., seed: ..., kwargs: {...}}], or register it with "
                                 "tasks='module:lister' and name it by that name")
        else:
            ids = [item.id for item in self.items]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate task id(s) {', '.join(dupes)} in 'items'; results are keyed by id")
            if self.episode_seed is not None:
                raise ValueError("episode_seed is a task-lister option; give each item its own 'seed'")
        return self


class SamplingSpec(_Model):
    max_new_tokens: int = Field(default=4, ge=1)
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)


class Applications(_Model):
    uq_fa_arms: list[str] = Field(default_factory=list)
    """Arms whose trajectories (all rollouts where present) form the UQ / FA pool."""


class EngineSpec(_Model):
    """Which engine serves the pair: the embedded transformers engine, or SGLang servers."""

    kind: Literal["transformers", "sglang"] = "transformers"
    policy_url: str | None = None
    reference_url: str | None = None
    """URLs of running servers (``ttsearch serve``); both None: the run launches its own
    (logs in OUT/sglang) and stops them at the end. Deployment only: not in the config hash."""
    processes: bool = False
    """transformers with concurrency > 1: serve each model from an engine process of its own
    instead of a worker thread (deployment only: not in the config hash)."""
    cache_mb: int | None = Field(default=None, ge=0)
    """transformers: each model's prefix-cache budget in MiB (None: the engine's 512). Raise it
    for long multi-turn prompts shared by many episodes in flight (deployment only: not hashed)."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> EngineSpec:
        if (self.policy_url is None) != (self.reference_url is None):
            raise ValueError("give both policy_url and reference_url, or neither (the run then launches servers)")
        if self.kind == "transformers" and self.policy_url is not None:
            raise ValueError("policy_url/reference_url need kind: sglang")
        if self.kind == "sglang" and self.cache_mb is not None:
            raise ValueError("cache_mb sizes the embedded engine's cache; SGLang sizes its own (kind: transformers)")
        return self


class ExecutorSpec(_Model):
    """Where episodes run: in this process (``local``), or sharded over Ray actors (``ray``), each
    with its own engine (or pointing at the config's SGLang servers). Deployment only: not hashed."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    """A running Ray cluster (``ray start --head``; e.g. "auto" or "ray://host:10001"); None
    with kind ray: a local cluster is started for the run."""
    workers: int = Field(default=2, ge=1)
    """Ray actors, each running ``concurrency`` episodes at a time."""


def is_progress_advantage(spec: ScorerSpec) -> bool:
    return spec.name.startswith("progress_advantage")


def expand_variants(scorers: list[ScorerSpec], variants: list[ReferenceSpec],
                    labels: list[str] | None) -> list[ScorerSpec]:
    """``scorers`` plus, for every variant, a copy of each chosen scorer (``labels``, default every
    progress-advantage scorer on the pair's reference) labelled ``<label>@<variant>``."""
    chosen = [s for s in scorers if s.reference is None
              and (s.key in labels if labels is not None else is_progress_advantage(s))]
    extra = [s.model_copy(update={"label": f"{s.key}@{v.label}", "reference": v}) for v in variants for s in chosen]
    return [*scorers, *extra]
