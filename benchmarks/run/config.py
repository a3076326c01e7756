"""The typed configuration of ``ttsearch run``: tasks x arms x seeds, evaluated by every scorer.

    config = load_config("benchmarks/configs/paper-maze.yaml")   # RunConfig, or one-line ConfigError
    config.arms[0].controller, config.scorer_labels(), config.config_hash()

A config is YAML (see ``benchmarks/configs/smoke-maze.yaml``)::

    pair: default:maze                 # a shipped pair, or a folder made by `ttsearch pair train`
    tasks: {split: test, limit: 50}    # env: the pair's env unless given; kwargs over the pair's
    seeds: [0]                         # controller seeds
    arms:                              # one controller (+ the scorer label that guides it) each
      - {name: greedy, controller: greedy}
      - {name: bon16-pa, controller: trajectory_best_of_n, kwargs: {n: 16}, scorer: progress_advantage}
    scorers:                           # evaluation scorers: every one scores every trajectory
      - {name: progress_advantage}     # beta defaults to the pair's beta
      - {name: self_certainty, label: sc, kwargs: {k: 20}}
    applications: {uq_fa_arms: [bon16-pa]}

Unknown fields, unknown controller/scorer/env names, bad budgets and missing pair folders are
refused with one line naming the field and the fix. Relative pair folders are resolved against
the current directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ttsearch.agents.checkpoints.shipped import SHIPPED_PAIRS
from ttsearch.envs.errors import ConfigError, TtsearchError, unknown_choice
from ttsearch.envs.registry import REGISTRY, load_attr
from ttsearch.scorers.registry import SCORERS, scorer_options
from ttsearch.search.budget import Budget
from ttsearch.search.registry import CONTROLLERS, make_controller

DEFAULT_PAIR_PREFIX = "default:"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_budget(value: dict[str, Any]) -> dict[str, Any]:
    try:
        Budget(**value)
    except TypeError:
        fields = ", ".join(Budget.__dataclass_fields__)
        bad = sorted(set(value) - set(Budget.__dataclass_fields__))
        raise ValueError(f"unknown budget limit(s) {', '.join(bad)}; valid limits: {fields}") from None
    except TtsearchError as err:
        raise ValueError(str(err)) from None
    return value


class ScorerSpec(_Model):
    """An evaluation scorer: a registered scorer name, a label (default: the name) and options."""

    name: str
    label: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

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
        return self

    @property
    def key(self) -> str:
        return self.label or self.name


class ArmSpec(_Model):
    """One arm: a controller with its options, the scorer label guiding it, and its budget."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    controller: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    scorer: str | None = None
    """Label of an evaluation scorer (``scorers``); None for controllers that score nothing."""
    budget: dict[str, Any] | None = None
    """Budget limits (``Budget`` fields); None: the config's default ``budget``."""

    @field_validator("controller")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CONTROLLERS:
            raise ValueError(unknown_choice("controller", value, CONTROLLERS))
        return value

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _check_budget(value)

    @model_validator(mode="after")
    def _options(self) -> ArmSpec:
        if "seed" in self.kwargs:
            raise ValueError("put controller seeds in the top-level 'seeds' list, not in kwargs")
        try:  # builds it once so that bad option values fail here, not mid-run
            make_controller(self.controller, seed=0, **self.kwargs)
        except TtsearchError as err:
            raise ValueError(str(err)) from None
        return self


class TaskSpec(_Model):
    """Which tasks: ``list_tasks(env, split=..., limit=..., [episode_seed=...,] **kwargs)``."""

    env: str | None = None
    """Environment name (default: the pair's env from its manifest)."""
    split: str = "test"
    limit: int = Field(ge=1)
    episode_seed: int | None = None
    """Passed to the env's task lister when set (the maze seeds its episodes with it)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Task-lister / env options, laid over the pair manifest's env kwargs (minus gamma)."""

    @field_validator("env")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value and value not in REGISTRY:
            raise ValueError(unknown_choice("environment", value, REGISTRY) + " (or a 'module:Class' spec)")
        return value


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

    @model_validator(mode="after")
    def _both_or_neither(self) -> EngineSpec:
        if (self.policy_url is None) != (self.reference_url is None):
            raise ValueError("give both policy_url and reference_url, or neither (the run then launches servers)")
        if self.kind == "transformers" and self.policy_url is not None:
            raise ValueError("policy_url/reference_url need kind: sglang")
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


