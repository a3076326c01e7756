"""A model-free :class:`Proposer` for testing controllers: designed actions, log-probs and advantages.

    def table(state: Trajectory) -> list[Choice]:
        return [Choice("left", logprob=-0.1, advantage=-1.0), Choice("right", logprob=-2.4, advantage=2.0)]
    agent = FakeProposer(table, max_new_tokens=4)
    agent.propose([state], k=3, seed=0)      # samples "left"/"right" by exp(logprob), deterministically

Sampling is stratified within a call (sample j of n uses the j-th slice of [0, 1)), so designed
tests do not hinge on luck: among n samples every action with probability >= 1/n appears.
Each candidate's scored span has 1..max_new_tokens tokens (varying with the seed, so budgets
are tested against real variation) plus a stop token when there is room; every span token
carries ``logprob / n`` under the policy and ``logprob / n − advantage`` under the reference,
so ``ProgressAdvantage()`` (mean tokens, β=1) scores exactly ``advantage`` and ``PolicyLogProb()``
exactly ``logprob / n``. It keeps two EngineStats exactly as the real engines would (one call
per batched sample/score, generated and scored tokens) and logs each call's delta in ``calls``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ttsearch.agents.base import Candidate, EngineStats
from ttsearch.envs.base import Trajectory
from ttsearch.envs.errors import ConfigError

STOP = 0


@dataclass(frozen=True, slots=True)
class Choice:
    """One action the fake policy may take in a state."""

    action: str
    logprob: float
    """Whole-turn policy log-prob (sampling weight; the greedy pick is the largest)."""
    advantage: float = 0.0
    """What ProgressAdvantage (mean tokens, β=1) will score this action."""


def _uniform(*parts: object) -> float:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class FakeProposer:
    """Implements ``ttsearch.agents.Proposer`` over a table ``state -> [Choice, ...]``."""

    def __init__(self, table: Callable[[Trajectory], Sequence[Choice]], *, max_new_tokens: int = 4,
                 shared_engine: bool = False):
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.table = table
        self._max_new = max_new_tokens
        self._policy = EngineStats()
        self._reference = self._policy if shared_engine else EngineStats()
        self.calls: list[EngineStats] = []
        """Per propose call: the summed delta of both engines (what the ledger must add up to)."""

    @property
    def max_new_tokens(self) -> int:
        return self._max_new

    @property
    def policy_stats(self) -> EngineStats:
        return self._policy

    @property
    def reference_stats(self) -> EngineStats | None:
        return self._reference

    def _choices(self, state: Trajectory) -> list[Choice]:
        choices = list(self.table(state))
        if not choices:
            raise ConfigError("the fake policy table returned no choices for a state")
        return choices

    def _candidate(self, choice: Choice, n_span: int, top_logprobs: int, score_reference: bool) -> Candidate:
        per_token = choice.logprob / n_span
        ids = tuple(1 + (sum(map(ord, choice.action)) + i) % 97 for i in range(n_span))
        stop = n_span < self._max_new
        top = None
        if top_logprobs:
            top = tuple(tuple(per_token - j for j in range(top_logprobs)) for _ in range(n_span))
        return Candidate(
            action_text=choice.action, action=choice.action, action_token_ids=ids,
            policy_logprobs=(per_token,) * n_span,
            reference_logprobs=(per_token - choice.advantage,) * n_span if score_reference else None,
            top_logprobs=top, generated_token_ids=ids + ((STOP,) if stop else ()),
            extra={"finish_reason": "stop" if stop else "length"},
        )

    def propose(self, states: Sequence[Trajectory], *, k: int, seed: int, greedy: bool = False,
                score_reference: bool = True, top_logprobs: int = 0) -> list[list[Candidate]]:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if not states:
            return []
        before = (self._policy.snapshot(), self._reference.snapshot())
        out: list[list[Candidate]] = []
        n = 1 if greedy else k
        for i, state in enumerate(states):
            choices = self._choices(state)
            row = []
            for j in range(n):
                if greedy:
                    choice = max(choices, key=lambda c: c.logprob)  # first on ties
                else:
                    weights = [math.exp(c.logprob) for c in choices]
                    # Stratified: sample j draws from the j-th of n equal slices of [0, 1), so
                    # among n samples every action with probability >= 1/n appears.
                    target, acc = (j + _uniform(seed, i, j)) / n * sum(weights), 0.0
                    choice = choices[-1]
                    for c, w in zip(choices, weights):
                        acc += w
                        if target < acc:
                            choice = c
                            break
                n_span = 1 + int(_uniform(seed, i, j, "len") * self._max_new)
                row.append(self._candidate(choice, min(n_span, self._max_new), top_logprobs, score_reference))
            out.append(row)
        flat = [c for row in out for c in row]
        self._policy.calls += 1
        self._policy.generated_tokens += sum(len(c.generated_token_ids) for c in flat)
        self._policy.prompt_tokens += sum(10 * (1 + len(s.steps)) for s in states) * n
        if score_reference:
            self._reference.calls += 1
            self._reference.scored_tokens += sum(len(c.action_token_ids) for c in flat)
        after = (self._policy, self._reference)
        delta = after[0].minus(before[0])
        if self._reference is not self._policy:
            ref = after[1].minus(before[1])
            delta = EngineStats(**{f: getattr(delta, f) + getattr(ref, f) for f in EngineStats.__slots__})
        self.calls.append(delta)
        return out

    def total(self) -> EngineStats:
        """The sum of every logged call delta."""
        out = EngineStats()
        for d in self.calls:
            for f in EngineStats.__slots__:
                setattr(out, f, getattr(out, f) + getattr(d, f))
        return out
