"""SGLang vs the transformers engine on the maze beam search (issue 5), with real CPU servers.

- Beam search through SGLang equals beam search through transformers on the same samples: CPU
  SGLang ignores seeds, so the SGLang beam's every candidate (token ids, prompts) is recorded and
  replayed through a transformers-backed pair; every candidate's policy and reference log-probs
  agree within the float32 tolerance (the rule of tests/tolerances.py) and the replayed search
  takes the identical path to the identical final trajectory, unless two candidates were tied
  within that tolerance (then the replay reports where it diverged, and the swapped candidates'
  ranking keys moved by no more than the tolerance allows). (Greedy decoding on both engines
  would be weaker: a greedy beam proposes one candidate per state, so it never ranks samples; the
  replay checks every sampled candidate.)
- In that search >= 90% of the policy server's prompt tokens came from its radix cache, by the
  responses' ``meta_info`` (what EngineStats records) and, as an independent count, by the
  server's own prefill log (which also sees SGLang's hidden prefill for parallel sampling).
- ``ttsearch bench engines --json`` runs end to end against the same two servers.

One policy and one reference server (~2 GB each, ~1 min start-up, started together) serve the
module. Skipped without the SGLang runtime unless TTSEARCH_REQUIRE_SGLANG=1 (then it fails).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.sglang]  # skipped without the runtime: tests/conftest.py
TASKS = 2


@pytest.fixture(scope="module")
def tf_pair():
    from ttsearch.agents import ModelPair
    from ttsearch.agents.checkpoints.shipped import default_pair_dir

    return ModelPair.load_dir(default_pair_dir("maze"))


@pytest.fixture(scope="module")
def servers(tf_pair, tmp_path_factory):
    from ttsearch.agents.checkpoints.shipped import default_pair_dir
    from ttsearch.agents.engines.sglang.server import ServerConfig, SGLangServer

    run_dir, folder = tmp_path_factory.mktemp("engines"), default_pair_dir("maze")
    # Started here, one after the other: a server's parent-death signal fires when the thread
    # that launched it exits, so servers started from a thread pool die with its threads.
    started = []
    try:
        for name in ("policy", "reference"):
            started.append(SGLangServer(ServerConfig(model_path=folder / name), run_dir=run_dir, name=name))
        print(f"\nSGLang start-up {[round(s.startup_s, 1) for s in started]} s")
        yield {s.name: s for s in started}
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def tasks(tf_pair):
    from ttsearch.envs import list_tasks

    kwargs = dict(tf_pair.manifest.env_kwargs)
    kwargs.pop("gamma", None)
    return list_tasks("maze", split="test", limit=TASKS, **kwargs)


def _beam():
    from ttsearch.search import make_controller

    return make_controller("beam", width=3, expand=3, seed=0)


@pytest.fixture(scope="module")
def sglang_beams(servers, tf_pair, tasks):
    """The SGLang beam on each task, every proposal recorded, with cache accounting around it."""
    from ttsearch.agents import Agent, PlainActionParser, SamplingParams
    from ttsearch.agents.engines.sglang.backend import SGLangBackend
    from ttsearch.benchmarks.perf.engine_replay import RecordingProposer
    from ttsearch.benchmarks.perf.engine_stats import ResponseTally, log_offset, prefill_tally
    from ttsearch.scorers import make_scorer
    from ttsearch.search import Budget

    policy, reference = SGLangBackend(servers["policy"]), SGLangBackend(servers["reference"])
    tally = ResponseTally.attach(policy)
    offset = log_offset(servers["policy"].log_path)
    stats0 = policy.stats.snapshot()
    agent = Agent(tf_pair.with_backends(policy, reference),
                  sampling=SamplingParams(max_new_tokens=2, temperature=1.0),
                  parser=PlainActionParser(match_admissible=True))
    runs = []
    with pytest.warns(RuntimeWarning, match="ignores per-request seeds"):
        for task in tasks:
            recorder = RecordingProposer(agent)
            result = _beam().run(task, task.make, recorder, make_scorer("progress_advantage", beta=tf_pair.beta),
                                 Budget())
            runs.append((task, recorder.records, result))
    return {"runs": runs, "responses": tally.since((0, 0, 0)), "stats": policy.stats.minus(stats0),
            "log": prefill_tally(servers["policy"].log_path, offset)}


def _replay(tf_pair, task, records):
    """(replay proposer, replayed result or None when the replay left the recorded path)."""
    from ttsearch.agents import ModelPair
    from ttsearch.agents.checkpoints.shipped import default_pair_dir
    from ttsearch.benchmarks.perf.engine_replay import ReplayDiverged, ReplayProposer
    from ttsearch.scorers import make_scorer
    from ttsearch.search import Budget

    scorer = make_scorer("progress_advantage", beta=tf_pair.beta)
    replay = ReplayProposer(records, ModelPair.load_dir(default_pair_dir("maze")), scorer=scorer)
    try:
        return replay, _beam().run(task, task.make, replay, scorer, Budget())
    except ReplayDiverged:
        return replay, None


def _tolerance(tf_pair, records):
    """The rule's float32 tolerance, M over every recorded prompt + candidate (the compared rows)."""
    from ttsearch.agents.engines.numerics import forward_depth, logprob_tolerance
    from ttsearch.benchmarks.perf.engines import recorded_requests, workload_magnitude

    requests = recorded_requests(records)
    depth = max(forward_depth(tf_pair.policy.model), forward_depth(tf_pair.reference.model))
    return logprob_tolerance("float32", workload_magnitude(tf_pair, requests), depth)


