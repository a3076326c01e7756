"""The radix prefix cache: the tree on its own, and TransformersBackend with it against the truth.

Tree tests use payloads whose row i is a hash of the token prefix ``tokens[:i+1]`` (as real KV
is a function of the prefix), so any slice a match returns can be checked independently.
Engine tests compare every log-prob with a plain full forward of the same weights (no cache,
no mask, no padding, one sequence at a time), within the float32 rounding of two computations
(tests/tolerances.py): random prefixes, shared trunks, branchings, duplicate candidates, and
budgets that force evictions mid-run.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsearch.agents.base import SamplingParams, ScoreRequest
from ttsearch.agents.engines.transformers.backend import TransformersBackend
from ttsearch.agents.engines.transformers.radix_cache import RadixCache
from ttsearch.envs.errors import BackendError, ConfigError
from ttsearch.training.tiny_model import make_model, train_tokenizer

from tolerances import model_tol


# -- the tree ------------------------------------------------------------------------------
def _code(prefix: tuple[int, ...]) -> float:
    return (
        int.from_bytes(hashlib.blake2b(repr(prefix).encode(), digest_size=6).digest(), "big")
        / 2.0**48
    )


def _payload(tokens: tuple[int, ...]):
    def kv_of(a: int, b: int) -> torch.Tensor:
        return torch.tensor(
            [[_code(tokens[: i + 1])] * 2 for i in range(a, b)], dtype=torch.float64
        )

    return kv_of


def _check_match(cache: RadixCache, query: tuple[int, ...], match) -> None:
    rows = (
        torch.cat([kv[:used] for kv, used in match.segments])
        if match.segments
        else torch.zeros(0, 2)
    )
    assert rows.shape[0] == match.length
    expected = [_code(query[: i + 1]) for i in range(match.length)]
    assert rows[:, 0].tolist() == expected


def _lcp(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _new(budget: int = 1 << 30) -> RadixCache:
    return RadixCache(budget_bytes=budget, token_axis=0)


def test_split_on_partial_match_keeps_payloads_and_bytes():
    cache = _new()
    assert cache.insert((1, 2, 3, 4), _payload((1, 2, 3, 4))) == 4
    assert cache.insert((1, 2, 5), _payload((1, 2, 5))) == 1  # splits [1 2 3 4] after 2 tokens
    assert cache.num_nodes == 3 and cache.sequences() == [(1, 2, 3, 4), (1, 2, 5)]
    assert cache.bytes == 5 * 2 * 8  # 5 distinct tokens, 2 float64 each
    cache.check()
    for query in [(1, 2, 3, 4, 9), (1, 2, 5), (1, 2, 3), (1, 7), (8,)]:
        hit = cache.match(query, lock=False)
        assert hit.length == max(_lcp(query, s) for s in cache.sequences())
        _check_match(cache, query, hit)
    assert cache.match((1, 2, 3, 4), max_len=3, lock=False).length == 3
    assert cache.insert((1, 2), _payload((1, 2))) == 0  # already held: nothing added


def test_end_payload_only_where_a_sequence_ended():
    cache = _new()
    end = torch.ones(3)
    cache.insert((1, 2, 3, 4), _payload((1, 2, 3, 4)), end=end)
    assert cache.match((1, 2, 3, 4), lock=False).end is end
    assert cache.match((1, 2, 3), lock=False).end is None  # ends mid-node
    cache.insert((1, 2, 9), _payload((1, 2, 9)))  # split: the end stays with [3 4]
    assert cache.match((1, 2, 3, 4), lock=False).end is end
    assert cache.match((1, 2), lock=False).end is None
    cache.check()
    assert cache.bytes == 5 * 16 + end.numel() * 4


def test_lru_evicts_least_recently_used_unlocked_leaves_first():
    node = 3 * 16  # a 3-token node
    cache = _new(budget=10 * node)
    for first in (1, 2, 3):
        seq = (first, 0, 0)
        cache.insert(seq, _payload(seq))
    cache.match((1, 0, 0), lock=False)  # touch 1: now 2 is the oldest
    assert cache.evict(2 * node) == 1 and cache.sequences() == [(1, 0, 0), (3, 0, 0)]
    held = cache.match((1, 0, 0))  # locked
    assert cache.evict(0) == 1 and cache.sequences() == [(1, 0, 0)]  # the locked path stays
    cache.release(held)
    assert cache.evict(0) == 1 and cache.sequences() == [] and cache.bytes == 0
    assert cache.evictions == 3 and cache.evicted_tokens == 9


def test_parent_becomes_evictable_after_its_children():
    cache = _new()
    for seq in [(1, 2, 3), (1, 2, 4), (1, 5)]:
        cache.insert(seq, _payload(seq))
    cache.evict(0)
    assert cache.num_nodes == 0 and cache.bytes == 0
    cache.check()


@settings(max_examples=120, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["insert", "match", "lock", "release", "evict"]),
            st.lists(st.integers(0, 3), min_size=1, max_size=9).map(tuple),
            st.integers(0, 300),
        ),
        max_size=40,
    )
)
def test_tree_invariants_under_random_operations(ops):
    cache, inserted, locks = _new(budget=200), [], []
    for op, seq, budget in ops:
        if op == "insert":
            cache.insert(seq, _payload(seq))
            inserted.append(seq)
        elif op == "match":
            hit = cache.match(seq, lock=False)
            assert hit.length <= max((_lcp(seq, s) for s in inserted), default=0)
            _check_match(cache, seq, hit)
        elif op == "lock":
            locks.append((seq, cache.match(seq)))
        elif op == "release" and locks:
            cache.release(locks.pop(0)[1])
        elif op == "evict":
            cache.evict(budget)
            if not locks:
                assert cache.bytes <= budget
            for query, held in locks:  # a locked path is never evicted
                assert cache.match(query, lock=False).length >= held.length
        cache.check()
        for query in cache.sequences():  # everything held matches fully and correctly
            _check_match(cache, query, cache.match(query, lock=False))
    if not locks and ops:
        cache.evict()
        assert cache.bytes <= cache.budget_bytes
    assert cache.peak_bytes >= cache.bytes
    if not any(op == "lock" for op, _, _ in ops):  # nothing ever locked: never over budget
        assert cache.peak_bytes <= cache.budget_bytes


def test_bad_budget_is_a_clear_error():
    with pytest.raises(ConfigError, match="budget"):
        RadixCache(budget_bytes=-1, token_axis=0)


# -- the engine ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    tok = train_tokenizer(["north south east west wall pit goal maze step"] * 5, vocab_size=300)
    return make_model(
        tok, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, init_std=0.1, seed=3
    )


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].float()


def _truth(model, prefix, cont):
    full = _logits(model, list(prefix) + list(cont)).log_softmax(-1)
    rows = full[len(prefix) - 1 : len(prefix) - 1 + len(cont)]
    return rows.gather(1, torch.tensor(cont)[:, None])[:, 0]


def _tol(model, prefix, cont):
    """How far two correct computations of these log-probs may differ (tests/tolerances.py)."""
    return model_tol(model, _logits(model, list(prefix) + list(cont)))


def same_draws(model, prompts, a, b):
    """Same tokens, log-probs equal to float rounding: a repeat reads what the first call computed
    from the tree, which sums attention in another order."""
    assert [[(x.token_ids, x.finish_reason) for x in g] for g in a] == [[(x.token_ids, x.finish_reason) for x in g] for g in b]
    for p, ga, gb in zip(prompts, a, b, strict=True):
        for x, y in zip(ga, gb, strict=True):
            _same(x.logprobs, y.logprobs, _tol(model, p, x.token_ids))


def same_scores(model, requests, a, b):
    for r, x, y in zip(requests, a, b, strict=True):
        _same(x.logprobs, y.logprobs, _tol(model, r.prefix_ids, r.continuation_ids))


def _close(got, prefix, cont, model):
    assert torch.allclose(
        torch.tensor(got, dtype=torch.float32), _truth(model, prefix, cont), rtol=0,
        atol=_tol(model, prefix, cont),
    )


def _same(a, b, tol):
    assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=tol)


token = st.integers(0, 255)  # byte tokens: always in the vocabulary
trunks = st.lists(st.lists(token, min_size=1, max_size=30), min_size=1, max_size=3)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    trunk_pool=trunks,
    calls=st.lists(
        st.tuples(
            st.sampled_from(["score", "sample"]),
            st.lists(
                st.tuples(st.integers(0, 2), st.integers(0, 30), st.lists(token, max_size=4)),
                min_size=1,
                max_size=3,
            ),
            st.lists(st.lists(token, min_size=1, max_size=5), min_size=1, max_size=5),
            st.integers(0, 1000),
        ),
        min_size=1,
        max_size=4,
    ),
    budget=st.sampled_from([0, 600, 4_000, 1 << 30]),
    in_place=st.sampled_from([1, 4, 10**6]),
)
def test_engine_equals_full_forward_across_calls(model, trunk_pool, calls, budget, in_place):
    """Random prefixes off shared trunks, K candidates / K samples each, any cache state, cached
    pieces read in place (every piece, pieces of 4+ tokens) or copied (none in place)."""
    backend = TransformersBackend(model, cache_bytes=budget, in_place_min_tokens=in_place)
    for kind, prefix_specs, conts, seed in calls:
        prefixes = []
        for which, cut, suffix in prefix_specs:
            trunk = trunk_pool[which % len(trunk_pool)]
            prefixes.append(tuple(trunk[: max(1, cut)]) + tuple(suffix))
        if kind == "score":  # every candidate after every prefix (duplicates included)
            reqs = [ScoreRequest(p, tuple(c), top_logprobs=2) for p in prefixes for c in conts]
            for req, res in zip(reqs, backend.score(reqs), strict=True):
                _close(res.logprobs, req.prefix_ids, req.continuation_ids, model)
        else:
            params = SamplingParams(
                max_new_tokens=4, seed=seed, stop_token_ids=tuple(range(0, 256, 7))
            )
            for p, group in zip(
                prefixes, backend.sample(prefixes, n=len(conts), params=params), strict=True
            ):
                for s in group:
                    _close(s.logprobs, p, s.token_ids, model)
        if backend.cache is not None:
            backend.cache.check()
            assert backend.cache.bytes <= budget  # evicted down to the budget after each call
            assert all(n.lock == 0 for n in backend.cache._nodes())  # every lock released
    assert backend.stats.evictions == (backend.cache.evictions if backend.cache else 0)


def test_only_new_tokens_are_computed(model):
    backend = TransformersBackend(model, cache_bytes=1 << 30)
    prefix = tuple(range(10, 50))
    conts = [(1, 2, 3), (4, 5), (6,), (1, 2, 3)]  # a duplicate is computed once
    backend.score([ScoreRequest(prefix, conts[0])])  # cold: the prefix is run and stored
    reqs = [ScoreRequest(prefix, c) for c in conts]
    out = backend.score(reqs)
    call = backend.last_call
    assert call.cached_tokens == 4 * len(prefix) and call.prompt_tokens == 4 * len(prefix)
    assert call.computed_tokens == 2 + 1 + 0  # distinct candidates' fed tokens only
    for req, res in zip(reqs, out, strict=True):
        _close(res.logprobs, prefix, req.continuation_ids, model)
    # a longer prompt reuses the stored prefix and its stored continuation: 2 + 1 new tokens
    longer = prefix + (1, 2, 3, 77)
    backend.score([ScoreRequest(longer, (9, 9))])
    assert (
        backend.last_call.cached_tokens == len(prefix) + 2
        and backend.last_call.computed_tokens == 2 + 1
    )
    assert backend.stats.cache_bytes == backend.cache.bytes > 0 and backend.has_prefix_cache


def test_samples_from_a_cached_prefix_match_uncached_ones(model):
    warm = TransformersBackend(model, cache_bytes=1 << 30)
    cold = TransformersBackend(model, cache_bytes=0)
    assert not cold.has_prefix_cache and cold.cache is None
    prompts = [tuple(range(20, 60)), tuple(range(20, 45)) + (3, 4)]
    params = SamplingParams(max_new_tokens=6, seed=9, top_logprobs=3)
    warm.sample([prompts[0]], n=2, params=SamplingParams(max_new_tokens=3, seed=1))  # warm the tree
    got, want = warm.sample(prompts, n=8, params=params), cold.sample(prompts, n=8, params=params)
    assert warm.last_call.cached_tokens > cold.last_call.cached_tokens
    for g_group, w_group, p in zip(got, want, prompts, strict=True):
        for g, w in zip(g_group, w_group, strict=True):
            assert g.token_ids == w.token_ids and g.finish_reason == w.finish_reason
            tol = _tol(model, p, g.token_ids)
            _same(g.logprobs, w.logprobs, tol)
            _same(g.top_logprobs, w.top_logprobs, tol)
            _close(g.logprobs, p, g.token_ids, model)
    same_draws(model, prompts, warm.sample(prompts, n=8, params=params), got)  # the same draws when repeated


def test_exact_right_after_evictions(model):
    budget = 16_000  # one or two of these prompts' KV (256 B a token) and their logits
    backend = TransformersBackend(model, cache_bytes=budget)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        n = int(torch.randint(5, 40, (1,), generator=g))
        prefix = tuple(torch.randint(0, 256, (n,), generator=g).tolist())
        conts = [tuple(torch.randint(0, 256, (3,), generator=g).tolist()) for _ in range(4)]
        out = backend.score([ScoreRequest(prefix, c) for c in conts])
        for c, res in zip(conts, out, strict=True):
            _close(res.logprobs, prefix, c, model)
        again = backend.score([ScoreRequest(prefix, c) for c in conts])  # served from the tree
        assert backend.last_call.computed_tokens == 4 * 2
        same_scores(model, [ScoreRequest(prefix, c) for c in conts], again, out)
    assert backend.stats.evictions > 0 and backend.cache.peak_bytes <= budget


def test_bad_cache_budget_is_a_clear_error(model):
    with pytest.raises(BackendError, match="cache_bytes must be >= 0"):
        TransformersBackend(model, cache_bytes=-5)


def test_rows_sharing_new_tokens_in_one_call_stay_exact(model):
    """Rows of one call whose new tokens overlap (another row stores them first), prompts that
    end inside a stored node or exactly at a node without stored logits: every log-prob equals a
    full forward, and a repeat (everything cached) draws the same samples."""
    backend = TransformersBackend(model, cache_bytes=1 << 30)
    trunk = tuple(range(30, 50))
    backend.score(
        [ScoreRequest(trunk + (1,), (2,))]
    )  # stores trunk+(1,) with no logits at trunk's end
    prompts = [
        trunk + (3,),
        trunk,
        trunk[:5],
        trunk[:5] + (7, 8),
    ]  # trunk: only its last token is run
    params = SamplingParams(max_new_tokens=5, seed=4)
    first = backend.sample(prompts, n=3, params=params)
    same_draws(model, prompts, backend.sample(prompts, n=3, params=params), first)
    reqs = [ScoreRequest(p, (9, 10, 11)) for p in prompts]
    scored = backend.score(reqs)
    same_scores(model, reqs, backend.score(reqs), scored)
    for p, group, res in zip(prompts, first, scored, strict=True):
        _close(res.logprobs, p, (9, 10, 11), model)
        for s in group:
            _close(s.logprobs, p, s.token_ids, model)


def test_naive_generate_baseline_draws_the_same_samples(model):
    """The benchmark's model.generate baseline must be the same search, only without reuse."""
    from ttsearch.benchmarks.perf.naive_generate import NaiveGenerateBackend

    engine, naive = TransformersBackend(model), NaiveGenerateBackend(model)
    prompts = [tuple(range(40, 60)), tuple(range(40, 52))]
    params = SamplingParams(max_new_tokens=5, seed=2, stop_token_ids=tuple(range(0, 256, 5)))
    got, want = (
        engine.sample(prompts, n=3, params=params),
        naive.sample(prompts, n=3, params=params),
    )
    for g_group, w_group, p in zip(got, want, prompts, strict=True):
        for g, w in zip(g_group, w_group, strict=True):
            assert g.token_ids == w.token_ids and g.finish_reason == w.finish_reason
            _same(g.logprobs, w.logprobs, _tol(model, p, g.token_ids))
    reqs = [ScoreRequest(p, s.token_ids) for p, g in zip(prompts, got, strict=True) for s in g]
    for r, a, b in zip(reqs, engine.score(reqs), naive.score(reqs), strict=True):
        _same(a.logprobs, b.logprobs, _tol(model, r.prefix_ids, r.continuation_ids))


def test_beam_search_is_the_same_with_and_without_the_cache():
    """One short beam episode per env, three engines (cached, uncached, naive generate)."""
    from dataclasses import replace

    from ttsearch.benchmarks.perf import prefix_cache as bench

    tok = bench.bench_tokenizer()
    policy = make_model(
        tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=1
    )
    reference = make_model(
        tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=2
    )
    cfg = replace(bench.QUICK, maze_steps=2, long_steps=2, budget_mb=0.2)  # evictions happen
    beam, memory = bench.beam_part(tok, policy, reference, cfg, generate=True, quiet=True)
    assert beam["same_results"]
    episodes = beam["episodes"]["long_context"]
    assert episodes["cached"]["computed_tokens"] < episodes["uncached"]["computed_tokens"]
    assert episodes["cached"]["policy_stats"]["evictions"] > 0
    assert memory["tree_bytes_after_calls_max"] <= memory["budget_bytes_per_engine"]
