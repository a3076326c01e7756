"""SGLang vs the embedded transformers engine: same workloads, same token ids, side by side.

    result = run(EnginesBenchSettings(episodes=3))     # launches 2 CPU SGLang servers (~1 min)
    result = run(EnginesBenchSettings(url_policy="http://127.0.0.1:30000",
                                      url_reference="http://127.0.0.1:30001"))
    # the command: ttsearch bench engines --json   (benchmarks/cli/bench_engines_cmd.py)

Loads the default (reference, policy) pair twice: as TransformersBackends (radix prefix cache)
and as SGLangBackends (launched servers, or the two URLs given). On held-out mazes it runs,
one task at a time and alternating engines:

1. Scoring: the states of a seeded random walk, each with every admissible move (its tokens
   plus the end-of-turn token) as K candidates sharing one prefix, scored by policy and
   reference on both engines (identical requests).
2. Beam search (PA step scores): once on SGLang (every proposal recorded), once natively on
   transformers (its own samples; timed), and once replaying SGLang's exact candidates through
   a second transformers pair (``engine_replay.py``), which must reproduce the same path.

It prints one JSON object: ``max_abs_logprob_diff`` (max |lp_sglang - lp_transformers| over
every scored token of (1) and every replayed candidate token of (2), policy and reference) next
to ``logprob_tolerance`` (the float32 rounding two correct computations of this pair may differ
by: ``agents/engines/numerics.py``, with M the largest |logit| or |logsumexp| of the transformers
models over the compared sequences) and ``logprob_agreement`` (the first within the second: the
command exits 1 when it is false, else 0), ``same_path_fraction`` (the layouts whose replay
took the recorded path), ``divergences`` (one entry per layout whose replay left it: the call,
and the score gaps of the swapped candidates behind it; see ``engine_replay.py``),
``prefix_cache_hit_frac`` (SGLang cached / prompt tokens summed over the beam workload's
responses, both servers; the boundary token before the first scored position is always
recomputed and counts as a miss; see ``engine_stats.py`` for why the server-log figure in
``beam.sglang_prefill_log`` is lower), ``sglang_s`` and ``transformers_s`` (wall seconds of (1)
plus the beam runs of (2) on each engine), and details per workload and engine.

Unseeded CPU SGLang sampling plus a replay through another engine can meet a near-tie: two
candidates whose scores differ by less than the engines' log-prob disagreement swap places and
the replayed beam leaves the recorded path. That layout is reported (``divergences``) and the
run goes on; only log-probs outside the tolerance make the command fail.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
from ttsearch.agents.base import ScoreRequest
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.agents.engines.numerics import forward_depth, logprob_tolerance, row_magnitude
from ttsearch.agents.engines.sglang.backend import SGLangBackend
from ttsearch.benchmarks.perf.engine_replay import RecordingProposer, ReplayDiverged, ReplayProposer
from ttsearch.benchmarks.perf.engine_stats import ResponseTally, log_offset, prefill_tally
from ttsearch.envs import list_tasks
from ttsearch.envs.base import Step, Trajectory
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import Budget, make_controller


@dataclass(frozen=True, slots=True)
class EnginesBenchSettings:
    """Everything one ``bench engines`` run depends on (the CLI flags, typed)."""

    pair: str | None = None
    """Pair folder (None: the shipped maze pair)."""
    episodes: int = 20
    width: int = 3
    expand: int = 3
    max_new_tokens: int = 2
    walk_steps: int = 6
    """Random-walk states per layout to score."""
    seed: int = 0
    url_policy: str | None = None
    url_reference: str | None = None
    """Running SGLang servers (both or neither; neither: two are launched)."""
    run_dir: str = "runs/bench-engines"
    """Where launched servers write their logs."""

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.width < 1 or self.expand < 1 or self.walk_steps < 0:
            raise ConfigError("episodes, width and expand must be >= 1 and walk_steps >= 0")
        if bool(self.url_policy) != bool(self.url_reference):
            raise ConfigError("give both --url-policy and --url-reference, or neither (then both are launched)")


def open_servers(pair_dir: Path, manifest: Any, args: EnginesBenchSettings):
    """(policy, reference, launched servers): SGLangBackends on the given URLs or on new servers."""

    if args.url_policy:
        return (SGLangBackend(args.url_policy, name="policy"),
                SGLangBackend(args.url_reference, name="reference"), [])
    # One after the other, from this thread: a server's parent-death signal fires when the
    # *thread* that started it exits, so a thread pool would kill them; and on 2 cores two
    # concurrent start-ups take as long as two sequential ones.
    policy = SGLangBackend.launch(manifest.policy_dir(pair_dir), run_dir=args.run_dir, name="policy")
    try:
        reference = SGLangBackend.launch(manifest.reference_dir(pair_dir), run_dir=args.run_dir, name="reference")
    except BaseException:
        policy.close()
        raise
    return policy, reference, [policy, reference]


def walk_states(task: Any, steps: int, rng: random.Random) -> list:
    """The initial state and up to ``steps`` more along a seeded random walk of admissible moves."""

    env = task.make()
    traj = Trajectory(task, env.reset(seed=task.seed), (), env.system_prompt)
    states = [traj]
    for _ in range(steps):
        if traj.done:
            break
        action = rng.choice(list(traj.observation.admissible_actions))
        traj = traj.extended(Step(observation=traj.observation, action_text=action, action=action,
                                  result=env.step(action)))
        if not traj.done:
            states.append(traj)
    return states


def score_requests(pair: Any, states: list) -> list:
    """Every admissible move (its tokens + end of turn) of every state: K requests per prefix."""

    renderer, tok = pair.renderer(), pair.tokenizer
    eos = pair.policy.eos_token_ids[:1]
    requests = []
    for state, prompt in zip(states, renderer.render_many(states), strict=True):
        for move in state.observation.admissible_actions:
            ids = tuple(tok.encode(move, add_special_tokens=False)) + tuple(eos)
            requests.append(ScoreRequest(tuple(prompt), ids))
    return requests


def timed(fn, *a, **kw):
    start = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - start


def workload_magnitude(pair: Any, requests: list) -> float:
    """M of the tolerance rule: the largest |logit| or |logsumexp| of the pair's transformers
    models over the full sequences of ``requests`` (one plain forward per distinct sequence)."""

    magnitude = 0.0
    sequences = {r.prefix_ids + r.continuation_ids for r in requests}
    for backend in (pair.policy, pair.reference):
        with torch.no_grad():
            for ids in sequences:
                logits = backend.model(torch.tensor([list(ids)], device=backend.model.device)).logits[0]
                magnitude = max(magnitude, row_magnitude(logits))
    return magnitude


def recorded_requests(records: list) -> list[ScoreRequest]:
    """Every recorded candidate as a scoring request: the rows the replay compares."""
    return [ScoreRequest(prompt, cand.generated_token_ids) for record in records
            for prompt, group in zip(record.prompts, record.candidates, strict=True) for cand in group]


def replay_beam(task: Any, recorder: RecordingProposer, replay_pair: Any, make_beam, scorer) -> dict[str, Any]:
    """The beam once through ``recorder`` (every proposal recorded), then replayed through
    ``replay_pair``'s engines on the recorded candidates; what the replay agreed on.

    A replay that leaves the recorded path is reported in ``divergence`` (and the figures that
    need a finished replay are None), never raised."""

    out: dict[str, Any] = {}
    first, out["beam_recorded_s"] = timed(make_beam().run, task, task.make, recorder, scorer, Budget())
    replay = ReplayProposer(recorder.records, replay_pair, scorer=scorer)
    start = time.perf_counter()
    try:
        second = make_beam().run(task, task.make, replay, scorer, Budget())
    except ReplayDiverged:
        second = None
    out["replay_s"] = time.perf_counter() - start
    failed = ["all_calls"]
    if second is not None:
        a_steps, b_steps = first.trajectory.steps, second.trajectory.steps
        # spans, not whole generations: samples with one span tie exactly in PA on transformers and
        # within float noise on SGLang, so either may be kept (their trailing stop tokens can differ)
        checks = {"all_calls": replay.exhausted, "actions": first.trajectory.actions == second.trajectory.actions,
                  "spans": [s.action_token_ids for s in a_steps] == [s.action_token_ids for s in b_steps],
                  "tree": len(first.tree) == len(second.tree), "stop": first.stop_reason == second.stop_reason}
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            replay.final_divergence("same calls, other result: " + ", ".join(failed))
    out["replay_same_path"] = not failed
    out["replay_failed_checks"] = failed
    out["divergence"] = replay.divergence.as_dict() if replay.divergence is not None else None
    out["replay_score_diff"] = abs((first.score or 0.0) - (second.score or 0.0)) if second is not None else None
    out["replay_policy_diff"], out["replay_reference_diff"] = replay.diff.policy, replay.diff.reference
    out["replay_tokens"] = replay.diff.tokens
    out["recorded"] = first
    return out


def run_task(task, engines: dict, args, scorer, walk_rng, meters: dict) -> dict[str, Any]:
    """Both workloads for one layout on both engines; the figures to aggregate."""

    sg, tf, replay_pair = engines["sglang"], engines["transformers"], engines["replay"]
    out: dict[str, Any] = {"task": task.id}
    # (1) scoring: identical requests through both engines
    requests = score_requests(tf, walk_states(task, args.walk_steps, walk_rng))
    out["magnitude"] = workload_magnitude(tf, requests)
    diff = 0.0
    for model in ("policy", "reference"):
        a, t_sg = timed(getattr(sg, model).score, requests)
        b, t_tf = timed(getattr(tf, model).score, requests)
        out[f"score_sglang_s_{model}"], out[f"score_transformers_s_{model}"] = t_sg, t_tf
        diff = max(diff, *(abs(x - y) for sa, sb in zip(a, b, strict=True)
                           for x, y in zip(sa.logprobs, sb.logprobs, strict=True)))
    out["score_diff"], out["score_tokens"] = diff, 2 * sum(len(r.continuation_ids) for r in requests)
    out["score_requests"] = len(requests)
    # (2) beam: SGLang (recorded), transformers natively, SGLang's candidates replayed on transformers
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0)
    parser = PlainActionParser(match_admissible=True)

    def beam():
        return make_controller("beam", width=args.width, expand=args.expand, seed=args.seed)

    recorder = RecordingProposer(Agent(sg, sampling=sampling, parser=parser))
    tallies, logs = meters["responses"], meters["logs"]
    marks = {k: t.snapshot() for k, t in tallies.items()}
    offsets = {k: log_offset(p) for k, p in logs.items()}
    replayed = replay_beam(task, recorder, replay_pair, beam, scorer)
    out["magnitude"] = max(out["magnitude"], workload_magnitude(tf, recorded_requests(recorder.records)))
    first = replayed.pop("recorded")
    out["beam_sglang_s"] = replayed.pop("beam_recorded_s")
    out.update(replayed)
    out["responses"] = {k: t.since(marks[k]) for k, t in tallies.items()}
    out["prefill_log"] = {k: prefill_tally(p, offsets[k]) for k, p in logs.items()}
    native, out["beam_transformers_s"] = timed(beam().run, task, task.make,
                                               Agent(tf, sampling=sampling, parser=parser), scorer, Budget())
    out["success"] = {"sglang": first.success, "transformers": native.success}
    out["usage"] = {"sglang": asdict(first.usage), "transformers": asdict(native.usage)}
    return out


def run(args: EnginesBenchSettings, *, quiet: bool = True) -> dict[str, Any]:
    """Launch/connect, run both workloads on ``args.episodes`` layouts, return the summary."""

    pair_dir = Path(args.pair) if args.pair else default_pair_dir("maze")
    tf = ModelPair.load_dir(pair_dir)
    replay_pair = ModelPair.load_dir(pair_dir)  # its own caches: the native run's timing stays clean
    policy, reference, launched = open_servers(pair_dir, tf.manifest, args)
    try:
        sg = tf.with_backends(policy, reference)
        meters = {"responses": {"policy": ResponseTally.attach(policy),
                                "reference": ResponseTally.attach(reference)},
                  "logs": {b.name: b.server.log_path for b in launched}}
        env_kwargs = dict(tf.manifest.env_kwargs)
        env_kwargs.pop("gamma", None)  # a solver setting, not needed to play
        tasks = list_tasks(tf.manifest.env or "maze", split="test", limit=args.episodes, **env_kwargs)
        scorer = make_scorer("progress_advantage", beta=tf.beta)
        engines = {"sglang": sg, "transformers": tf, "replay": replay_pair}
        walk_rng = random.Random(args.seed)
        rows = []
        for i, task in enumerate(tasks):
            if not quiet:
                print(f"[bench engines] {i + 1}/{len(tasks)} {task.id}", file=sys.stderr, flush=True)
            rows.append(run_task(task, engines, args, scorer, walk_rng, meters))
        startup = {b.name: b.server.startup_s for b in launched}
    finally:
        for backend in launched:
            backend.close()
    dtype = str(tf.policy.model.dtype).removeprefix("torch.")
    depth = max(forward_depth(tf.policy.model), forward_depth(tf.reference.model))
    return summarize(rows, args, startup, dtype=dtype, depth=depth)


def _sum(rows: list[dict], *path: str) -> float:
    total = 0
    for row in rows:
        value = row
        for key in path:
            value = value[key]
        total += value or 0
    return total


def summarize(rows: list[dict[str, Any]], args: EnginesBenchSettings, startup: dict, *,
              dtype: str = "float32", depth: int) -> dict[str, Any]:
    """The JSON object of the module docstring from the per-layout rows of :func:`run_task`."""
    n = len(rows)
    max_diff = max(max(r["score_diff"], r["replay_policy_diff"], r["replay_reference_diff"]) for r in rows)
    tolerance = logprob_tolerance(dtype, max(r["magnitude"] for r in rows), depth)
    score_s = {e: sum(r[f"score_{e}_s_{m}"] for r in rows for m in ("policy", "reference"))
               for e in ("sglang", "transformers")}
    beam_s = {e: sum(r[f"beam_{e}_s"] for r in rows) for e in ("sglang", "transformers")}
    servers = ("policy", "reference")
    responses = {k: {f: _sum(rows, "responses", k, f) for f in ("requests", "prompt_tokens", "cached_tokens")}
                 for k in servers}
    for v in responses.values():
        v["hit_frac"] = v["cached_tokens"] / v["prompt_tokens"] if v["prompt_tokens"] else None
    prompt = sum(v["prompt_tokens"] for v in responses.values())
    logs = None
    if rows and rows[0]["prefill_log"]:
        logs = {k: {f: _sum(rows, "prefill_log", k, f) for f in ("new_tokens", "cached_tokens")} for k in servers}
        for v in logs.values():
            total = v["new_tokens"] + v["cached_tokens"]
            v["hit_frac"] = v["cached_tokens"] / total if total else None
    usage = {e: {f: _sum(rows, "usage", e, f) for f in
                 ("generated_tokens", "scored_tokens", "prompt_tokens", "cached_tokens", "computed_tokens")}
             for e in ("sglang", "transformers")}
    return {
        "max_abs_logprob_diff": max_diff,
        "logprob_tolerance": tolerance,
        "logprob_agreement": max_diff <= tolerance,
        "same_path_fraction": sum(r["replay_same_path"] for r in rows) / n,
        "divergences": [{"task": r["task"], **r["divergence"]} for r in rows if r["divergence"] is not None],
        "prefix_cache_hit_frac": sum(v["cached_tokens"] for v in responses.values()) / prompt if prompt else None,
        "sglang_s": score_s["sglang"] + beam_s["sglang"],
        "transformers_s": score_s["transformers"] + beam_s["transformers"],
        "episodes": n,
        "settings": {"width": args.width, "expand": args.expand, "max_new_tokens": args.max_new_tokens,
                     "walk_steps": args.walk_steps, "seed": args.seed},
        "tolerance_rule": {"dtype": dtype, "layers": depth, "magnitude": max(r["magnitude"] for r in rows)},
        "scoring": {"requests": sum(r["score_requests"] for r in rows),
                    "tokens_compared": sum(r["score_tokens"] for r in rows),
                    "max_abs_logprob_diff": max(r["score_diff"] for r in rows),
                    "sglang_s": score_s["sglang"], "transformers_s": score_s["transformers"]},
        "beam": {
            "sglang_s": beam_s["sglang"], "transformers_s": beam_s["transformers"],
            "replay_transformers_s": sum(r["replay_s"] for r in rows),
            "success_rate": {e: sum(r["success"][e] for r in rows) / n for e in ("sglang", "transformers")},
            "replay_failed": {r["task"]: r["replay_failed_checks"] for r in rows if r["replay_failed_checks"]},
            "replay_tokens_compared": sum(r["replay_tokens"] for r in rows),
            "replay_max_abs_policy_diff": max(r["replay_policy_diff"] for r in rows),
            "replay_max_abs_reference_diff": max(r["replay_reference_diff"] for r in rows),
            # over the layouts whose replay finished on the recorded path
            "replay_max_abs_trajectory_score_diff": max((r["replay_score_diff"] for r in rows
                                                         if r["replay_same_path"]), default=None),
            "sglang_responses": responses,
            "sglang_prefill_log": logs,
            "usage_per_engine": usage,
        },
        "server_startup_s": startup or None,
    }
