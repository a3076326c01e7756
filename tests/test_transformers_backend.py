"""TransformersBackend against the independent truth: a plain full forward of the same weights.

The reference model is loaded separately with eager attention and run on the whole sequence
(prompt + continuation) without cache, padding or batching; every log-prob the backend returns
must equal log_softmax of those logits at the right position, within the float32 rounding of
two computations of a 2-layer model (tests/tolerances.py).
"""

from __future__ import annotations

import pytest
import torch

from ttsearch.agents.base import SamplingParams, ScoreRequest
from ttsearch.agents.engines.transformers.backend import TransformersBackend
from ttsearch.envs.errors import BackendError
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

from tolerances import model_tol

CORPUS = [
    "You are in a maze. There is a wall to the north and a pit to the east. Step 3 of 20.",
    "Valid actions: north, south, east, west. You moved south. The exit is 4 steps away.",
    "Action: north",
    "Action: east",
    "Action: south",
    "Action: west",
] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    # init_std 0.1: peakier random distributions, so argmax ties cannot blur the greedy test.
    model = make_model(tok, hidden_size=64, num_layers=2, num_heads=4, init_std=0.1, seed=0)
    return save_pair_folder(model, tok, tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def truth(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    return Truth(model)


class Truth:
    """``truth(ids)``: log-probs of a plain full forward; ``truth.tol(ids)``: how far another
    correct computation of the same forward may be from them."""

    def __init__(self, model):
        self.model = model

    def logits(self, ids):
        with torch.no_grad():
            return self.model(torch.tensor([list(ids)])).logits[0].float()

    def __call__(self, ids):
        return self.logits(ids).log_softmax(-1)

    def tol(self, ids):
        return model_tol(self.model, self.logits(ids))


@pytest.fixture
def backend(model_dir):
    return TransformersBackend(model_dir)


@pytest.fixture(scope="module")
def prompts(tok):
    texts = [
        "north",
        "You are in a maze. There is a wall",
        "Valid actions: north, south, east, west. You moved",
    ]
    out = [tuple(tok.encode(t)) for t in texts]
    assert len({len(p) for p in out}) == 3  # different lengths batched together
    return out


def same_draws(truth, prompts, a, b):
    """Two sample() results drew the same tokens, with the same log-probs up to float rounding
    (reading a prefix from the cache sums attention in another order than computing it)."""
    assert [[(x.token_ids, x.finish_reason) for x in g] for g in a] == \
        [[(x.token_ids, x.finish_reason) for x in g] for g in b]
    for prompt, ga, gb in zip(prompts, a, b, strict=True):
        for x, y in zip(ga, gb, strict=True):
            tol = truth.tol(list(prompt) + list(x.token_ids))
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), rtol=0, atol=tol)


def _check_against_truth(truth, prompt, tokens, logprobs, top=None, k=0):
    full = truth(list(prompt) + list(tokens))
    rows = full[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]
    expected = rows.gather(1, torch.tensor(tokens)[:, None])[:, 0]
    tol = truth.tol(list(prompt) + list(tokens))
    assert torch.allclose(torch.tensor(logprobs), expected, rtol=0, atol=tol)
    if k:
        assert torch.allclose(torch.tensor(top), rows.topk(k, dim=-1).values, rtol=0, atol=tol)


def test_sample_logprobs_equal_full_forward(backend, truth, prompts):
    stop = tuple(range(40, 140))  # many stop ids: rows finish at different steps
    params = SamplingParams(
        max_new_tokens=10, temperature=1.0, seed=3, top_logprobs=5, stop_token_ids=stop
    )
    out = backend.sample(prompts, n=3, params=params)
    assert [len(g) for g in out] == [3, 3, 3]
    ends = set(stop) | set(backend.eos_token_ids)  # eos always ends a turn too
    lengths = set()
    for prompt, group in zip(prompts, out, strict=True):
        for s in group:
            assert len(s.token_ids) == len(s.logprobs) == len(s.top_logprobs) >= 1
            _check_against_truth(truth, prompt, s.token_ids, s.logprobs, s.top_logprobs, k=5)
            # a row stops at its first stop token, or runs to max_new_tokens
            assert not any(t in ends for t in s.token_ids[:-1])
            assert s.finish_reason == ("stop" if s.token_ids[-1] in ends else "length")
            if s.finish_reason == "length":
                assert len(s.token_ids) == 10
            lengths.add(len(s.token_ids))
    assert len(lengths) > 1


