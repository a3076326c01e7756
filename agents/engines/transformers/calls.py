"""What an engine call asks for, checked before it is served (in the caller's thread or process).

    checker = CallChecker(name="policy", max_positions=2048)
    call = checker.check_sample(prompts, n=8, params=params)      # a SampleCall, or BackendError
    requests = checker.check_score(requests)                      # tuples of ints, or BackendError

The checker needs nothing of the model but its name and context length, so a batching layer can
refuse a bad call where it was made, before the call joins a batch (``batching.py``,
``process.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ttsearch.agents.base import SamplingParams, ScoreRequest
from ttsearch.envs.errors import BackendError


@dataclass(frozen=True, slots=True)
class SampleCall:
    """One ``sample`` call: its prompts, copies per prompt and sampling settings."""

    prompts: tuple[tuple[int, ...], ...]
    n: int
    params: SamplingParams


def as_ids(seqs: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Token sequences as tuples of Python ints; a sequence object repeated in a batch (one
    prefix shared by K requests) is converted once."""
    seen: dict[int, tuple[int, ...]] = {}
    out = []
    for seq in seqs:
        ids = seen.get(id(seq))
        if ids is None:
            ids = seen[id(seq)] = tuple(map(int, seq))
        out.append(ids)
    return out


@dataclass(frozen=True, slots=True)
class CallChecker:
    """Checks and normalises calls for a model called ``name`` with ``max_positions`` (0: any)."""

    name: str
    max_positions: int = 0

    def check_length(self, length: int, what: str) -> None:
        if self.max_positions and length > self.max_positions:
            raise BackendError(
                f"{self.name}: {what} needs {length} positions but the model has "
                f"max_position_embeddings={self.max_positions}; shorten the prompt "
                "(PromptConfig.max_history_turns) or lower max_new_tokens"
            )

    def check_sample(self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams) -> SampleCall:
        """A ``sample`` call's arguments, checked (one-line BackendError) and normalised."""
        if n < 1:
            raise BackendError(f"n must be >= 1, got {n}")
        call = SampleCall(tuple(as_ids(prompts)), n, params)
        if any(not p for p in call.prompts):
            raise BackendError("sample() got an empty prompt; render the state with PromptRenderer first")
        if call.prompts:
            self.check_length(max(map(len, call.prompts)) + params.max_new_tokens, "prompt + max_new_tokens")
        return call

    def check_score(self, requests: Sequence[ScoreRequest]) -> list[ScoreRequest]:
        """A ``score`` call's requests, checked (one-line BackendError) and normalised to tuples."""
        prefixes = as_ids([req.prefix_ids for req in requests])  # K requests share one prefix object
        out = []
        for req, prefix in zip(requests, prefixes, strict=True):
            cont = tuple(map(int, req.continuation_ids))
            if cont and not prefix:
                raise BackendError("score() needs a non-empty prefix: the first token has no context")
            if cont:
                self.check_length(len(prefix) + len(cont), "prefix + continuation")
            out.append(ScoreRequest(prefix, cont, req.top_logprobs, bool(req.full_logprobs)))
        return out
