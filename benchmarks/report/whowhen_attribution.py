"""Failure attribution on Who&When-format logs: score every message with both checkpoints.

    pair = ModelPair.load_dir(folder)
    logs = load_whowhen("data/Who_and_When")
    scored = score_log(pair, logs[0])                  # per-message token data of both models
    steps = {"progress_advantage": scored.step_scores(make_scorer("progress_advantage", beta=pair.beta))}
    summary = attribution_summary([logs[0]], [steps])   # accuracy per scorer x decisive-step rule

A Who&When log is a finished multi-agent conversation with an annotated decisive mistake
(``mistake_step``, an index into ``history``). Each message is one step: its content tokens
are the scored span, everything before it is the state. The conversation is rendered as a
plain transcript (chat templates assume user/assistant alternation; these logs have many
named agents)::

    Task: <question>\\n\\n[<agent>]\\n<content>\\n\\n[<agent>]\\n<content>\\n\\n...

Each piece is tokenised on its own and the ids are concatenated, so every message's span is
exact and both models score the same ids. A message's content is capped at
``max_message_tokens`` (its first tokens: long tool outputs would otherwise dominate the cost)
and its context is cut from the left to fit the model. The decisive step is then predicted
from the step scores with the three rules of ``ttsearch.scorers.progress_advantage``
(min-cumulative, sharpest drop, sharpest absolute drop) and scored by exact-step accuracy,
agent accuracy and mean absolute error against the annotation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ttsearch.agents.base import ScoreRequest
from ttsearch.envs.errors import ConfigError
from ttsearch.envs.whowhen import FailureLog, attribution_accuracy
from ttsearch.scorers.base import Scorer
from ttsearch.scorers.progress_advantage import DECISIVE_METHODS, decisive_step

TOP_LOGPROBS = 20
"""Top log-probs kept per position: enough for self-certainty and the DeepConf baselines."""


@dataclass(frozen=True, slots=True)
class MessageSpan:
    """One message's scored span: both models' log-probs of its content tokens (a ``TokenData``)."""

    token_ids: tuple[int, ...]
    policy_logprobs: tuple[float, ...]
    reference_logprobs: tuple[float, ...] | None
    top_logprobs: tuple[tuple[float, ...], ...] | None
    truncated: bool = False
    """The content was longer than ``max_message_tokens`` and only its start was scored."""


@dataclass(frozen=True, slots=True)
class ScoredLog:
    """A Who&When log with every message scored by both models."""

    log: FailureLog
    spans: tuple[MessageSpan, ...]

    def step_scores(self, scorer: Scorer) -> tuple[float, ...]:
        return tuple(float(scorer.score_step(span)) for span in self.spans)


def render_pieces(tokenizer: Any, log: FailureLog) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per message: (ids of everything before its content since the previous message, content ids).

    The first entry's head includes the task line. Concatenating head + content over all
    messages gives the whole transcript's ids.
    """
    def encode(text: str) -> tuple[int, ...]:
        return tuple(tokenizer.encode(text, add_special_tokens=False))

    pieces = []
    head = f"Task: {log.question}\n\n"
    for i, message in enumerate(log.history):
        head += f"[{log.agent_at(i)}]\n"
        pieces.append((encode(head), encode(message.content)))
        head = "\n\n"
    return pieces


def score_log(pair: Any, log: FailureLog, *, max_message_tokens: int = 256,
              max_context_tokens: int | None = None) -> ScoredLog:
    """Score every message of ``log`` with the pair's policy (with top-k) and reference.

    One batched ``score`` call per model; the engines' prefix caches share the growing
    transcript between the requests. ``max_context_tokens`` defaults to the policy engine's
    ``max_positions`` (when it has one).
    """
    if max_message_tokens < 1:
        raise ConfigError(f"max_message_tokens must be >= 1, got {max_message_tokens}")
    limit = max_context_tokens or int(getattr(pair.policy, "max_positions", 0) or 0) or None
    if limit is not None and limit <= max_message_tokens:
        raise ConfigError(f"max_message_tokens={max_message_tokens} leaves no context in a model of "
                          f"{limit} positions; lower --max-message-tokens")
    requests, cut = [], []
    transcript: list[int] = []
    for head, content in render_pieces(pair.tokenizer, log):
        transcript.extend(head)
        scored = content[:max_message_tokens]
        prefix = transcript if limit is None else transcript[-(limit - len(scored)):]
        requests.append(ScoreRequest(tuple(prefix), tuple(scored), top_logprobs=TOP_LOGPROBS))
        cut.append(len(scored) < len(content))
        transcript.extend(content)
    # An empty message scores an empty span (every scorer gives it 0).
    policy = pair.policy.score(requests)
    reference = pair.reference.score([ScoreRequest(r.prefix_ids, r.continuation_ids) for r in requests])
    spans = tuple(
        MessageSpan(request.continuation_ids, tuple(p.logprobs), tuple(r.logprobs), p.top_logprobs,
                    truncated=truncated)
        for request, p, r, truncated in zip(requests, policy, reference, cut, strict=True)
    )
    return ScoredLog(log, spans)


def attribution_summary(logs: Sequence[FailureLog],
                        step_scores: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, Any]:
    """Per scorer label and decisive-step method: agent/step accuracy and step MAE, from each
    log's step scores (``{label: [score per message]}``); plus the chance level (a uniformly
    random step) and two positional baselines (first and last step)."""
    if not logs:
        raise ConfigError("no scored logs to summarise")
    if len(logs) != len(step_scores):
        raise ConfigError(f"{len(logs)} logs but {len(step_scores)} step-score records")
    out: dict[str, Any] = {"logs": len(logs), "scorers": {}}
    for label in step_scores[0]:
        out["scorers"][label] = {}
        for method in DECISIVE_METHODS:
            steps = [decisive_step(scores[label], method) for scores in step_scores]
            predictions = [(log.agent_at(step), step) for log, step in zip(logs, steps, strict=True)]
            out["scorers"][label][method] = attribution_accuracy(logs, predictions)
    first = [(log.agent_at(0), 0) for log in logs]
    last = [(log.agent_at(len(log.history) - 1), len(log.history) - 1) for log in logs]
    out["baselines"] = {
        "first_step": attribution_accuracy(logs, first),
        "last_step": attribution_accuracy(logs, last),
        "random_step_expected_accuracy": sum(1 / len(log.history) for log in logs) / len(logs),
    }
    return out
