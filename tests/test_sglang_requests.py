"""SGLangBackend's request logic without a server: a fake transport speaks SGLang's /generate format.

The fake answers like SGLang 0.5.23 (``[logprob, token_id, text]`` entries, the None entry at
``logprob_start_len``, ``n`` copies grouped by prompt, ``cached_tokens`` from a radix cache of
the prompts it has seen) over a toy language model whose log-probs are known in closed form, so
every number the backend returns is checked against that model. The live-server tests
(``test_sglang_backend.py``) keep checking the real runtime.
"""

from __future__ import annotations

import pytest

from ttsearch.agents.base import SamplingParams, ScoreRequest
from ttsearch.agents.engines.sglang.backend import SGLangBackend
from ttsearch.envs.errors import BackendError

EOS = 2
VOCAB = 50


def toy_logprob(prefix: list[int], token: int) -> float:
    """The toy model: a closed-form log-prob of ``token`` after ``prefix``."""
    return -0.1 * (1 + (token + len(prefix)) % 7)


def toy_next(prefix: list[int]) -> int:
    """The toy model's (deterministic) next token: counts up, ending the turn at 9."""
    return EOS if prefix[-1] >= 9 else prefix[-1] + 1


class FakeTransport:
    """Records every payload; answers like SGLang's /generate over the toy model."""

    def __init__(self, *, deterministic: bool = False, abort: str | None = None):
        self.payloads: list[dict] = []
        self.seen: list[list[int]] = []
        self.deterministic, self.abort = deterministic, abort
        self.flushed = 0

    def server_info(self) -> dict:
        return {"enable_deterministic_inference": self.deterministic}

    def model_path(self) -> str:
        return ""

    def flush_cache(self) -> None:
        self.flushed += 1
        self.seen.clear()

    def _cached(self, ids: list[int]) -> int:
        best = max((next((i for i, (a, b) in enumerate(zip(s, ids)) if a != b), min(len(s), len(ids)))
                    for s in self.seen), default=0)
        self.seen.append(ids)
        return min(best, len(ids) - 1)

    def generate(self, payload: dict) -> list[dict]:
        self.payloads.append(payload)
        batch = payload["input_ids"]
        params = payload["sampling_params"]
        params = params if isinstance(params, list) else [params] * len(batch)
        starts = payload.get("logprob_start_len")
        starts = starts if isinstance(starts, list) else [starts] * len(batch)
        out = []
        for ids, p, start in zip(batch, params, starts):
            for _ in range(p.get("n", 1)):
                out.append(self._answer(list(ids), p, start if payload.get("return_logprob") else None))
        return out

    def _answer(self, ids: list[int], p: dict, start: int | None) -> dict:
        cached = self._cached(ids)
        meta = {"prompt_tokens": len(ids), "cached_tokens": cached}
        generated: list[int] = []
        while len(generated) < p["max_new_tokens"]:
            token = toy_next(ids + generated)
            generated.append(token)
            if token in p["stop_token_ids"]:
                break
        meta["completion_tokens"] = len(generated)
        stopped = bool(generated) and generated[-1] in p.get("stop_token_ids", ())
        meta["finish_reason"] = ({"type": "abort", "message": self.abort} if self.abort
                                 else {"type": "stop" if stopped else "length"})
        if start is not None:
            meta["output_token_logprobs"] = [[toy_logprob(ids + generated[:i], t), t, None]
                                             for i, t in enumerate(generated)]
            if start >= 0:
                meta["input_token_logprobs"] = [[None, ids[start], None]] + [
                    [toy_logprob(ids[:i], ids[i]), ids[i], None] for i in range(start + 1, len(ids))]
        return {"output_ids": generated, "meta_info": meta}


def backend(transport: FakeTransport) -> SGLangBackend:
    return SGLangBackend("fake", _transport=transport, eos_token_ids=(EOS,), vocab_size=VOCAB, logprobs="server")


def test_sample_builds_one_parallel_request_and_returns_the_models_logprobs():
    fake = FakeTransport()
    engine = backend(fake)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=0)
    (group,) = engine.sample([[5, 6, 7]], n=3, params=params)
    (payload,) = fake.payloads
    assert payload["input_ids"] == [[5, 6, 7]]
    assert payload["sampling_params"] == {"max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "top_k": -1,
                                          "stop_token_ids": [EOS], "n": 3}
    assert payload["return_logprob"] and payload["logprob_start_len"] == -1
    assert len(group) == 3
    for sample in group:
        assert sample.token_ids == (8, 9, EOS) and sample.finish_reason == "stop"
        assert sample.logprobs == pytest.approx([toy_logprob([5, 6, 7], 8), toy_logprob([5, 6, 7, 8], 9),
                                                 toy_logprob([5, 6, 7, 8, 9], EOS)], abs=0)
    assert (engine.stats.calls, engine.stats.prompt_tokens, engine.stats.generated_tokens) == (1, 9, 9)


def test_a_length_cut_sample_says_length():
    engine = backend(FakeTransport())
    (group,) = engine.sample([[3]], n=1, params=SamplingParams(max_new_tokens=2))
    assert group[0].token_ids == (4, 5) and group[0].finish_reason == "length"


