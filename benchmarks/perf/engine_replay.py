"""Record a search's proposals on one engine; replay the same candidates through another engine.

    recorder = RecordingProposer(Agent(sglang_pair, sampling=SamplingParams(max_new_tokens=2)))
    first = Beam(width=3, expand=3).run(task, task.make, recorder, scorer, Budget())
    replay = ReplayProposer(recorder.records, transformers_pair)
    second = Beam(width=3, expand=3).run(task, task.make, replay, scorer, Budget())
    replay.diff.max_abs, replay.diff.tokens          # |lp_first - lp_second| over every candidate

SGLang on CPU ignores sampling seeds, so two engines cannot be made to draw the same samples.
Instead the second engine re-scores exactly the token ids the first one drew, in exactly the
prompts it drew them from (the replayed search renders its states itself and must reach the
same prompt ids, call by call, or :class:`ReplayMismatch` is raised), and the search runs again
on the second engine's log-probs. Equal log-probs give the identical search: the same proposals
in the same order, the same chosen path, the same final trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ttsearch.agents.base import Candidate, EngineStats, ScoreRequest
from ttsearch.agents.checkpoints.model_pair import ModelPair
from ttsearch.agents.prompting import PromptRenderer
from ttsearch.envs.base import Trajectory
from ttsearch.envs.errors import BackendError


class ReplayMismatch(BackendError):
    """The replayed search asked for something the recorded search never did."""


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """One recorded ``propose`` call: the rendered prompt of each state and its candidates."""

    prompts: tuple[tuple[int, ...], ...]
    candidates: tuple[tuple[Candidate, ...], ...]
    k: int
    greedy: bool


class RecordingProposer:
    """Wraps a proposer (an ``Agent``) and records every call's prompts and candidates."""

    def __init__(self, agent, *, renderer: PromptRenderer | None = None):
        self.agent = agent
        self.renderer = renderer if renderer is not None else agent.renderer
        self.records: list[ProposalRecord] = []

    @property
    def max_new_tokens(self) -> int:
        return self.agent.max_new_tokens

    @property
    def policy_stats(self) -> EngineStats:
        return self.agent.policy_stats

    @property
    def reference_stats(self) -> EngineStats | None:
        return self.agent.reference_stats

    def propose(self, states: Sequence[Trajectory], *, k: int, seed: int, greedy: bool = False,
                score_reference: bool = True, top_logprobs: int = 0) -> list[list[Candidate]]:
        out = self.agent.propose(states, k=k, seed=seed, greedy=greedy,
                                 score_reference=score_reference, top_logprobs=top_logprobs)
        prompts = tuple(tuple(p) for p in self.renderer.render_many(list(states)))
        self.records.append(ProposalRecord(prompts, tuple(tuple(g) for g in out), k, greedy))
        return out


@dataclass(slots=True)
class LogprobDiff:
    """Running max |a - b| over compared token log-probs, per model."""

    policy: float = 0.0
    reference: float = 0.0
    tokens: int = 0
    per_token: list[float] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        return max(self.policy, self.reference)

    def add(self, which: str, a: Sequence[float], b: Sequence[float]) -> None:
        if len(a) != len(b):
            raise ReplayMismatch(f"{which}: {len(a)} recorded log-probs vs {len(b)} replayed")
        diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
        self.per_token.extend(diffs)
        self.tokens += len(diffs)
        if diffs:
            setattr(self, which, max(getattr(self, which), *diffs))


class ReplayProposer:
    """Serves recorded candidates in call order, re-scored by ``pair``'s engines.

    Each candidate's policy log-probs are the policy engine's teacher-forced scores of everything
    the recorded policy generated (the stop token included), cut to the scored span; its
    reference log-probs are the reference engine's scores of the span. Both are compared with
    the recorded values in :attr:`diff`.
    """

    def __init__(self, records: Sequence[ProposalRecord], pair: ModelPair, *,
                 renderer: PromptRenderer | None = None):
        self.records = list(records)
        self.pair = pair
        self.renderer = renderer if renderer is not None else pair.renderer()
        self.diff = LogprobDiff()
        self.calls = 0
        self.max_new_tokens = max((max(len(c.generated_token_ids) for g in r.candidates for c in g)
                                   for r in self.records if any(r.candidates)), default=1)

    @property
    def policy_stats(self) -> EngineStats:
        return self.pair.policy.stats

    @property
    def reference_stats(self) -> EngineStats | None:
        return self.pair.reference.stats

    @property
    def exhausted(self) -> bool:
        """Every recorded call was replayed."""
        return self.calls == len(self.records)

    def propose(self, states: Sequence[Trajectory], *, k: int, seed: int, greedy: bool = False,
                score_reference: bool = True, top_logprobs: int = 0) -> list[list[Candidate]]:
        if self.calls >= len(self.records):
            raise ReplayMismatch(f"replay asked for call {self.calls + 1}; only {len(self.records)} recorded")
        record = self.records[self.calls]
        prompts = tuple(tuple(p) for p in self.renderer.render_many(list(states)))
        if prompts != record.prompts or (k, greedy) != (record.k, record.greedy):
            raise ReplayMismatch(f"call {self.calls + 1}: the replayed search asked for other states or k "
                                 "than the recorded one (the two searches diverged)")
        self.calls += 1
        flat = [(prompt, c) for prompt, group in zip(prompts, record.candidates, strict=True) for c in group]
        policy = self.pair.policy.score([ScoreRequest(p, c.generated_token_ids) for p, c in flat])
        reference: list = [None] * len(flat)
        if score_reference:
            scored = self.pair.reference.score([ScoreRequest(p, c.action_token_ids) for p, c in flat])
            reference = [tuple(s.logprobs) for s in scored]
        out, i = [], 0
        for group in record.candidates:
            row = []
            for cand in group:
                span = len(cand.action_token_ids)
                pol = tuple(policy[i].logprobs[:span])
                self.diff.add("policy", cand.policy_logprobs, pol)
                if score_reference and cand.reference_logprobs is not None:
                    self.diff.add("reference", cand.reference_logprobs, reference[i])
                row.append(replace(cand, policy_logprobs=pol, reference_logprobs=reference[i]))
                i += 1
            out.append(row)
        return out
