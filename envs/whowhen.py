"""Who&When failure logs (multi-agent failure attribution), loaded into frozen dataclasses.

    logs = load_whowhen("/data/Who_and_When")                    # both subsets, stable order
    logs = load_whowhen(root, subset="Hand-Crafted")
    log = logs[0]
    log.history[log.mistake_step].content, log.agent_at(log.mistake_step), log.mistake_agent
    attribution_correct(log, agent="WebSurfer", step=12)        # (agent exact?, step exact?)

The data set is not on a package registry. Its layout: one JSON file per failure case in
``Hand-Crafted/`` (58) and ``Algorithm-Generated/`` (126). Fields: ``question``,
``ground_truth``, ``history`` (a list of ``{content, role[, name]}``; hand-crafted cases name
the acting agent in ``role``, algorithm-generated ones in ``name``), ``mistake_agent``,
``mistake_step`` (a *string* holding a 0-based index into ``history``) and
``mistake_reason``; any other field is kept in ``extra``. Scoring (docs/design.md, "The paper's definitions"): exact match of
the agent and of the step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsearch.envs.errors import ConfigError, EnvError

SUBSETS = ("Hand-Crafted", "Algorithm-Generated")
_REQUIRED = ("question", "history", "mistake_agent", "mistake_step")


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a multi-agent conversation."""

    content: str
    role: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class FailureLog:
    """One Who&When case: the failed conversation and its annotated decisive mistake."""

    id: str
    subset: str
    question: str
    ground_truth: str
    history: tuple[Message, ...]
    mistake_agent: str
    mistake_step: int
    mistake_reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def agent_at(self, step: int) -> str:
        """The agent acting at ``step``: ``name`` when the log has one (algorithm-generated), else ``role``."""
        msg = self.history[step]
        return msg.name if msg.name else msg.role

    @property
    def agents(self) -> tuple[str, ...]:
        """The distinct agents in order of first appearance."""
        seen: dict[str, None] = {}
        for i in range(len(self.history)):
            seen.setdefault(self.agent_at(i), None)
        return tuple(seen)


def _stem_key(path: Path) -> tuple[int, int | str]:
    # Files are numbered ("1.json", "2.json", ...): sort numerically, others after by name.
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def parse_failure_log(data: Mapping[str, Any], *, id: str, subset: str) -> FailureLog:
    """Validate one case (a decoded JSON object) and build its :class:`FailureLog`."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EnvError(f"Who&When case {id}: missing field(s) {missing}")
    history_raw = data["history"]
    if not isinstance(history_raw, list) or not all(isinstance(m, Mapping) for m in history_raw):
        raise EnvError(f"Who&When case {id}: 'history' must be a list of {{content, role[, name]}} objects")
    history = tuple(Message(str(m.get("content", "")), str(m.get("role", "")),
                            None if m.get("name") in (None, "") else str(m["name"])) for m in history_raw)
    step_text = str(data["mistake_step"]).strip()
    if not re.fullmatch(r"\d+", step_text):
        raise EnvError(f"Who&When case {id}: mistake_step {data['mistake_step']!r} is not a 0-based index")
    step = int(step_text)
    if step >= len(history):
        raise EnvError(f"Who&When case {id}: mistake_step {step} is outside history (length {len(history)})")
    known = {*_REQUIRED, "ground_truth", "mistake_reason"}
    return FailureLog(id=id, subset=subset, question=str(data["question"]),
                      ground_truth=str(data.get("ground_truth", "")), history=history,
                      mistake_agent=str(data["mistake_agent"]), mistake_step=step,
                      mistake_reason=str(data.get("mistake_reason", "")),
                      extra={k: v for k, v in data.items() if k not in known})


def load_whowhen(root: str | Path, *, subset: str | None = None) -> list[FailureLog]:
    """All cases under ``root`` (the folder holding ``Hand-Crafted/`` and ``Algorithm-Generated/``)."""
    root = Path(root)
    if subset is not None and subset not in SUBSETS:
        raise ConfigError(f"unknown Who&When subset {subset!r}; choose one of: {', '.join(SUBSETS)}")
    subsets = [subset] if subset else list(SUBSETS)
    found = [s for s in subsets if (root / s).is_dir()]
    if not found:
        raise EnvError(f"no Who&When data under {root}: expected folder(s) {', '.join(subsets)} of JSON files")
    logs = []
    for name in found:
        for path in sorted((root / name).glob("*.json"), key=_stem_key):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise EnvError(f"Who&When file {path} is not valid JSON: {err}") from err
            logs.append(parse_failure_log(data, id=f"{name}/{path.stem}", subset=name))
    return logs


def attribution_correct(log: FailureLog, *, agent: str | None, step: int | None) -> tuple[bool, bool]:
    """Exact-match scoring of a predicted (agent, step) against the annotation."""
    return (agent is not None and agent == log.mistake_agent, step is not None and step == log.mistake_step)


def attribution_accuracy(logs: Sequence[FailureLog], predictions: Sequence[tuple[str | None, int | None]]) -> dict[str, float]:
    """Agent-level and step-level exact-match accuracy, and mean absolute step error."""
    if len(logs) != len(predictions):
        raise ConfigError(f"{len(logs)} logs but {len(predictions)} predictions")
    if not logs:
        return {"agent_accuracy": 0.0, "step_accuracy": 0.0, "step_mae": 0.0}
    hits = [attribution_correct(log, agent=a, step=s) for log, (a, s) in zip(logs, predictions, strict=True)]
    errors = [abs(s - log.mistake_step) for log, (_, s) in zip(logs, predictions, strict=True) if s is not None]
    return {"agent_accuracy": sum(h[0] for h in hits) / len(logs),
            "step_accuracy": sum(h[1] for h in hits) / len(logs),
            "step_mae": sum(errors) / len(errors) if errors else float("nan")}