def test_score_equals_full_forward_with_shared_prefixes(backend, truth, prompts):
    conts = [(5, 9, 17, 33), (200,), (7, 7, 7), (300, 1, 250, 12, 40, 41)]
    reqs = [
        ScoreRequest(p, c, top_logprobs=3 if i % 2 else 0)
        for p in prompts
        for i, c in enumerate(conts)
    ]
    reqs.append(ScoreRequest(prompts[0], ()))  # empty continuation: nothing to score
    before = backend.stats.snapshot()
    out = backend.score(reqs)
    for req, res in zip(reqs, out, strict=True):
        assert len(res.logprobs) == len(req.continuation_ids)
        if req.continuation_ids:
            _check_against_truth(
                truth,
                req.prefix_ids,
                req.continuation_ids,
                res.logprobs,
                res.top_logprobs,
                k=req.top_logprobs,
            )
        assert (res.top_logprobs is None) == (req.top_logprobs == 0)
    delta = backend.stats.minus(before)
    # hand count: each distinct prefix computed once; continuations fed minus their last token
    scored = [r for r in reqs if r.continuation_ids]
    prefix_total = sum(len(r.prefix_ids) for r in scored)
    distinct = sum(len(p) for p in prompts)
    assert delta.calls == 1
    assert delta.scored_tokens == sum(len(c) for c in conts) * 3
    assert delta.prompt_tokens == prefix_total
    assert delta.cached_tokens == prefix_total - distinct
    assert delta.computed_tokens == distinct + sum(len(c) - 1 for c in conts) * 3


def test_score_of_samples_equals_their_logprobs(backend, truth, prompts):
    params = SamplingParams(max_new_tokens=6, seed=11)
    out = backend.sample(prompts, n=2, params=params)
    reqs = [ScoreRequest(p, s.token_ids) for p, g in zip(prompts, out, strict=True) for s in g]
    scored = backend.score(reqs)
    flat = [s for g in out for s in g]
    for req, s, sc in zip(reqs, flat, scored, strict=True):
        tol = truth.tol(req.prefix_ids + req.continuation_ids)
        assert torch.allclose(torch.tensor(sc.logprobs), torch.tensor(s.logprobs), rtol=0, atol=tol)


def test_same_seed_same_samples_and_batch_independence(backend, prompts, truth):
    params = SamplingParams(max_new_tokens=8, seed=5)
    a = backend.sample(prompts, n=4, params=params)
    b = backend.sample(prompts, n=4, params=params)  # now read from the cache
    same_draws(truth, prompts, a, b)
    c = backend.sample(prompts, n=4, params=SamplingParams(max_new_tokens=8, seed=6))
    assert [s.token_ids for g in a for s in g] != [s.token_ids for g in c for s in g]
    # prompt 0's samples depend only on (seed, its index, sample index), not on the other prompts
    alone = backend.sample(prompts[:1], n=4, params=params)
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in a[0]]
    # the n samples of one prompt are different draws
    assert len({s.token_ids for s in a[2]}) > 1


def test_greedy_is_argmax_of_full_forward(backend, truth, prompts):
    out = backend.sample(prompts, n=1, params=SamplingParams(max_new_tokens=8, temperature=0.0))
    for prompt, group in zip(prompts, out, strict=True):
        ids = list(prompt)
        for _ in range(8):
            ids.append(int(truth(ids)[-1].argmax()))
            if ids[-1] in backend.eos_token_ids:
                break
        assert list(group[0].token_ids) == ids[len(prompt) :]
        # temperature 0 still reports the model's own (temperature-1) log-probs
        _check_against_truth(truth, prompt, group[0].token_ids, group[0].logprobs)


