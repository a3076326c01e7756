"""The typed configuration of ``ttsearch run``: tasks x arms x seeds, evaluated by every scorer.

    config = load_config("benchmarks/configs/paper-maze.yaml")   # RunConfig, or one-line ConfigError
    config.arms[0].controller, config.scorer_labels(), config.config_hash()

A config is YAML (see ``benchmarks/configs/smoke-maze.yaml``)::

    imports: [keydoor_env]             # optional: modules that register environments (imported first)
    pair: default:maze                 # a shipped pair, or a folder made by `ttsearch pair train`
    tasks: {split: test, limit: 50}    # env: the pair's env unless given; kwargs over the pair's
    # or tasks listed inline (any env, a lister or not):
    # tasks: {env: keydoor, items: [{id: kd-0, seed: 0, kwargs: {size: 5}}, {id: kd-1, seed: 1}]}
    seeds: [0]                         # controller seeds
    arms:                              # one controller (+ the scorer label that guides it) each
      - {name: greedy, controller: greedy}
      - {name: bon16-pa, controller: trajectory_best_of_n, kwargs: {n: 16}, scorer: progress_advantage}
    scorers:                           # evaluation scorers: every one scores every trajectory
      - {name: progress_advantage}     # beta defaults to the pair's beta
      - {name: self_certainty, label: sc, kwargs: {k: 20}}
    applications: {uq_fa_arms: [bon16-pa]}

The whole config is checked before anything runs, and every problem is listed in one line
(unknown fields first, since a misspelt field also makes a required one look missing): unknown
fields, unknown controller/scorer/env names, environment modules that do not import, bad and
impossible budgets (an arm whose budget cannot pay for one call of its controller with its
scorer), missing pair folders. Relative pair folders are resolved against the current directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ttsearch.agents.checkpoints.shipped import DEFAULT_PAIR_PREFIX, SHIPPED_PAIRS
from ttsearch.benchmarks.run.config_errors import format_validation_error
from ttsearch.benchmarks.run.config_specs import (
    Applications,
    EngineSpec,
    ExecutorSpec,
    PairSpec,
    ReferenceSpec,
    SamplingSpec,
    ScorerSpec,
    TaskSpec,
    expand_variants,
)
from ttsearch.envs.errors import ConfigError, TtsearchError, unknown_choice
from ttsearch.envs.registry import import_modules, load_attr
from ttsearch.scorers.registry import SCORERS
from ttsearch.search.base import Controller
from ttsearch.search.budget import Budget
from ttsearch.search.registry import CONTROLLERS, make_controller


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


class RunConfig(_Model):
    """A whole experiment (see the module docstring)."""

    name: str = "run"
    imports: list[str] = Field(default_factory=list)
    """Modules imported before the rest of the config is read (they ``register`` environments);
    the working directory is importable. ``parse_config`` imports them."""
    pair: PairSpec
    """A shipped pair (``default:NAME``) or a pair folder; or ``{path: ..., reference: {merge,
    alpha, ...}}`` to search and score against the merged reference π_α (``config_specs.py``)."""
    tasks: TaskSpec
    validation: TaskSpec | None = None
    """Validation tasks (e.g. ``{split: train, limit: 100, kwargs: {start: 20000}}``; env and
    kwargs as ``tasks``), played by every arm like the others: ``ttsearch tune-scorer`` picks on
    them; ``ttsearch report`` leaves them out of every table."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    match_admissible: bool = True
    """Parse only listed admissible actions (the maze); other text is a parse error."""
    parser: str = "plain"
    """How a message becomes an action: "plain" (``PlainActionParser``, first line or after
    "Action:") or a ``"package.module:Class"`` spec of any ``ActionParser`` with a no-argument
    constructor (e.g. ``ttsearch.agents.parsing:FinalNumberParser``). With "plain", an env that
    names its own (``Env.action_parser``: the tool-calling benchmarks' ``ToolCallParser``) gets it."""
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
    reference_variants: list[ReferenceSpec] = Field(default_factory=list)
    """Merged references to sweep: each progress-advantage scorer (or each label of
    ``reference_variant_scorers``) is also evaluated against every variant, as ``<label>@<variant>``."""
    reference_variant_scorers: list[str] | None = None
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

    @field_validator("pair", mode="before")
    @classmethod
    def _pair_text(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("pair")
    @classmethod
    def _pair(cls, value: PairSpec) -> PairSpec:
        path = value.path
        if path.startswith(DEFAULT_PAIR_PREFIX):
            name = path[len(DEFAULT_PAIR_PREFIX):]
            if name not in SHIPPED_PAIRS:
                raise ValueError(unknown_choice("shipped pair", name, SHIPPED_PAIRS) + " (write default:NAME)")
        elif not Path(path).is_dir():
            raise ValueError(f"pair folder {path!r} does not exist; use default:maze or a folder made by "
                             "`ttsearch pair train --env maze --out DIR`")
        return value

    @property
    def pair_path(self) -> str:
        return self.pair.path

    @property
    def pair_reference(self) -> ReferenceSpec | None:
        return self.pair.reference

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
        problems = self.problems()
        if len(problems) == 1:
            raise ValueError(problems[0])
        if problems:
            raise ValueError(f"{len(problems)} errors: " + " ".join(f"({i}) {p};" for i, p in enumerate(problems, 1))[:-1])
        return self

    def problems(self) -> list[str]:
        """Every cross-field problem ("where: what"), all of them: names that must refer to each
        other, and each arm's budget against the smallest call its controller makes."""
        out = []
        arms = [a.name for a in self.arms]
        labels = self.scorer_labels()
        for kind, names in (("arm name", arms), ("scorer label", labels)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                out.append(f"duplicate {kind}(s) {', '.join(dupes)}; give each a unique one")
        for i, arm in enumerate(self.arms):
            if arm.scorer is not None and arm.scorer not in labels:
                out.append(f"arms[{i}].scorer {arm.scorer!r} is not an evaluation scorer label; "
                           f"choose one of: {', '.join(labels)} (or add it to 'scorers')")
            else:
                out += arm_problems(i, arm, self.evaluation_scorers(), self.budget, self.sampling.max_new_tokens)
        for name in self.applications.uq_fa_arms:
            if name not in arms:
                out.append(f"applications.uq_fa_arms: {unknown_choice('arm', name, arms)}")
        own = [s.key for s in self.scorers]
        for name in self.reference_variant_scorers or []:
            if name not in own:
                out.append(f"reference_variant_scorers: {unknown_choice('scorer label', name, own)}")
        return out

    def evaluation_scorers(self) -> list[ScorerSpec]:
        """``scorers`` plus their copies against every reference variant (``config_specs.py``)."""
        return expand_variants(list(self.scorers), list(self.reference_variants), self.reference_variant_scorers)

    def scorer_labels(self) -> list[str]:
        return [s.key for s in self.evaluation_scorers()]

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
        # Fields added later are hashed only when set, so runs made before them still resume.
        if not data["imports"]:
            del data["imports"]
        if data["tasks"]["items"] is None:
            del data["tasks"]["items"]
        if data["prompt"] == "auto":
            del data["prompt"]
        if data["pair"]["reference"] is None:  # a plain pair hashes as its path, as before
            data["pair"] = data["pair"]["path"]
        for added in ("validation", "reference_variant_scorers"):
            if data[added] is None:
                del data[added]
        if not data["reference_variants"]:
            del data["reference_variants"]
        for scorer in data["scorers"]:
            for added in ("reference", "tuned"):
                if scorer[added] is None:
                    del scorer[added]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def feasibility_problems(controller: Controller, scorer: Any, budget: Budget, *, max_new_tokens: int,
                         scorer_label: str | None = None) -> list[str]:
    """What stops ``controller`` guided by ``scorer`` (an instance or its class) from taking one
    step under ``budget``: the checks ``SearchContext`` makes when an episode starts, made up
    front so that nothing fails after other work has run."""
    label = scorer_label or getattr(scorer, "name", "scorer")
    scores_steps = controller._scores_steps()  # the controller's own rule (greedy: only when asked)
    needs_reference = scores_steps and "reference_logprobs" in getattr(scorer, "requires", frozenset())
    out = []
    if scores_steps and not getattr(scorer, "scores_candidates", True) and (
            controller.ranks_candidates or controller.early_stop):
        out.append(f"scorer {label!r} scores whole trajectories only; use it with greedy or "
                   "trajectory_best_of_n (without early_stop), or as an evaluation scorer")
    try:
        budget.check_feasible(max_new_tokens=max_new_tokens, scores_reference=needs_reference)
    except TtsearchError as err:
        out.append(str(err))
    return out


def arm_problems(index: int, arm: ArmSpec, scorers: list[ScorerSpec], default_budget: dict[str, Any],
                 max_new_tokens: int) -> list[str]:
    """What stops arm ``index`` from taking a single step, found before any episode runs."""
    label = arm.scorer if arm.scorer is not None else (scorers[0].key if scorers else None)  # as the runner picks
    spec = next((s for s in scorers if s.key == label), None)
    if spec is None:
        return []  # reported as an unknown label, or the scorers did not validate
    controller = make_controller(arm.controller, seed=0, **arm.kwargs)
    where = "budget" if arm.budget is not None else "the default budget"
    budget = Budget(**(default_budget if arm.budget is None else arm.budget))
    problems = feasibility_problems(controller, SCORERS[spec.name], budget, max_new_tokens=max_new_tokens,
                                    scorer_label=label)
    return [f"arms[{index}] ({arm.name}): " + (p if p.startswith("scorer") else f"{where}: {p}") for p in problems]


def _partial_problems(data: dict[str, Any]) -> list[str]:
    """The arms' budget problems among the parts of an invalid config that did validate, so
    that one pass lists them with the field errors (the model's own check needs a valid whole)."""
    def valid(model: Any, value: Any) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError:
            return None

    sampling = valid(SamplingSpec, data.get("sampling", {}))
    raw_scorers, raw_arms = data.get("scorers"), data.get("arms")
    if sampling is None or not isinstance(raw_scorers, list) or not isinstance(raw_arms, list):
        return []
    scorers = [valid(ScorerSpec, s) for s in raw_scorers]
    if None in scorers:
        return []  # the default scorer (the first one) would be a guess
    try:
        default_budget = _check_budget(data.get("budget") or {})
    except (ValueError, TypeError):
        return []
    out = []
    for i, raw in enumerate(raw_arms):
        arm = valid(ArmSpec, raw)
        if arm is not None:
            out += arm_problems(i, arm, scorers, default_budget, sampling.max_new_tokens)
    return out


def _import_first(data: dict[str, Any], source: str) -> None:
    """Import the config's ``imports`` before validating the rest (they register its env names)."""
    imports = data.get("imports", [])
    if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
        raise ConfigError(f"{source}: imports: must be a list of module names, e.g. imports: [keydoor_env]")
    try:
        import_modules(imports, source="imports:")
    except TtsearchError as err:
        raise ConfigError(f"{source}: imports: {err}") from None


def parse_config(data: Any, *, source: str = "config") -> RunConfig:
    """Validate a config mapping; errors become one-line :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping of fields (pair, tasks, arms, scorers, ...)")
    _import_first(data, source)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        fields_failed = any(e["loc"] for e in err.errors())  # else the model's own check listed all
        extra = _partial_problems(data) if fields_failed else []
        raise ConfigError(format_validation_error(err, source, extra, RunConfig)) from None


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
