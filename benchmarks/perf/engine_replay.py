"""Record a search's proposals on one engine; replay the same candidates through another engine.

    recorder = RecordingProposer(Agent(sglang_pair, sampling=SamplingParams(max_new_tokens=2)))
    first = Beam(width=3, expand=3).run(task, task.make, recorder, scorer, Budget())
    replay = ReplayProposer(recorder.records, transformers_pair)
    second = Beam(width=3, expand=3).run(task, task.make, replay, scorer, Budget())
    replay.diff.max_abs, replay.diff.tokens          # |lp_first - lp_second| over every candidate

SGLang on CPU ignores sampling seeds, so two engines cannot be made to draw the same samples.
Instead the second engine re-scores exactly the token ids the first one drew, in exactly the
prompts it drew them from, and the search runs again on the second engine's log-probs. Equal
log-probs give the identical search: the same proposals in the same order, the same chosen path,
the same final trajectory.

Log-probs that agree only to float rounding can still order a near-tie the other way: two
candidates whose scores differ by less than the engines' disagreement swap places, the replayed
search keeps the other one, and its next call asks for states that were never recorded. The
replay then stops with :class:`ReplayDiverged`, whose :class:`Divergence` says which call
diverged and how close the swapped candidates were (:meth:`ReplayProposer.swap_gaps`: their
score gap in each run, next to the largest log-prob difference seen so far). A divergence is a
fact about the two searches, not an engine error: a gap within the log-prob noise is a tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ttsearch.agents.base import Candidate, EngineStats, ScoreRequest
from ttsearch.agents.checkpoints.model_pair import ModelPair
from ttsearch.agents.prompting import PromptRenderer
from ttsearch.envs.base import Trajectory
from ttsearch.envs.errors import BackendError


class ReplayMismatch(BackendError):
    """The replay was given something inconsistent (a candidate's log-probs of another length)."""


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where the replayed search left the recorded one, and the near-tie behind it.

    ``call`` is the 1-based ``propose`` call whose states (or k) differ from the recorded ones
    (``None``: every call matched and only the final pick differs). ``analysed_call`` is the call
    whose candidates were compared: the one before ``call`` (its children were ranked to make
    ``call``'s states), or the last call. The gaps are over candidate pairs of that call whose
    order by cumulative step score (sum along the path plus the candidate's step score: what
    beam and best-first rank by) differs between the two runs; ``closest_gap_recorded`` /
    ``closest_gap_replayed`` are the two runs' gaps for the pair closest to a tie, and
    ``key_noise`` the largest |recorded − replayed| ranking key of any candidate of the call.
    """

    call: int | None
    reason: str
    analysed_call: int | None = None
    swapped_pairs: int | None = None
    closest_gap_recorded: float | None = None
    closest_gap_replayed: float | None = None
    key_noise: float | None = None
    max_abs_logprob_diff: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReplayDiverged(ReplayMismatch):
    """The replayed search asked for states the recorded one never did (see :class:`Divergence`)."""

    def __init__(self, divergence: Divergence):
        self.divergence = divergence
        gap = divergence.closest_gap_recorded
        detail = "" if gap is None else (f"; closest swapped pair: score gap {gap:.2e} recorded, "
                                         f"{divergence.closest_gap_replayed:.2e} replayed")
        super().__init__(f"call {divergence.call}: the replayed search asked for other states or k than the "
                         f"recorded one ({divergence.reason}){detail}; max |Δ log-prob| so far "
                         f"{divergence.max_abs_logprob_diff:.2e}")


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """One recorded ``propose`` call: the rendered prompt of each state and its candidates.

    ``states`` are the recorded search's states themselves (their steps carry the recorded
    log-probs), kept to measure score gaps when a replay diverges."""

    prompts: tuple[tuple[int, ...], ...]
    candidates: tuple[tuple[Candidate, ...], ...]
    k: int
    greedy: bool
    states: tuple[Trajectory, ...] = ()


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
        self.records.append(ProposalRecord(prompts, tuple(tuple(g) for g in out), k, greedy, tuple(states)))
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
    the recorded values in :attr:`diff`. When the replayed search asks for states that were not
    recorded, :class:`ReplayDiverged` is raised, its :class:`Divergence` kept in
    :attr:`divergence`; ``scorer`` (the search's) lets it measure the near-tie behind it.
    """

    def __init__(self, records: Sequence[ProposalRecord], pair: ModelPair, *,
                 renderer: PromptRenderer | None = None, scorer: Any = None):
        self.records = list(records)
        self.pair = pair
        self.renderer = renderer if renderer is not None else pair.renderer()
        self.scorer = scorer
        self.diff = LogprobDiff()
        self.calls = 0
        self.divergence: Divergence | None = None
        self._replayed: list[tuple[tuple[Trajectory, ...], list[list[Candidate]]]] = []
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
            self._diverge(f"only {len(self.records)} calls were recorded")
        record = self.records[self.calls]
        prompts = tuple(tuple(p) for p in self.renderer.render_many(list(states)))
        if prompts != record.prompts:
            self._diverge("other states")
        if (k, greedy) != (record.k, record.greedy):
            self._diverge(f"k={k}, greedy={greedy} vs recorded k={record.k}, greedy={record.greedy}")
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
        self._replayed.append((tuple(states), out))
        return out

    def _diverge(self, reason: str) -> None:
        call = self.calls + 1
        self.divergence = Divergence(call=call, reason=reason, **self.swap_gaps(self.calls - 1))
        raise ReplayDiverged(self.divergence)

    def final_divergence(self, reason: str) -> Divergence:
        """A :class:`Divergence` for searches that made the same calls but kept different results
        (the last call's candidates are compared); also kept in :attr:`divergence`."""
        self.divergence = Divergence(call=None, reason=reason, **self.swap_gaps(self.calls - 1))
        return self.divergence

    def swap_gaps(self, index: int) -> dict[str, Any]:
        """Compare call ``index``'s (0-based) candidates between the recorded and the replayed run.

        Each candidate's ranking key is its path's cumulative step score plus its own step score,
        under the scorer, once with the recorded log-probs and once with the replayed ones. Pairs
        that differ (other parent or other generated tokens) and whose order flips are the swaps.
        """
        out: dict[str, Any] = {"max_abs_logprob_diff": self.diff.max_abs}
        if self.scorer is None or not 0 <= index < len(self._replayed):
            return out
        record, (states, groups) = self.records[index], self._replayed[index]
        if len(record.states) != len(states):
            return out

        def keys(parents, candidate_groups):
            return [sum(self.scorer.score_step(s) for s in parent.steps) + self.scorer.score_step(c)
                    for parent, group in zip(parents, candidate_groups, strict=True) for c in group]

        ids = [(p, c.generated_token_ids) for p, group in enumerate(record.candidates) for c in group]
        recorded, replayed = keys(record.states, record.candidates), keys(states, groups)
        swaps = []
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                a, b = recorded[i] - recorded[j], replayed[i] - replayed[j]
                if ids[i] != ids[j] and (a > 0) - (a < 0) != (b > 0) - (b < 0):
                    swaps.append((max(abs(a), abs(b)), abs(a), abs(b)))
        closest = min(swaps, default=(None, None, None))
        return {**out, "analysed_call": index + 1, "swapped_pairs": len(swaps),
                "closest_gap_recorded": closest[1], "closest_gap_replayed": closest[2],
                "key_noise": max((abs(x - y) for x, y in zip(recorded, replayed, strict=True)), default=0.0)}