def test_sampling_follows_temperature_and_top_k(backend, truth, prompts):
    prompt = prompts[1]
    logits = truth(prompt)[-1]  # log-probs; softmax(lp / T) = softmax(logits / T)
    top = logits.topk(4)
    expected = (top.values / 0.7).softmax(-1)
    params = SamplingParams(max_new_tokens=1, temperature=0.7, top_k=4, seed=0)
    draws = [s.token_ids[0] for s in backend.sample([prompt], n=3000, params=params)[0]]
    counts = torch.tensor([draws.count(int(t)) for t in top.indices], dtype=torch.float32)
    assert counts.sum() == 3000  # nothing outside the top-k
    # total-variation distance; its expectation for 3000 draws over 4 outcomes is <= 0.013
    assert (counts / 3000 - expected).abs().sum() / 2 < 0.04
    nucleus = SamplingParams(max_new_tokens=1, temperature=1.0, top_p=1e-6, seed=0)
    assert {s.token_ids for s in backend.sample([prompt], n=20, params=nucleus)[0]} == {
        (int(top.indices[0]),)
    }


def test_sample_stats_are_exact(backend, prompts):
    batch = [prompts[0], prompts[2], prompts[0]]  # a duplicate prompt is prefilled once
    before = backend.stats.snapshot()
    out = backend.sample(batch, n=2, params=SamplingParams(max_new_tokens=5, seed=1))
    delta = backend.stats.minus(before)
    generated = [len(s.token_ids) for g in out for s in g]
    assert delta.calls == 1
    assert delta.generated_tokens == sum(generated)
    assert delta.prompt_tokens == 2 * sum(map(len, batch))
    assert delta.cached_tokens == 2 * sum(map(len, batch)) - len(prompts[0]) - len(prompts[2])
    assert delta.computed_tokens == len(prompts[0]) + len(prompts[2]) + sum(
        g - 1 for g in generated
    )
    assert delta.scored_tokens == 0
    assert out[0] != out[2]  # the duplicate still gets its own random streams


def test_llama_architecture(tmp_path, tok, prompts):
    model = make_model(tok, arch="llama", hidden_size=32, num_layers=1, num_heads=2, init_std=0.1)
    path = save_pair_folder(model, tok, tmp_path / "llama")
    backend = TransformersBackend(path)
    out = backend.sample(prompts, n=2, params=SamplingParams(max_new_tokens=4, seed=0))
    for prompt, group in zip(prompts, out, strict=True):
        for s in group:
            with torch.no_grad():
                logits = model(torch.tensor([list(prompt) + list(s.token_ids)])).logits[0]
            full = logits.log_softmax(-1)
            expected = [full[len(prompt) - 1 + i, t].item() for i, t in enumerate(s.token_ids)]
            assert torch.allclose(torch.tensor(s.logprobs), torch.tensor(expected), rtol=0,
                                  atol=model_tol(model, logits))


def test_bad_inputs_are_clear_errors(tmp_path, backend, prompts):
    with pytest.raises(BackendError, match=r"no model at .*config\.json.*ttsearch pair train"):
        TransformersBackend(tmp_path / "nothing-here")
    with pytest.raises(BackendError, match="empty prompt"):
        backend.sample([()], n=1, params=SamplingParams())
    with pytest.raises(BackendError, match="non-empty prefix"):
        backend.score([ScoreRequest((), (1, 2))])
    with pytest.raises(BackendError, match="max_position_embeddings=1024"):
        backend.sample([prompts[0] * 600], n=1, params=SamplingParams())
    assert backend.eos_token_ids[0] == backend.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_the_cache_budget_can_be_resized(backend, truth, prompts):
    """``set_cache_bytes`` (a run's ``engine: {cache_mb}``): shrinking evicts down to the budget,
    0 drops the cache, and a new budget brings one back; log-probs stay those of a full forward."""
    params = SamplingParams(max_new_tokens=3, temperature=1.0, seed=0)
    backend.sample(prompts, n=2, params=params)
    held = backend.cache.bytes
    assert held > 0
    backend.set_cache_bytes(held // 2)
    assert backend.cache.budget_bytes == held // 2 and backend.cache.bytes <= held // 2
    backend.set_cache_bytes(0)
    assert backend.cache is None and not backend.has_prefix_cache
    backend.set_cache_bytes(1 << 20)
    samples = backend.sample(prompts, n=1, params=params)
    assert backend.cache.bytes > 0
    for prompt, (sample,) in zip(prompts, samples, strict=True):
        _check_against_truth(truth, prompt, sample.token_ids, sample.logprobs)
    with pytest.raises(BackendError, match="cache_bytes must be >= 0"):
        backend.set_cache_bytes(-1)
