"""`ttsearch run`: rows against independent truth, resume rules, and crash safety under SIGKILL.

- Scores in a row equal progress advantage / self-certainty recomputed by hand from a plain
  full forward pass (eager attention, no cache, no batching) of both checkpoints.
- A run SIGKILLed at several points (once provably mid-line) and resumed each time ends with
  every key exactly once, no partial line, and the same rows as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ttsearch.benchmarks import cli
from ttsearch.benchmarks.run.config import load_config, parse_config
from ttsearch.benchmarks.run.runner import run_experiment
from ttsearch.benchmarks.run.setup import setup
from ttsearch.benchmarks.run.store import SPLIT_WRITE_ENV, RunStore
from ttsearch.envs.errors import ConfigError

from tolerances import model_tol, shipped_score_tol

SMOKE = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "smoke-maze.yaml"
TRAJ_FIELDS = {"success", "reward", "n_steps", "tokens", "actions", "answer", "steps", "scores", "truth"}
STEP_FIELDS = {"observation", "action_text", "action", "reward", "parse_error", "n_action_tokens", "token_data"}
ROW_FIELDS = {"schema", "key", "arm", "controller", "controller_kwargs", "search_scorer", "budget", "seed",
              "task", "success", "reward", "n_steps", "stop_reason", "stopped_early", "usage", "eval_usage",
              "wall_s", "trajectory", "rollouts", "chosen", "tree_path", "error"}


def assert_scores_close(mine: dict, theirs: dict) -> None:
    """Every scorer's trajectory and step scores agree to float rounding: the resumed run read
    other prefixes from the engine's cache than the uninterrupted one."""
    assert set(mine) == set(theirs)
    tol = shipped_score_tol(tokens=8)  # a maze turn is at most a few tokens
    for label, score in mine.items():
        assert score["trajectory"] == pytest.approx(theirs[label]["trajectory"], abs=tol), label
        assert score["steps"] == pytest.approx(theirs[label]["steps"], abs=tol), label


def read_rows(out: Path) -> list[dict]:
    data = (out / "episodes.jsonl").read_bytes()
    assert data.endswith(b"\n"), "a partial last line was left behind"
    return [json.loads(line) for line in data.splitlines()]


def expected_keys(config) -> set[str]:
    ids = ["maze-1", "maze-6", "maze-7"]  # the first three held-out (test split) layouts
    return {f"{a.name}|{t}|{seed}" for a in config.arms for t in ids for seed in config.seeds}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    config = load_config(SMOKE)
    summary = run_experiment(config, out, progress=False)
    assert summary["ran"] == summary["total"] == 12
    return out, {r["key"]: r for r in read_rows(out)}


def test_rows_follow_the_schema(reference_run):
    out, rows = reference_run
    config = load_config(SMOKE)
    assert set(rows) == expected_keys(config)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config_hash"] == config.config_hash() and manifest["scorers"] == config.scorer_labels()
    assert manifest["applications"] == {"uq_fa_arms": ["bon4-pa"]}
    labels = set(config.scorer_labels())
    for row in rows.values():
        assert set(row) == ROW_FIELDS
        trajs = [row["trajectory"], *(row["rollouts"] or [])]
        for traj in trajs:
            assert set(traj) == TRAJ_FIELDS and set(traj["scores"]) == labels
            assert traj["answer"] is None  # the maze has no final answer
            assert all(set(step) == STEP_FIELDS and len(step["token_data"]["policy"]) == step["n_action_tokens"]
                       for step in traj["steps"])
            assert traj["n_steps"] == len(traj["steps"]) == len(traj["actions"])
            for s in traj["scores"].values():
                assert len(s["steps"]) == traj["n_steps"]
            if traj["success"]:
                assert traj["truth"] == {"decisive_step": None, "decisive_regret": None}
        assert row["task"]["info"]["difficulty"] in ("easy", "medium", "hard")
        assert row["task"]["role"] == "test" and row["schema"] == 3
        assert row["success"] == row["trajectory"]["success"] and row["n_steps"] == row["trajectory"]["n_steps"]
        if row["controller"] == "trajectory_best_of_n":
            # the pick is the finished rollout with the best PA: checked against a plain forward
            # in test_scores_equal_full_forward_recomputation (the search's scores and the rows'
            # rescoring pass are two float computations, so near-ties may order either way)
            assert len(row["rollouts"]) == 4 and row["rollouts"][row["chosen"]] == row["trajectory"]
            pool = row["rollouts"]
        else:
            assert row["rollouts"] is None and row["chosen"] is None
            pool = [row["trajectory"]]
        # one rescoring pass per model over every distinct trajectory's action tokens
        n_tokens = sum(st["n_action_tokens"] for t in pool for st in t["steps"])
        assert row["eval_usage"] == {"policy_scored_tokens": n_tokens, "reference_scored_tokens": n_tokens}
        assert len(row["tree_path"]) == row["n_steps"]
        if row["budget"]:
            assert row["usage"]["tokens"] <= row["budget"]["tokens"]
        if row["controller"] == "greedy":  # greedy asks the reference nothing; the rescoring does
            assert row["usage"]["scored_tokens"] == 0 and row["eval_usage"]["reference_scored_tokens"] > 0
    assert len(list((out / "trees").glob("*.json"))) == len(rows)


