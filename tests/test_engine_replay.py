"""Record a search on one engine and replay its candidates through another, without a server.

Both sides are transformers engines over the shipped maze pair (two instances: separate caches),
so the replayed log-probs equal the recorded ones to float rounding and the replayed beam must
take the recorded path. A recording proposer that lifts one candidate's log-probs by δ swaps two
candidates' order: the replay must then *report* the divergence (which call, the swapped pair's
score gaps, the log-prob difference δ behind it) instead of raising, and ``bench engines``'
summary must count it in ``same_path_fraction`` and fail only on the log-prob disagreement.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.agents.engines.numerics import forward_depth, logprob_tolerance
from ttsearch.benchmarks.perf.engine_replay import RecordingProposer, ReplayDiverged, ReplayProposer
from ttsearch.benchmarks.perf.engines import (
    EnginesBenchSettings,
    replay_beam,
    score_requests,
    summarize,
    walk_states,
    workload_magnitude,
)
from ttsearch.envs import list_tasks
from ttsearch.scorers import make_scorer
from ttsearch.search import Budget, make_controller

from tolerances import EXACT

SAMPLING = SamplingParams(max_new_tokens=2, temperature=1.0)


@pytest.fixture(scope="module")
def pairs():
    return ModelPair.load_dir(default_pair_dir("maze")), ModelPair.load_dir(default_pair_dir("maze"))


@pytest.fixture(scope="module")
def tasks(pairs):
    kwargs = dict(pairs[0].manifest.env_kwargs)
    kwargs.pop("gamma", None)  # a solver setting, not needed to play
    return list_tasks("maze", split="test", limit=4, **kwargs)


def _agent(pair):
    return Agent(pair, sampling=SAMPLING, parser=PlainActionParser(match_admissible=True))


def _beam(width=2):
    return lambda: make_controller("beam", width=width, expand=3, seed=0)


def _tolerance(pair, task):
    """The rule's float32 tolerance for this pair on this layout's scoring workload."""
    import random

    requests = score_requests(pair, walk_states(task, 3, random.Random(0)))
    depth = max(forward_depth(pair.policy.model), forward_depth(pair.reference.model))
    return logprob_tolerance("float32", workload_magnitude(pair, requests), depth)


class LiftRunnerUp:
    """A recording-side proposer that, on its first call, lifts the policy log-probs of the
    runner-up action's best candidate by δ per token, so that it ranks first by δ·β − gap."""

    def __init__(self, agent, scorer, margin=0.05):
        self.agent, self.scorer, self.margin = agent, scorer, margin
        self.delta = None
        self.max_new_tokens, self.renderer = agent.max_new_tokens, agent.renderer

    @property
    def policy_stats(self):
        return self.agent.policy_stats

    @property
    def reference_stats(self):
        return self.agent.reference_stats

    def propose(self, states, **kwargs):
        out = self.agent.propose(states, **kwargs)
        if self.delta is None:
            self.delta = 0.0
            best = {}
            for c in out[0]:
                score = self.scorer.score_step(c)
                if c.action not in best or score > best[c.action][0]:
                    best[c.action] = (score, c)
            ranked = sorted(best.values(), key=lambda item: -item[0])
            if len(ranked) >= 2:
                (top, _), (second, lifted) = ranked[:2]
                self.delta = (top - second + self.margin) / self.scorer.beta  # PA (token mean) moves by β·δ
                out[0] = [replace(c, policy_logprobs=tuple(x + self.delta for x in c.policy_logprobs))
                          if c is lifted else c for c in out[0]]
        return out


def test_replay_through_another_engine_takes_the_recorded_path(pairs, tasks):
    recorded_pair, replay_pair = pairs
    scorer = make_scorer("progress_advantage", beta=recorded_pair.beta)
    task = tasks[0]
    out = replay_beam(task, RecordingProposer(_agent(recorded_pair)), replay_pair, _beam(), scorer)
    assert out["replay_same_path"] and out["divergence"] is None and out["replay_failed_checks"] == []
    assert out["replay_tokens"] > 0
    tol = _tolerance(recorded_pair, task)
    assert max(out["replay_policy_diff"], out["replay_reference_diff"]) <= tol
    # PA trajectory score: β·(mean − mean) per step, averaged over steps
    assert out["replay_score_diff"] <= 2 * recorded_pair.beta * tol


