"""The agent: states in, scored candidate actions out (the :class:`Proposer` every controller uses).

    pair = ModelPair.load_dir("runs/maze_pair")
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=16, temperature=1.0))
    candidates = agent.propose([trajectory_a, trajectory_b], k=8, seed=0)   # 2 lists of 8

One ``propose`` call makes exactly one batched policy ``sample`` call (all states, k each) and at
most one batched reference ``score`` call (all candidates). Each candidate's scored span
(``action_token_ids``) is the generated ids without the trailing stop token; the reference
scores exactly those ids in exactly the prompt the policy saw. Controllers live in
``ttsearch.search``; the agent only proposes.

After a search, ``agent.rescore(trajectories)`` re-scores every executed action span in one
batched policy call (with top-k log-probs) and one batched reference call, so every scorer can
be evaluated on every trajectory whatever the search itself asked the engines for.

``token_kl=True`` (propose or rescore) also records each span token's exact KL(π_θ‖π_ref) from
the two models' whole log-prob rows (the policy's from sampling or its scoring call, the
reference's from its scoring call: no extra model call); ``decisive_spans=True`` records which
span tokens decide the action, as the parser locates them (``agents/parsing.py``).

An agent meters its own engine calls (``policy_stats``, ``reference_stats``: what a search's
budget ledger reads), so many agents can share one pair's engines: ``agent.fork()`` gives each
episode in flight its own meters over the same pair, prompts and parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ttsearch.agents.base import Candidate, EngineStats, Sample, SamplingParams, ScoreRequest
from ttsearch.agents.checkpoints.model_pair import ModelPair
from ttsearch.agents.parsing import (
    ActionParser,
    PlainActionParser,
    candidate_decisive_span,
    parse_candidate,
)
from ttsearch.agents.prompting import PromptRenderer
from ttsearch.agents.token_kl import check_full_rows, exact_token_kl
from ttsearch.envs.base import Step, Trajectory
from ttsearch.envs.errors import ConfigError


class Agent:
    """Proposes candidate actions from a :class:`ModelPair` (implements ``Proposer``)."""

    def __init__(
        self,
        pair: ModelPair,
        *,
        sampling: SamplingParams,
        parser: ActionParser | None = None,
        renderer: PromptRenderer | None = None,
    ):
        self.pair = pair
        self.sampling = sampling
        self.parser = parser if parser is not None else PlainActionParser()
        renderer = renderer if renderer is not None else pair.renderer()
        # Prompts longer than the policy's context leave room for max_new_tokens (see prompting.py).
        positions = int(getattr(pair.policy, "max_positions", 0) or 0)
        if renderer.max_prompt_tokens is None and positions > sampling.max_new_tokens:
            renderer = renderer.with_limit(positions - sampling.max_new_tokens)
        self.renderer = renderer
        self._stop = frozenset(sampling.stop_token_ids) | frozenset(pair.policy.eos_token_ids)
        self._policy_meter = EngineStats()
        # one engine serving both roles is metered once
        self._reference_meter = self._policy_meter if pair.reference is pair.policy else EngineStats()

    def fork(self) -> Agent:
        """An agent over the same pair, prompts and parser with meters of its own (one episode)."""
        return Agent(self.pair, sampling=self.sampling, parser=self.parser, renderer=self.renderer)

    @property
    def max_new_tokens(self) -> int:
        return self.sampling.max_new_tokens

    @property
    def policy_stats(self) -> EngineStats:
        """This agent's policy calls (the engine's own ``stats`` counts every caller's)."""
        return self._policy_meter

    @property
    def reference_stats(self) -> EngineStats | None:
        return self._reference_meter

    def propose(
        self,
        states: Sequence[Trajectory],
        *,
        k: int,
        seed: int,
        greedy: bool = False,
        score_reference: bool = True,
        top_logprobs: int = 0,
        token_kl: bool = False,
        decisive_spans: bool = False,
    ) -> list[list[Candidate]]:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if not states:
            return []
        if token_kl:
            check_full_rows(self.pair.policy, self.pair.reference)
        prompts = self.renderer.render_many(states)
        params = replace(self.sampling, seed=seed, top_logprobs=top_logprobs, full_logprobs=token_kl)
        if greedy:
            params = replace(params, temperature=0.0)
        n = 1 if greedy else k
        samples = self.pair.policy.sample(prompts, n=n, params=params, stats=self._policy_meter)
        flat = [(prompt, sample, self._span(sample)) for prompt, group in zip(prompts, samples, strict=True)
                for sample in group]
        reference: list = [None] * len(flat)
        kl: list = [None] * len(flat)
        if score_reference or token_kl:  # the KL needs the reference's rows too
            requests = [ScoreRequest(prompt, span, full_logprobs=token_kl) for prompt, _, span in flat]
            scored = self.pair.reference.score(requests, stats=self._reference_meter)
            reference = [tuple(s.logprobs) for s in scored]
            if token_kl:
                kl = [exact_token_kl(sample.full_logprobs[: len(span)], s.full_logprobs)
                      for (_, sample, span), s in zip(flat, scored, strict=True)]
        out: list[list[Candidate]] = []
        for i, state in enumerate(states):
            admissible = state.observation.admissible_actions
            out.append([self._candidate(*flat[i * n + j], reference[i * n + j], kl[i * n + j], admissible,
                                        decisive_spans) for j in range(n)])
        return out

    def _candidate(self, prompt: Sequence[int], sample: Sample, span: tuple[int, ...], reference, kl,
                   admissible, decisive_spans: bool) -> Candidate:
        text = self.pair.tokenizer.decode(list(span), skip_special_tokens=True)
        action, error = parse_candidate(self.parser, text, admissible=admissible)
        top = sample.top_logprobs[: len(span)] if sample.top_logprobs is not None else None
        return Candidate(
            action_text=text, action=action, action_token_ids=span,
            policy_logprobs=tuple(sample.logprobs[: len(span)]), reference_logprobs=reference,
            top_logprobs=top, parse_error=error, generated_token_ids=tuple(sample.token_ids),
            extra={"finish_reason": sample.finish_reason, "prompt_tokens": len(prompt)},
            token_kl=kl, decisive_span=self._decisive(span, text, admissible, error) if decisive_spans else None,
        )

    def _decisive(self, span: Sequence[int], text: str, admissible, error: str | None) -> tuple[int, int] | None:
        decode = lambda ids: self.pair.tokenizer.decode(list(ids), skip_special_tokens=True)  # noqa: E731
        return candidate_decisive_span(self.parser, decode, span, text, admissible=admissible, parse_error=error)

    def rescore(
        self, trajectories: Sequence[Trajectory], *, reference: bool = True, top_logprobs: int = 20,
        token_kl: bool = False, decisive_spans: bool = False,
    ) -> list[Trajectory]:
        """The trajectories with every step's token data re-scored by the engines.

        One batched policy ``score`` call (log-probs and ``top_logprobs`` per action token) and,
        with ``reference``, one batched reference ``score`` call cover every step of every
        trajectory. Each step's span (``action_token_ids``) is scored in the exact prompt the
        policy saw (the renderer replays the recorded ``generated_token_ids``), so the policy
        log-probs equal those recorded at sampling time. ``token_kl`` asks both calls for whole
        log-prob rows and records each step's per-token KL(π_θ‖π_ref) (exact; both engines must
        ``supports_full_logprobs``); ``decisive_spans`` asks the parser where each step's
        action is decided. Steps keep everything else.
        """
        if top_logprobs < 0:
            raise ConfigError(f"top_logprobs must be >= 0, got {top_logprobs}")
        if token_kl:
            check_full_rows(self.pair.policy, self.pair.reference)
        requests: list[ScoreRequest] = []
        for trajectory in trajectories:
            for t, step in enumerate(trajectory.steps):
                prefix = replace(trajectory, steps=trajectory.steps[:t])
                requests.append(ScoreRequest(self.renderer.render(prefix), step.action_token_ids, top_logprobs,
                                             full_logprobs=token_kl))
        if not requests:
            return list(trajectories)
        policy = self.pair.policy.score(requests, stats=self._policy_meter)
        ref = (self.pair.reference.score([replace(r, top_logprobs=0) for r in requests], stats=self._reference_meter)
               if reference or token_kl else None)
        out, at = [], 0
        for trajectory in trajectories:
            steps: list[Step] = []
            for step in trajectory.steps:
                steps.append(self._rescored_step(step, policy[at], ref[at] if ref is not None else None,
                                                 top_logprobs, token_kl, decisive_spans))
                at += 1
            out.append(replace(trajectory, steps=tuple(steps)))
        return out

    def _rescored_step(self, step: Step, scored, ref, top_logprobs: int, token_kl: bool,
                       decisive_spans: bool) -> Step:
        changes: dict = {"policy_logprobs": tuple(scored.logprobs),
                         "top_logprobs": scored.top_logprobs if top_logprobs else step.top_logprobs}
        if ref is not None:
            changes["reference_logprobs"] = tuple(ref.logprobs)
        if token_kl:
            changes["token_kl"] = exact_token_kl(scored.full_logprobs, ref.full_logprobs)
        if decisive_spans:
            changes["decisive_span"] = self._decisive(step.action_token_ids, step.action_text,
                                                      step.observation.admissible_actions, step.parse_error)
        return replace(step, **changes)

    def _span(self, sample: Sample) -> tuple[int, ...]:
        """The scored span: generated ids without the stop token that ended the turn."""
        ids = tuple(sample.token_ids)
        if sample.finish_reason == "stop" and ids and ids[-1] in self._stop:
            return ids[:-1]
        return ids