def test_scores_equal_full_forward_recomputation(reference_run):
    """Re-run two episodes in-process, then recompute PA and self-certainty by hand from a plain
    full forward pass of both checkpoints and compare with the numbers in the rows."""
    from transformers import AutoModelForCausalLM

    from ttsearch.scorers.base import token_needs
    from ttsearch.search import Budget

    _, rows = reference_run
    s = setup(load_config(SMOKE))
    assert token_needs(s.scorers.values()) == (True, 20)
    models = {side: AutoModelForCausalLM.from_pretrained(s.pair_dir / side, attn_implementation="eager").eval()
              for side in ("policy", "reference")}

    def logits(side, ids):
        with torch.no_grad():
            return models[side](torch.tensor([list(ids)])).logits[0]

    arm = next(a for a in s.arms if a.controller == "trajectory_best_of_n")
    task = s.tasks[0]
    result = arm.make_controller(0).run(task, task.make, s.agent, s.scorers["pa"], Budget(**arm.budget))
    row = rows[f"{arm.name}|{task.id}|0"]
    assert [list(r.actions) for r in result.rollouts] == [r["actions"] for r in row["rollouts"]]
    beta = s.pair.beta
    checked, means, mean_tols = 0, {}, []
    for i, (trajectory, traj) in enumerate(zip(result.rollouts, row["rollouts"])):
        pa_steps, sc_steps, pa_tols, sc_tols = [], [], [], []
        for t, step in enumerate(trajectory.steps):
            prompt = s.agent.renderer.render(type(trajectory)(trajectory.task, trajectory.initial_observation,
                                                             trajectory.steps[:t], trajectory.system_prompt))
            span = list(step.action_token_ids)
            rows_at = slice(len(prompt) - 1, len(prompt) - 1 + len(span))
            z = {side: logits(side, [*prompt, *span]) for side in models}
            # how far the run's float32 log-probs may be from this forward's (tests/tolerances.py)
            tol = {side: model_tol(models[side], z[side]) for side in z}
            lp = {side: z[side][rows_at].double().log_softmax(-1) for side in z}
            picked = {side: lp[side].gather(1, torch.tensor(span)[:, None])[:, 0] for side in lp}
            # the search's sampled policy log-probs agree with the full forward too
            assert torch.allclose(torch.tensor(step.policy_logprobs, dtype=torch.double), picked["policy"],
                                  rtol=0, atol=tol["policy"])
            pa_steps.append(beta * (picked["policy"].mean().item() - picked["reference"].mean().item())
                            if span else 0.0)
            pa_tols.append(beta * (tol["policy"] + tol["reference"]))  # a mean's error <= the largest term's
            top = lp["policy"].topk(20, dim=-1).values  # self-certainty: -mean of the top-20 log-probs
            sc_steps.append((-top.mean(dim=-1)).mean().item() if span else 0.0)
            sc_tols.append(tol["policy"])
        for got, want, tols in ((traj["scores"]["pa"]["steps"], pa_steps, pa_tols),
                                (traj["scores"]["self_certainty"]["steps"], sc_steps, sc_tols)):
            assert len(got) == len(want) and all(abs(g - w) <= e for g, w, e in zip(got, want, tols))
        mean = sum(pa_steps) / len(pa_steps) if pa_steps else 0.0
        assert traj["scores"]["pa"]["trajectory"] == pytest.approx(mean, abs=max(pa_tols, default=0.0))
        if pa_steps:
            means[i] = mean
            mean_tols.append(max(pa_tols))
        checked += len(pa_steps)
    assert checked >= 4
    # the pick is the finished rollout with the best PA, up to the noise of the search's own scores
    # (another float computation of the same PA: a near-tie may go either way)
    assert means[row["chosen"]] >= max(means.values()) - 2 * max(mean_tols)


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "ttsearch.benchmarks.cli", "run", *args, "--quiet",
                             "--concurrency", "8"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """Poll until ``ready()`` (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("the run neither progressed nor ended")


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_matches_uninterrupted_run(tmp_path, reference_run):
    """Eight episodes in flight, SIGKILLed mid-line and at random moments, then resumed: every
    episode exactly once, every row whole and equal to the uninterrupted run's."""
    _, reference = reference_run
    out = tmp_path / "run"
    path = out / "episodes.jsonl"
    rng = random.Random(0)
    # Every row is written in two halves 0.15 s apart, so kills can land mid-line.
    slow_writes = {SPLIT_WRITE_ENV: "0.15"}

    def size() -> int:
        return path.stat().st_size if path.exists() else 0

    def partial() -> bool:
        data = path.read_bytes() if path.exists() else b""
        return bool(data) and not data.endswith(b"\n")

    mid_line_kills = 0
    for attempt in range(3):
        args = [str(SMOKE), "--out", str(out)] + (["--resume"] if attempt else [])
        proc = _cli(*args, env_extra=slow_writes)
        before = size()
        if attempt == 0:  # kill exactly while a row is half written
            progressed = _wait_for(proc, partial)
        else:  # kill at a random moment once this process has started writing
            progressed = _wait_for(proc, lambda before=before: size() > before)
            time.sleep(rng.uniform(0.0, 0.4))
        if progressed and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            mid_line_kills += partial()
        else:
            proc.communicate()
    assert mid_line_kills >= 1
    n_before = len(path.read_bytes().splitlines())
    proc = _cli(str(SMOKE), "--out", str(out), "--resume")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert n_before < 12  # the kills did interrupt the run: the last resume had work to do
    rows = read_rows(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) and set(keys) == set(reference)
    for row in rows:
        ref = reference[row["key"]]
        for name in ("success", "reward", "n_steps", "stop_reason", "usage", "chosen", "tree_path"):
            if name == "usage":  # cache hits and timing depend on what ran before in the process
                volatile = {"wall_seconds", "cached_tokens", "computed_tokens"}
                assert {k: v for k, v in row[name].items() if k not in volatile} == \
                       {k: v for k, v in ref[name].items() if k not in volatile}
            else:
                assert row[name] == ref[name], name
        for mine, theirs in zip([row["trajectory"], *(row["rollouts"] or [])],
                                [ref["trajectory"], *(ref["rollouts"] or [])], strict=True):
            assert mine["actions"] == theirs["actions"] and mine["truth"] == theirs["truth"]
            assert_scores_close(mine["scores"], theirs["scores"])


