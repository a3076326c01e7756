"""The naive baseline most search code uses: ``model.generate`` per candidate, a full forward per score.

    policy = NaiveGenerateBackend(model)          # a Backend: sample() and score(), no reuse at all
    pair = ModelPair(policy, NaiveGenerateBackend(ref_model), tokenizer)

Every candidate pays a fresh prefill of its whole prompt (``generate`` on one sequence) and
every scored continuation a full forward of prefix + continuation. Sampling uses the engine's
counter-based streams (a logits processor forces the token ``choose_tokens`` picks for sample
j of prompt i at step t), so given the same seed it draws the same tokens as
``TransformersBackend`` and a search over either gives the same results. Benchmarks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ttsearch.agents.base import EngineStats, Sample, SamplingParams, ScoreRequest, TokenScores
from ttsearch.agents.engines.transformers.token_sampling import choose_tokens, stream_keys


class _ForceCounterSample(LogitsProcessor):
    """Leave only the token the counter-based sampler picks (generate then takes the argmax)."""

    def __init__(self, params: SamplingParams, key: int, prompt_len: int):
        self.params, self.key, self.prompt_len = params, torch.tensor([key]), prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        chosen = choose_tokens(scores.float(), self.params, self.key, step)
        forced = torch.full_like(scores, float("-inf"))
        forced[0, chosen[0]] = 0.0
        return forced


class NaiveGenerateBackend:
    """A :class:`Backend` without any reuse: one ``generate`` per sample, one forward per score."""

    def __init__(self, model: Any, *, name: str = "naive"):
        self.model, self.name, self.stats = model.eval(), name, EngineStats()
        eos = model.generation_config.eos_token_id
        self._eos = tuple([eos] if isinstance(eos, int) else eos or ())

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    @property
    def supports_top_logprobs(self) -> bool:
        return True

    @property
    def has_prefix_cache(self) -> bool:
        return False

    def clear_cache(self) -> None:
        """Nothing is cached."""

    def sample(
        self, prompts: Sequence[Sequence[int]], *, n: int, params: SamplingParams,
        stats: EngineStats | None = None,
    ) -> list[list[Sample]]:
        before = self.stats.snapshot()
        seed = params.seed if params.seed is not None else 0
        keys = stream_keys(seed, len(prompts), n)
        stops = sorted({*params.stop_token_ids, *self._eos})
        out = []
        for i, prompt in enumerate(prompts):
            group = []
            for j in range(n):
                ids = torch.tensor([list(prompt)])
                with torch.inference_mode():
                    gen = self.model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        do_sample=False,
                        max_new_tokens=params.max_new_tokens,
                        eos_token_id=stops,
                        pad_token_id=self.model.generation_config.pad_token_id,
                        logits_processor=LogitsProcessorList(
                            [_ForceCounterSample(params, keys[i * n + j], len(prompt))]
                        ),
                        output_logits=True,
                        return_dict_in_generate=True,
                    )
                tokens = gen.sequences[0, len(prompt) :].tolist()
                logp = torch.cat(gen.logits).float().log_softmax(-1)
                top = (
                    logp.topk(params.top_logprobs, -1).values.tolist()
                    if params.top_logprobs
                    else None
                )
                group.append(
                    Sample(
                        token_ids=tuple(tokens),
                        logprobs=tuple(
                            logp.gather(1, torch.tensor(tokens)[:, None])[:, 0].tolist()
                        ),
                        top_logprobs=tuple(map(tuple, top)) if top is not None else None,
                        finish_reason="stop" if tokens[-1] in stops else "length",
                    )
                )
                self.stats.generated_tokens += len(tokens)
                self.stats.computed_tokens += len(prompt) + len(tokens) - 1
                self.stats.prompt_tokens += len(prompt)
            out.append(group)
        self.stats.calls += 1
        if stats is not None:
            stats.add(self.stats.minus(before))
        return out

    def score(self, requests: Sequence[ScoreRequest], *, stats: EngineStats | None = None) -> list[TokenScores]:
        before = self.stats.snapshot()
        out = []
        for req in requests:
            cont = list(req.continuation_ids)
            if not cont:
                out.append(TokenScores((), () if req.top_logprobs else None))
                continue
            with torch.inference_mode():
                logits = self.model(
                    torch.tensor([list(req.prefix_ids) + cont[:-1]]), logits_to_keep=len(cont)
                ).logits[0]
            logp = logits.float().log_softmax(-1)
            top = logp.topk(req.top_logprobs, -1).values.tolist() if req.top_logprobs else None
            out.append(
                TokenScores(
                    tuple(logp.gather(1, torch.tensor(cont)[:, None])[:, 0].tolist()),
                    tuple(map(tuple, top)) if top is not None else None,
                )
            )
            self.stats.scored_tokens += len(cont)
            self.stats.computed_tokens += len(req.prefix_ids) + len(cont) - 1
            self.stats.prompt_tokens += len(req.prefix_ids)
        self.stats.calls += 1
        if stats is not None:
            stats.add(self.stats.minus(before))
        return out