def test_score_asks_from_the_token_before_the_continuation_and_warms_a_shared_prefix():
    fake = FakeTransport()
    engine = backend(fake)
    prefix = (11, 12, 13, 14)
    requests = [ScoreRequest(prefix, (20, 21)), ScoreRequest(prefix, (22,)), ScoreRequest((30, 31), (32,))]
    scores = engine.score(requests)
    warm, scored = fake.payloads
    # one warm-up prefill of the prefix two requests share, without log-probs
    assert warm["input_ids"] == [list(prefix)] and warm["sampling_params"] == {"max_new_tokens": 0}
    assert "return_logprob" not in warm
    assert scored["logprob_start_len"] == [3, 3, 1]
    for request, result in zip(requests, scores):
        ids = list(request.prefix_ids) + list(request.continuation_ids)
        want = [toy_logprob(ids[:i], ids[i]) for i in range(len(request.prefix_ids), len(ids))]
        assert list(result.logprobs) == pytest.approx(want, abs=0)
    assert engine.stats.scored_tokens == 4 and engine.stats.calls == 1
    assert engine.stats.cached_tokens > 0  # the warm-up made the shared prefix a cache hit


def test_empty_continuations_send_nothing_and_empty_prefixes_are_refused():
    fake = FakeTransport()
    engine = backend(fake)
    assert engine.score([ScoreRequest((1, 2), ())])[0].logprobs == ()
    assert fake.payloads == []
    with pytest.raises(BackendError, match="non-empty prefix"):
        engine.score([ScoreRequest((), (3,))])


def test_an_aborted_request_is_a_one_line_backend_error():
    engine = backend(FakeTransport(abort="out of memory"))
    with pytest.raises(BackendError, match="aborted a request: out of memory"):
        engine.sample([[5]], n=1, params=SamplingParams(max_new_tokens=2))


def test_out_of_vocabulary_ids_are_refused_before_anything_is_sent():
    fake = FakeTransport()
    with pytest.raises(BackendError):
        backend(fake).sample([[VOCAB + 3]], n=1, params=SamplingParams(max_new_tokens=2))
    assert fake.payloads == []


def test_a_deterministic_server_gets_one_seed_per_copy_after_one_prefill():
    fake = FakeTransport(deterministic=True)
    engine = backend(fake)
    engine.sample([[5, 6]], n=2, params=SamplingParams(max_new_tokens=4, seed=7))
    warm, request = fake.payloads
    assert warm["input_ids"] == [[5, 6]] and warm["sampling_params"] == {"max_new_tokens": 0}
    assert request["input_ids"] == [[5, 6], [5, 6]]
    seeds = [p["sampling_seed"] for p in request["sampling_params"]]
    assert len(set(seeds)) == 2 and "n" not in request["sampling_params"][0]


def test_an_unseeded_server_warns_once_that_seeds_are_ignored():
    engine = backend(FakeTransport())
    with pytest.warns(RuntimeWarning, match="ignores per-request seeds"):
        engine.sample([[5]], n=1, params=SamplingParams(max_new_tokens=1, seed=1))
    engine.sample([[5]], n=1, params=SamplingParams(max_new_tokens=1, seed=2))  # no second warning


def test_clear_cache_flushes_the_servers_radix_cache():
    fake = FakeTransport()
    engine = backend(fake)
    engine.clear_cache()
    assert fake.flushed == 1


def test_whole_log_prob_rows_are_refused_in_one_line():
    """SGLang returns top-k log-probs only: the exact per-token KL needs the embedded engine."""
    engine = backend(FakeTransport())
    assert engine.supports_full_logprobs is False
    for call in (lambda: engine.sample([[1, 3]], n=1, params=SamplingParams(max_new_tokens=2, full_logprobs=True)),
                 lambda: engine.score([ScoreRequest((1, 3), (4,), full_logprobs=True)])):
        with pytest.raises(BackendError) as err:
            call()
        assert "\n" not in str(err.value) and "top-k" in str(err.value) and "transformers" in str(err.value)


def test_an_answer_cut_short_by_a_dying_server_is_a_one_line_backend_error():
    """A server killed mid-reply leaves a short body (``http.client.IncompleteRead``): the run
    must see the server's death as a BackendError (and say --resume), never a traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ttsearch.agents.engines.sglang.transport import HTTPTransport

    served = threading.Event()

    class CutShort(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "616")
            self.end_headers()
            self.wfile.write(b'{"output_ids": [')  # then the process dies
            served.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class DyingHandle:
        name, kind, proc = "policy", "server", object()
        url = f"http://127.0.0.1:{server.server_address[1]}"

        def dead_reason(self):  # alive until it has cut an answer short
            return "policy: the SGLang server died (exit -9); rerun with --resume" if served.is_set() else None

    try:
        with pytest.raises(BackendError, match="died"):
            HTTPTransport(DyingHandle(), timeout_s=5.0, retries=2).generate({"input_ids": [[1, 2]]})
        assert served.is_set()  # the error came from the cut answer, not before any request
    finally:
        server.shutdown()
