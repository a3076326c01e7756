"""Many callers, one engine: BatchingBackend (a worker thread) and EngineProcess (a child process).

Against the independent truth of the same engine called alone: every caller gets the samples and
scores a solo call gives (tokens exactly, log-probs to float rounding), its own cost in its meter
(the meters add up to the engine's stats), and a bad call fails only its caller.
"""

from __future__ import annotations

import threading
from functools import partial

import pytest
import torch

from ttsearch.agents.base import EngineStats, SamplingParams, ScoreRequest
from ttsearch.agents.checkpoints.model_pair import open_engine
from ttsearch.agents.engines.batching import BatchingBackend
from ttsearch.agents.engines.process import EngineProcess
from ttsearch.agents.engines.transformers.backend import TransformersBackend
from ttsearch.envs.errors import BackendError
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

from tolerances import folder_tol

COUNTS = ("calls", "generated_tokens", "scored_tokens", "prompt_tokens")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = train_tokenizer(["north south east west pit wall goal maze step"] * 20, vocab_size=300)
    model = make_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=3)
    return save_pair_folder(model, tok, tmp_path_factory.mktemp("engine") / "m")


def prompts(i: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(i)
    return [tuple(torch.randint(5, 250, (int(n),), generator=g).tolist()) for n in (7 + i % 5, 12)]


def calls(i: int):
    params = SamplingParams(max_new_tokens=4 + i % 3, temperature=1.0, seed=100 + i, top_logprobs=i % 2 * 3)
    return prompts(i), 1 + i % 3, params


def run_concurrently(engine, n_threads: int = 12):
    results, meters, errors = [None] * n_threads, [EngineStats() for _ in range(n_threads)], []

    def worker(i: int) -> None:
        try:
            ps, n, params = calls(i)
            samples = engine.sample(ps, n=n, params=params, stats=meters[i])
            scores = engine.score([ScoreRequest(p, s.token_ids) for p, g in zip(ps, samples) for s in g],
                                  stats=meters[i])
            results[i] = (samples, scores)
        except BaseException as err:  # collected: the assertions run in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results, meters


def check_against_solo(model_dir, results, meters):
    solo = TransformersBackend(model_dir)
    tol = folder_tol(model_dir)  # batched with other calls vs alone: two float orders
    for i, (samples, scores) in enumerate(results):
        ps, n, params = calls(i)
        want = solo.sample(ps, n=n, params=params)
        assert [[s.token_ids for s in g] for g in samples] == [[s.token_ids for s in g] for g in want]
        for got_g, want_g in zip(samples, want):
            for got, exp in zip(got_g, want_g):
                assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(exp.logprobs), atol=tol)
        flat = [s for g in samples for s in g]
        for sample, score in zip(flat, scores):  # scoring a sample gives back its own log-probs
            assert torch.allclose(torch.tensor(score.logprobs), torch.tensor(sample.logprobs), atol=tol)
        assert meters[i].calls == 2 and meters[i].generated_tokens == sum(len(s.token_ids) for s in flat)


def test_batching_backend_serves_every_thread_as_if_alone(model_dir):
    engine = BatchingBackend(TransformersBackend(model_dir))
    try:
        results, meters = run_concurrently(engine)
        check_against_solo(model_dir, results, meters)
        for name in COUNTS:
            assert getattr(engine.stats, name) == sum(getattr(m, name) for m in meters), name
        assert engine.batches < sum(m.calls for m in meters)  # calls really were served together
        with pytest.raises(BackendError, match="empty prompt"):
            engine.sample([()], n=1, params=SamplingParams(max_new_tokens=2))
        engine.sample(prompts(0), n=1, params=SamplingParams(max_new_tokens=2))  # still serving
    finally:
        engine.close()
    with pytest.raises(BackendError, match="closed"):
        engine.sample(prompts(0), n=1, params=SamplingParams(max_new_tokens=2))


def test_engine_process_serves_every_thread_as_if_alone(model_dir):
    engine = EngineProcess.start(partial(open_engine, model_dir, name="child"))
    try:
        assert engine.name == "child" and engine.has_prefix_cache
        results, meters = run_concurrently(engine)
        check_against_solo(model_dir, results, meters)
        for name in COUNTS:
            assert getattr(engine.stats, name) == sum(getattr(m, name) for m in meters), name
        with pytest.raises(BackendError, match="needs a non-empty prefix"):
            engine.score([ScoreRequest((), (3,))])
        engine.clear_cache()
    finally:
        engine.close()


def test_an_engine_that_cannot_start_fails_where_it_was_started(tmp_path):
    with pytest.raises(BackendError, match="no model at"):
        EngineProcess.start(partial(open_engine, tmp_path / "missing", name="x"))