class RunConfig(_Model):
    """A whole experiment (see the module docstring)."""

    name: str = "run"
    pair: str
    tasks: TaskSpec
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    match_admissible: bool = True
    """Parse only listed admissible actions (the maze); other text is a parse error."""
    parser: str = "plain"
    """How a message becomes an action: "plain" (``PlainActionParser``, first line or after
    "Action:") or a ``"package.module:Class"`` spec of any ``ActionParser`` with a no-argument
    constructor (e.g. ``ttsearch.agents.parsing:FinalNumberParser``)."""
    prompt: Literal["auto", "pair", "env"] = "auto"
    """Prompt settings: the pair's (``ttsearch_pair.json``: system prompt, history length) or
    the env's own system prompt with the full history. auto: the pair's on the env it was
    trained on, the env's anywhere else."""
    horizon: Literal["auto", "none"] | int = "auto"
    """Step limit given to controllers that take ``horizon`` (auto: the env's ``max_steps``)."""
    budget: dict[str, Any] = Field(default_factory=dict)
    """Default per-episode budget for arms without their own."""
    arms: list[ArmSpec] = Field(min_length=1)
    scorers: list[ScorerSpec] = Field(min_length=1)
    top_logprobs: int = Field(default=20, ge=1)
    """Top-k log-probs per action token in the rescoring pass (certainty baselines read them)."""
    applications: Applications = Field(default_factory=Applications)
    save_trees: bool = False
    engine: EngineSpec = Field(default_factory=EngineSpec)
    concurrency: Literal["auto"] | int = "auto"
    """Episodes in flight at once (auto: 16; 1: one after the other). Results are the same either
    way up to float rounding (``docs/run_schema.md``); deployment only: not hashed."""
    env_timeout_s: float | None = Field(default=60.0, gt=0)
    """An env call (construction, reset, step, snapshot) running longer ends its episode with an
    error row; None: no limit. Not hashed (raise it and ``--resume --retry-errors``)."""
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    @field_validator("parser")
    @classmethod
    def _parser(cls, value: str) -> str:
        if value == "plain":
            return value
        if ":" not in value:
            raise ValueError(f"parser {value!r} is neither 'plain' nor a 'package.module:Class' spec")

        try:
            load_attr(value, what="parser")
        except TtsearchError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("pair")
    @classmethod
    def _pair(cls, value: str) -> str:
        if value.startswith(DEFAULT_PAIR_PREFIX):

            name = value[len(DEFAULT_PAIR_PREFIX):]
            if name not in SHIPPED_PAIRS:
                raise ValueError(unknown_choice("shipped pair", name, SHIPPED_PAIRS) + " (write default:NAME)")
        elif not Path(value).is_dir():
            raise ValueError(f"pair folder {value!r} does not exist; use default:maze or a folder made by "
                             "`ttsearch pair train --env maze --out DIR`")
        return value

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_budget(value)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"concurrency must be 'auto' or an int >= 1, got {value!r}")

    @field_validator("horizon", mode="before")
    @classmethod
    def _horizon(cls, value: Any) -> Any:
        if value in ("auto", "none") or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"horizon must be 'auto', 'none' or an int >= 1, got {value!r}")

    @model_validator(mode="after")
    def _references(self) -> RunConfig:
        arms = [a.name for a in self.arms]
        labels = self.scorer_labels()
        for kind, names in (("arm name", arms), ("scorer label", labels)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind}(s) {', '.join(dupes)}; give each a unique one")
        for i, arm in enumerate(self.arms):
            if arm.scorer is not None and arm.scorer not in labels:
                raise ValueError(f"arms[{i}].scorer {arm.scorer!r} is not an evaluation scorer label; "
                                 f"choose one of: {', '.join(labels)} (or add it to 'scorers')")
        for name in self.applications.uq_fa_arms:
            if name not in arms:
                raise ValueError(f"applications.uq_fa_arms: {unknown_choice('arm', name, arms)}")
        return self

    def scorer_labels(self) -> list[str]:
        return [s.key for s in self.scorers]

    def arm_budget(self, arm: ArmSpec) -> dict[str, Any]:
        return dict(self.budget if arm.budget is None else arm.budget)

    def normalised(self) -> dict[str, Any]:
        """The config with every default filled in (what the hash covers)."""
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """Covers everything that changes results; deployment settings do not (server URLs,
        concurrency, the executor, the env timeout: a resume may change them)."""
        data = self.normalised()
        data["engine"] = {"kind": self.engine.kind}  # URLs and processes are deployment
        for deployment in ("concurrency", "executor", "env_timeout_s"):
            data.pop(deployment)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _fields_at(loc: tuple[Any, ...]) -> list[str] | None:
    """The valid field names of the model that holds ``loc``'s last part (for 'unknown field')."""
    model: Any = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return list(getattr(model, "model_fields", {}))


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: where (file and field path), what is wrong, and how to fix it."""
    first = err.errors()[0]
    # drop pydantic's union-member tags (e.g. "literal['auto','none']"): not config fields
    loc = tuple(p for p in first["loc"] if isinstance(p, int) or "[" not in p)
    where = _loc_text(loc)
    if first["type"] == "extra_forbidden":
        valid = _fields_at(loc)
        fix = f"; valid fields here: {', '.join(valid)}" if valid else ""
        msg = f"unknown field {loc[-1]!r}{fix}"
        where = _loc_text(loc[:-1])
    elif first["type"] == "missing":
        msg = "required field is missing; add it"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] not in ("value_error", "assertion_error"):
            msg += f" (got {first.get('input')!r})"
    more = len(err.errors()) - 1
    tail = f" (+{more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {where}: {msg}{tail}" if loc else f"{source}: {msg}{tail}"


def parse_config(data: Any, *, source: str = "config") -> RunConfig:
    """Validate a config mapping; errors become one-line :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping of fields (pair, tasks, arms, scorers, ...)")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass a YAML file such as "
                          "benchmarks/configs/smoke-maze.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_config(data, source=str(path))
