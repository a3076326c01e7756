"""Reward-model scorers: a Hugging Face sequence-classification model reads the trajectory text.

    orm = make_scorer("reward_model", path="default:maze")               # the shipped maze RM
    orm = make_scorer("reward_model", path="runs/my_rm", kind="outcome")  # any *ForSequenceClassification folder
    prm = make_scorer("reward_model", path="runs/my_prm", kind="process", step_agg="min")
    orm.score_trajectory(trajectory.steps)       # or pass the Trajectory itself (uses its system prompt)
    orm.step_scores(trajectory.steps)            # one score per prefix

The model: any ``AutoModelForSequenceClassification`` checkpoint with ``num_labels`` 1 (the
score is the raw logit, a scalar reward) or 2 (the score is P(label 1) by softmax, label 1 =
success). A folder made by ``ttsearch rm train`` also carries ``ttsearch_rm.json``, whose
``render`` settings (system prompt, history, max_length) become this scorer's defaults, so a trained RM is
scored on exactly the text it was trained on. ``path="default:maze"`` is the RM shipped next
to the maze pair (``agents/checkpoints/pairs/maze/rm``).

Text: see ``ttsearch.scorers.reward_model_text`` (chat template or plain format; the prefix ending after
step ``t`` holds observations and action texts up to step ``t``; left truncation to the model's
max length). Scores of identical texts are computed once and cached in memory.

Kinds:
- ``"outcome"`` (ORM): trajectory score = the model on the whole trajectory text (= the last
  prefix); ``step_scores[t]`` = the same model on the prefix ending after step ``t``.
- ``"process"`` (PRM): ``step_scores[t]`` = the model on the prefix ending after step ``t``
  (the step judged in its context); trajectory score = ``step_agg`` of the step scores
  (default ``"min"``, the usual PRM aggregation; any of ttsearch's step aggregations).

An empty trajectory scores 0.0 (as every aggregation of nothing does). ``score_step`` on a bare
Candidate raises ConfigError: a reward model needs the trajectory, so use it as an evaluation
scorer or to rank whole rollouts (trajectory best-of-N).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttsearch.agents.checkpoints.shipped import PAIRS_ROOT, SHIPPED_PAIRS
from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.aggregation import aggregate_steps, check_step_agg
from ttsearch.scorers.reward_model_text import (
    RM_MANIFEST,
    check_history,
    encode,
    forward_scores,
    prefix_messages,
    prefix_texts,
    render_messages,
)

RM_KINDS = ("outcome", "process")
DEFAULT_PREFIX = "default:"
_FIX = ("train one with `ttsearch rm train --env maze --out DIR`, or pass the folder of a "
        "Hugging Face *ForSequenceClassification model")


def resolve_rm_path(path: str | Path | None) -> Path:
    """``"default:<pair>"`` -> the RM shipped with that pair; otherwise a local folder."""
    if path is None or str(path) == "":
        raise ConfigError(f"reward_model needs path=...: {_FIX} (or path='default:maze')")
    text = str(path)
    if text.startswith(DEFAULT_PREFIX):
        name = text[len(DEFAULT_PREFIX):]
        if name not in SHIPPED_PAIRS:
            raise ConfigError(unknown_choice("shipped reward model", name, SHIPPED_PAIRS))
        folder = PAIRS_ROOT / name / "rm"
        if not (folder / "config.json").exists():
            raise ConfigError(f"the shipped {name!r} reward model is missing at {folder}; reinstall ttsearch "
                              f"or train one with `ttsearch rm train --env {name} --out DIR` and pass path=DIR")
        return folder
    folder = Path(text).expanduser()
    if not (folder / "config.json").exists():
        raise ConfigError(f"reward_model path {text!r} is not a model folder (no config.json); {_FIX}")
    return folder


def load_reward_model(folder: Path, *, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a sequence-classification folder; anything else -> ConfigError."""
    # transformers: imported when a reward model is loaded
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        found = ", ".join(architectures) or "no architecture"
        raise ConfigError(f"reward_model path {str(folder)!r} holds {found}, not a sequence-classification "
                          f"reward model (its head would be random); {_FIX}")
    if config.num_labels not in (1, 2):
        raise ConfigError(f"reward_model path {str(folder)!r} has num_labels={config.num_labels}; a reward model "
                          "needs 1 (scalar reward) or 2 (P(success))")
    model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def _max_length(model: Any, tokenizer: Any) -> int:
    """The model's context: its position table, capped by a sane tokenizer limit."""
    limits = [getattr(model.config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(usable) if usable else 512


class RewardModel:
    """A sequence-classification reward model as a ttsearch scorer (see the module docstring)."""

    name = "reward_model"
    requires = frozenset({"text"})
    top_logprobs = 0
    scores_candidates = False
    """``score_step`` is unavailable: controllers must not score candidates mid-search with it."""

    def __init__(self, *, path: str | None = None, kind: str = "outcome", step_agg: str = "min",
                 system_prompt: str | None = None, history: int | str = "auto", max_length: int | None = None,
                 batch_size: int = 16, device: str = "cpu", cache_size: int = 200_000) -> None:
        if kind not in RM_KINDS:
            raise ConfigError(unknown_choice("reward-model kind", kind, RM_KINDS))
        self.kind = kind
        self.step_agg = check_step_agg(step_agg)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.folder = resolve_rm_path(path)
        self.path = str(path)
        manifest = self._manifest()
        render = manifest.get("render", {})
        self.system_prompt = system_prompt if system_prompt is not None else render.get("system_prompt")
        if history == "auto":
            history = render.get("history", "all")
        check_history(history)
        self.history = history
        self.model, self.tokenizer = load_reward_model(self.folder, device=device)
        if max_length is None:
            max_length = render.get("max_length") or _max_length(self.model, self.tokenizer)
        self.max_length = int(max_length)
        if self.max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        self.batch_size = batch_size
        self.pad_token_id = self.model.config.pad_token_id
        self._cache: OrderedDict[str, float] = OrderedDict()
        self._cache_size = cache_size

    def _manifest(self) -> dict:
        file = self.folder / RM_MANIFEST
        return json.loads(file.read_text()) if file.exists() else {}

    # -- text -----------------------------------------------------------------------------------
    def texts(self, steps: Sequence[Any]) -> list[str]:
        """The rendered prefix ending after each step (what the model reads)."""
        steps, system = self._unpack(steps)
        return prefix_texts(self.tokenizer, steps, system_prompt=system, history=self.history)

    def _unpack(self, steps: Any) -> tuple[Sequence[Any], str]:
        # A Trajectory carries the task's system prompt; bare steps use the configured one.
        if hasattr(steps, "steps") and hasattr(steps, "system_prompt"):
            system = self.system_prompt if self.system_prompt is not None else steps.system_prompt
            return steps.steps, system or ""
        return steps, self.system_prompt or ""

    # -- scores ---------------------------------------------------------------------------------
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Model scores of arbitrary texts (cached per text; uncached ones batched)."""
        known: dict[str, float] = {}
        for text in dict.fromkeys(texts):
            if text in self._cache:
                self._cache.move_to_end(text)  # least recently used goes first
                known[text] = self._cache[text]
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        if todo:
            ids = [encode(self.tokenizer, t, max_length=self.max_length) for t in todo]
            values = forward_scores(self.model, ids, pad_token_id=self.pad_token_id, batch_size=self.batch_size)
            for text, value in zip(todo, values, strict=True):
                known[text] = self._cache[text] = value
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return [known[t] for t in texts]

    def step_scores(self, steps: Sequence[Any]) -> tuple[float, ...]:
        """The model on each prefix ending after step t (ORM and PRM alike)."""
        return tuple(self.score_texts(self.texts(steps)))

    def score_trajectory(self, steps: Sequence[Any]) -> float:
        inner, system = self._unpack(steps)
        if not inner:
            return 0.0
        if self.kind == "outcome":
            messages = prefix_messages(inner, len(inner) - 1, system_prompt=system, history=self.history)
            whole = render_messages(self.tokenizer, messages)
            return self.score_texts([whole])[0]
        return aggregate_steps(self.step_scores(steps), self.step_agg)

    def score_step(self, step: Any) -> float:
        raise ConfigError("reward_model scores whole trajectories, not a bare candidate step (it has no context): "
                          "use it as an evaluation scorer or to rank rollouts with trajectory_best_of_n")

    def __repr__(self) -> str:
        return (f"RewardModel(path={self.path!r}, kind={self.kind!r}, step_agg={self.step_agg!r}, "
                f"history={self.history!r}, max_length={self.max_length})")
