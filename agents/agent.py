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

An agent meters its own engine calls (``policy_stats``, ``reference_stats``: what a search's
budget ledger reads), so many agents can share one pair's engines: ``agent.fork()`` gives each
episode in flight its own meters over the same pair, prompts and parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ttsearch.agents.base import Candidate, EngineStats, Sample, SamplingParams, ScoreRequest
from ttsearch.agents.checkpoints.model_pair import ModelPair
from ttsearch.agents.parsing import ActionParser, PlainActionParser, parse_candidate
from ttsearch.agents.prompting import PromptRenderer
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
        self.renderer = renderer if renderer is not None else pair.renderer()
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
    ) -> list[list[Candidate]]:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if not states:
            return []
        prompts = self.renderer.render_many(states)
        params = replace(self.sampling, seed=seed, top_logprobs=top_logprobs)
        if greedy:
            params = replace(params, temperature=0.0)
        n = 1 if greedy else k
        samples = self.pair.policy.sample(prompts, n=n, params=params, stats=self._policy_meter)
        spans = [[self._span(s) for s in group] for group in samples]
        reference: list = [None] * (len(states) * n)
        if score_reference:
            requests = [
                ScoreRequest(p, span)
                for p, group in zip(prompts, spans, strict=True)
                for span in group
            ]
            scored = self.pair.reference.score(requests, stats=self._reference_meter)
            reference = [tuple(s.logprobs) for s in scored]
        out: list[list[Candidate]] = []
        for i, (state, prompt, group) in enumerate(zip(states, prompts, samples, strict=True)):
            admissible = state.observation.admissible_actions
            row = []
            for j, sample in enumerate(group):
                span = spans[i][j]
                text = self.pair.tokenizer.decode(list(span), skip_special_tokens=True)
                action, error = parse_candidate(self.parser, text, admissible=admissible)
                top = sample.top_logprobs[: len(span)] if sample.top_logprobs is not None else None
                row.append(
                    Candidate(
                        action_text=text,
                        action=action,
                        action_token_ids=span,
                        policy_logprobs=tuple(sample.logprobs[: len(span)]),
                        reference_logprobs=reference[i * n + j],
                        top_logprobs=top,
                        parse_error=error,
                        generated_token_ids=tuple(sample.token_ids),
                        extra={"finish_reason": sample.finish_reason, "prompt_tokens": len(prompt)},
                    )
                )
            out.append(row)
        return out

    def rescore(
        self, trajectories: Sequence[Trajectory], *, reference: bool = True, top_logprobs: int = 20
    ) -> list[Trajectory]:
        """The trajectories with every step's token data re-scored by the engines.

        One batched policy ``score`` call (log-probs and ``top_logprobs`` per action token) and,
        with ``reference``, one batched reference ``score`` call cover every step of every
        trajectory. Each step's span (``action_token_ids``) is scored in the exact prompt the
        policy saw (the renderer replays the recorded ``generated_token_ids``), so the policy
        log-probs equal those recorded at sampling time. Steps keep everything else.
        """
        if top_logprobs < 0:
            raise ConfigError(f"top_logprobs must be >= 0, got {top_logprobs}")
        requests: list[ScoreRequest] = []
        for trajectory in trajectories:
            for t, step in enumerate(trajectory.steps):
                prefix = replace(trajectory, steps=trajectory.steps[:t])
                requests.append(ScoreRequest(self.renderer.render(prefix), step.action_token_ids, top_logprobs))
        if not requests:
            return list(trajectories)
        policy = self.pair.policy.score(requests, stats=self._policy_meter)
        ref = (self.pair.reference.score([replace(r, top_logprobs=0) for r in requests], stats=self._reference_meter)
               if reference else None)
        out, at = [], 0
        for trajectory in trajectories:
            steps: list[Step] = []
            for step in trajectory.steps:
                scored = policy[at]
                steps.append(replace(
                    step,
                    policy_logprobs=tuple(scored.logprobs),
                    top_logprobs=scored.top_logprobs if top_logprobs else step.top_logprobs,
                    reference_logprobs=tuple(ref[at].logprobs) if ref is not None else step.reference_logprobs,
                ))
                at += 1
            out.append(replace(trajectory, steps=tuple(steps)))
        return out

    def _span(self, sample: Sample) -> tuple[int, ...]:
        """The scored span: generated ids without the stop token that ended the turn."""
        ids = tuple(sample.token_ids)
        if sample.finish_reason == "stop" and ids and ids[-1] in self._stop:
            return ids[:-1]
        return ids