def test_beam_through_sglang_equals_transformers_on_the_same_samples(sglang_beams, tf_pair):
    for task, records, first in sglang_beams["runs"]:
        replay, second = _replay(tf_pair, task, records)
        tol = _tolerance(tf_pair, records)
        print(f"{task.id}: {len(records)} proposals, {replay.diff.tokens} token log-probs, "
              f"max |sglang - transformers| policy {replay.diff.policy:.2e} reference {replay.diff.reference:.2e} "
              f"(tolerance {tol:.2e}); divergence {replay.divergence}")
        assert replay.diff.tokens > 0
        assert replay.diff.max_abs <= tol
        if second is None:
            # a near-tie swapped: every ranking key (a sum of analysed_call PA step scores, each
            # β·(mean − mean) of log-probs within tol) moved by at most analysed_call·2β·tol
            d = replay.divergence
            assert d.swapped_pairs >= 1 and d.key_noise <= d.analysed_call * 2 * tf_pair.beta * tol
            continue
        assert replay.exhausted
        a, b = first.trajectory, second.trajectory
        assert a.actions == b.actions and len(a.steps) > 0
        for x, y in zip(a.steps, b.steps, strict=True):
            # the scored span; whole generations may differ in a trailing stop token when two
            # samples share a span (an exact PA tie, broken by float noise on SGLang)
            assert x.action_token_ids == y.action_token_ids
            assert x.result == y.result
            assert x.policy_logprobs == pytest.approx(y.policy_logprobs, abs=tol)
            assert x.reference_logprobs == pytest.approx(y.reference_logprobs, abs=tol)
        assert len(first.tree) == len(second.tree) and first.stop_reason == second.stop_reason
        # the trajectory score: a mean of PA step scores, each within β·2·tol
        assert first.score == pytest.approx(second.score, abs=2 * tf_pair.beta * tol)


def test_replay_comparison_can_fail(sglang_beams, tf_pair):
    """Negative control: a recorded log-prob off by 0.5 is reported as a 0.5 difference."""
    task, records, _ = sglang_beams["runs"][0]
    record = records[0]
    cand = record.candidates[0][0]
    bad = replace(cand, policy_logprobs=tuple(x + 0.5 for x in cand.policy_logprobs))
    groups = ((bad, *record.candidates[0][1:]), *record.candidates[1:])
    first_call = [replace(record, candidates=groups)]
    from ttsearch.benchmarks.perf.engine_replay import ReplayProposer

    replay = ReplayProposer(first_call, tf_pair)
    replay.propose([_root_state(task)], k=record.k, seed=0)
    assert replay.diff.policy == pytest.approx(0.5, abs=_tolerance(tf_pair, records))


def _root_state(task):
    from ttsearch.envs.base import Trajectory

    env = task.make()
    return Trajectory(task, env.reset(seed=task.seed), (), env.system_prompt)


def test_policy_server_serves_the_beam_prompts_from_its_radix_cache(sglang_beams):
    responses, stats, log = sglang_beams["responses"], sglang_beams["stats"], sglang_beams["log"]
    print(f"responses {responses}; EngineStats prompt {stats.prompt_tokens} cached {stats.cached_tokens}; "
          f"server prefill log {log}")
    # EngineStats records exactly what the responses said (sampling sends no warm-ups when unseeded)
    assert (stats.prompt_tokens, stats.cached_tokens) == (responses["prompt_tokens"], responses["cached_tokens"])
    assert responses["hit_frac"] >= 0.9
    # the server's own count of prefilled positions, hidden parallel-sampling prefills included
    assert log["prefill_batches"] > 0 and log["hit_frac"] >= 0.8


def test_bench_engines_cli_end_to_end(servers, sglang_beams, capsys):
    from ttsearch.benchmarks.cli import main

    argv = ["bench", "engines", "--json", "--episodes", "1", "--walk-steps", "3",
            "--url-policy", servers["policy"].url, "--url-reference", servers["reference"].url]
    with pytest.warns(RuntimeWarning, match="ignores per-request seeds"):
        assert main(argv) == 0  # 0: the log-probs agree (a near-tie divergence would not fail it)
    out = json.loads(capsys.readouterr().out)
    print(json.dumps({k: out[k] for k in ("max_abs_logprob_diff", "logprob_tolerance", "same_path_fraction",
                                          "divergences", "prefix_cache_hit_frac", "sglang_s", "transformers_s")}))
    assert out["logprob_agreement"] is True
    assert 0 <= out["max_abs_logprob_diff"] <= out["logprob_tolerance"] < 1e-4
    assert 0 <= out["prefix_cache_hit_frac"] <= 1
    assert out["sglang_s"] > 0 and out["transformers_s"] > 0 and out["episodes"] == 1
    assert out["scoring"]["tokens_compared"] > 0 and out["beam"]["replay_tokens_compared"] > 0
    assert out["same_path_fraction"] in (0.0, 1.0)  # one layout
    assert len(out["divergences"]) == (out["same_path_fraction"] == 0.0)