def test_a_swapped_near_tie_is_reported_with_its_gap_not_raised(pairs, tasks):
    recorded_pair, replay_pair = pairs
    scorer = make_scorer("progress_advantage", beta=recorded_pair.beta)
    for task in tasks:  # the first layout where the root's samples hold two different moves
        lifter = LiftRunnerUp(_agent(recorded_pair), scorer)
        out = replay_beam(task, RecordingProposer(lifter), replay_pair, _beam(width=1), scorer)
        if lifter.delta:
            break
    else:
        pytest.skip("no layout's root samples held two moves")
    d = out["divergence"]
    assert not out["replay_same_path"] and d is not None
    # the recorded beam kept the lifted candidate, the replay the true best: the states of the next
    # call differ (or, when the kept child ended the episode, only the final result does)
    assert d["call"] in (2, None) and d["analysed_call"] == 1 and d["swapped_pairs"] >= 1
    tol = _tolerance(recorded_pair, task)
    assert d["max_abs_logprob_diff"] == pytest.approx(lifter.delta, abs=tol)
    assert d["key_noise"] == pytest.approx(recorded_pair.beta * lifter.delta, abs=2 * recorded_pair.beta * tol)
    # an order flip needs the two keys to move by at least the gap: each run's gap <= 2·key noise
    assert 0 <= d["closest_gap_recorded"] <= 2 * d["key_noise"]
    assert 0 <= d["closest_gap_replayed"] <= 2 * d["key_noise"]
    assert out["replay_score_diff"] is None or d["call"] is None


def test_a_diverged_replay_raises_with_the_call_when_used_directly(pairs, tasks):
    recorded_pair, replay_pair = pairs
    scorer = make_scorer("progress_advantage", beta=recorded_pair.beta)
    for task in tasks:
        lifter = LiftRunnerUp(_agent(recorded_pair), scorer)
        recorder = RecordingProposer(lifter)
        first = make_controller("beam", width=1, expand=3, seed=0).run(task, task.make, recorder, scorer, Budget())
        if lifter.delta and len(first.trajectory.steps) > 1:
            break
    else:
        pytest.skip("no layout with a swap and a second step")
    replay = ReplayProposer(recorder.records, replay_pair, scorer=scorer)
    with pytest.raises(ReplayDiverged, match=r"call 2: .*other states.*closest swapped pair"):
        make_controller("beam", width=1, expand=3, seed=0).run(task, task.make, replay, scorer, Budget())
    assert replay.divergence.call == 2 and replay.calls == 1


def _row(task, same_path, diff, divergence=None):
    return {"task": task, "score_diff": diff, "replay_policy_diff": diff, "replay_reference_diff": 0.0,
            "replay_same_path": same_path, "replay_failed_checks": [] if same_path else ["all_calls"],
            "divergence": divergence, "replay_score_diff": 0.0 if same_path else None, "replay_tokens": 4,
            "magnitude": 10.0, "score_requests": 2, "score_tokens": 4, "replay_s": 0.1,
            "beam_sglang_s": 1.0, "beam_transformers_s": 0.5,
            **{f"score_{e}_s_{m}": 0.1 for e in ("sglang", "transformers") for m in ("policy", "reference")},
            "responses": {k: {"requests": 1, "prompt_tokens": 10, "cached_tokens": 9} for k in ("policy", "reference")},
            "prefill_log": None, "success": {"sglang": True, "transformers": True},
            "usage": {e: {f: 1 for f in ("generated_tokens", "scored_tokens", "prompt_tokens", "cached_tokens",
                                          "computed_tokens")} for e in ("sglang", "transformers")}}


def test_summary_counts_divergences_and_fails_only_on_logprob_disagreement():
    tol = logprob_tolerance("float32", 10.0, 2)
    tie = {"call": 16, "reason": "other states", "analysed_call": 15, "swapped_pairs": 1,
           "closest_gap_recorded": 1e-7, "closest_gap_replayed": 2e-7, "key_noise": 3e-7,
           "max_abs_logprob_diff": 2e-6}
    settings = EnginesBenchSettings(episodes=3)
    ok = summarize([_row("maze-1", True, 1e-6), _row("maze-6", False, 2e-6, tie), _row("maze-7", True, 1e-6)],
                   settings, {}, depth=2)
    assert ok["same_path_fraction"] == pytest.approx(2 / 3, abs=EXACT)
    assert ok["divergences"] == [{"task": "maze-6", **tie}]
    assert ok["logprob_tolerance"] == tol and ok["logprob_agreement"] is True
    assert ok["beam"]["replay_max_abs_trajectory_score_diff"] == 0.0  # over the finished replays only
    bad = summarize([_row("maze-1", True, 2 * tol)], settings, {}, depth=2)
    assert bad["logprob_agreement"] is False and bad["same_path_fraction"] == 1.0