def test_resume_rules(tmp_path, capsys):
    config = yaml.safe_load(SMOKE.read_text())
    config["tasks"]["limit"] = 1
    config["save_trees"] = False
    first = tmp_path / "a.yaml"
    first.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert cli.main(["run", str(first), "--out", str(out), "--quiet"]) == 0
    assert len(read_rows(out)) == 4
    capsys.readouterr()
    # the same folder without --resume: refused
    assert cli.main(["run", str(first), "--out", str(out), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    # an edited config: refused, pointing at a new --out
    config["seeds"] = [0, 1]
    edited = tmp_path / "b.yaml"
    edited.write_text(yaml.safe_dump(config))
    assert cli.main(["run", str(edited), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another config" in err and "new --out" in err
    # the same config: nothing left to do, nothing duplicated
    assert cli.main(["run", str(first), "--out", str(out), "--resume", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["ran"] == 0
    assert len(read_rows(out)) == 4


def test_limit_runs_first_tasks_and_a_resume_completes_them(tmp_path, capsys, reference_run):
    out = tmp_path / "run"
    assert cli.main(["run", str(SMOKE), "--out", str(out), "--limit", "1", "--quiet"]) == 0
    assert {r["key"].split("|")[1] for r in read_rows(out)} == {"maze-1"}
    capsys.readouterr()
    assert cli.main(["run", str(SMOKE), "--out", str(out), "--resume", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) | {"seconds": 0} == {"out": str(out), "ran": 8, "total": 12,
                                                                    "errors": 0, "seconds": 0}
    assert {r["key"] for r in read_rows(out)} == set(reference_run[1])


def test_store_truncates_partial_line_and_rejects_duplicates(tmp_path):
    config = parse_config(yaml.safe_load(SMOKE.read_text()))
    manifest = {"config_hash": config.config_hash(), "schema": 1}
    store = RunStore(tmp_path, manifest, resume=False)
    store.append({"key": "a|t|0", "x": 1})
    store.close()
    with (tmp_path / "episodes.jsonl").open("ab") as fh:
        fh.write(b'{"key": "b|t|0", "x"')  # a crash mid-write
    store = RunStore(tmp_path, manifest, resume=True)
    assert store.done == {"a|t|0"}
    assert (tmp_path / "episodes.jsonl").read_bytes() == b'{"key":"a|t|0","x":1}\n'
    store.append({"key": "b|t|0", "x": 2})
    store.close()
    assert [r["key"] for r in read_rows(tmp_path)] == ["a|t|0", "b|t|0"]
    with (tmp_path / "episodes.jsonl").open("ab") as fh:
        fh.write(b'{"key":"a|t|0","x":1}\n')
    with pytest.raises(ConfigError, match="twice"):
        RunStore(tmp_path, manifest, resume=True)
