"""`ttsearch report` on a synthetic run folder (docs/run_schema.md) with hand-computed metrics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ttsearch.benchmarks.report.tables import build_report, load_run
from ttsearch.envs.errors import ConfigError

from tolerances import EXACT

SCORERS = ["pa", "lp", "rm"]


def traj(success, pa, lp, rm, pa_steps=(0.0,), lp_steps=(0.0,), truth=None):
    steps = [{"observation": "o", "action_text": "north", "action": "north", "reward": 0.0,
              "parse_error": None, "n_action_tokens": 1} for _ in pa_steps]
    return {"success": success, "reward": float(success), "n_steps": len(steps), "tokens": len(steps),
            "actions": ["north"] * len(steps), "steps": steps,
            "scores": {"pa": {"steps": list(pa_steps), "trajectory": pa},
                       "lp": {"steps": list(lp_steps), "trajectory": lp},
                       "rm": {"steps": list(lp_steps), "trajectory": rm}},
            "truth": {"decisive_step": truth, "decisive_regret": None if truth is None else 0.5}}


def row(arm, task, difficulty, trajectory, tokens, rollouts=None, chosen=None):
    return {"schema": 1, "key": f"{arm}|{task}|0", "arm": arm,
            "controller": "trajectory_best_of_n" if rollouts else "greedy", "controller_kwargs": {},
            "search_scorer": "pa", "budget": {}, "seed": 0,
            "task": {"id": task, "env": "maze", "seed": 0, "split": "test",
                     "info": {"difficulty": difficulty, "v_star": 0.9}},
            "success": trajectory["success"], "reward": trajectory["reward"], "n_steps": trajectory["n_steps"],
            "stop_reason": "done", "stopped_early": False,
            "usage": {"generated_tokens": tokens // 2, "scored_tokens": tokens - tokens // 2, "tokens": tokens},
            "eval_usage": {"policy_scored_tokens": 0, "reference_scored_tokens": 0}, "wall_s": 0.1,
            "trajectory": trajectory, "rollouts": rollouts, "chosen": chosen, "tree_path": None}


T0 = [traj(True, 0.5, -1.0, 0.9), traj(False, 0.1, -0.5, 0.2, [0.3, -0.5, 0.1], [-0.1, -0.2, -0.9], truth=1),
      traj(True, 0.4, -2.0, 0.8), traj(False, -0.3, -0.2, 0.1, [-0.6, 0.1], [0.0, -0.4], truth=0)]
T1 = [traj(False, 0.2, -0.1, 0.3), traj(False, 0.3, -0.3, 0.6, [0.1, 0.1, -0.5], [-0.1, -0.1, -0.1], truth=2),
      traj(True, 0.1, -0.4, 0.7), traj(False, -0.2, -0.9, 0.05)]


def write_run(directory: Path, rows, *, uq_fa_arms=("bon4",), partial: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"schema": 1, "config": {}, "config_hash": "abc", "pair": "p", "scorers": SCORERS,
                "arms": [{"name": "greedy"}, {"name": "bon4"}], "applications": {"uq_fa_arms": list(uq_fa_arms)},
                "created": "2026-01-01T00:00:00"}
    (directory / "run.json").write_text(json.dumps(manifest))
    (directory / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + partial)
    return directory


def standard_rows():
    return [row("greedy", "t0", "easy", traj(False, 0.0, 0.0, 0.0), 10),
            row("greedy", "t1", "hard", traj(False, 0.0, 0.0, 0.0), 12),
            row("bon4", "t0", "easy", T0[0], 80, T0, 0),
            row("bon4", "t1", "hard", T1[1], 90, T1, 1)]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "ttsearch.benchmarks.cli", "report", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def check_json(out: dict) -> None:
    # best-of-4 = the top-scored rollout. pa: t0 r0 succeeds, t1 r1 fails; lp: t0 r3, t1 r0 fail; rm: r0, r2 succeed
    assert out["tts"]["pa"]["success_rate"] == pytest.approx(0.5, abs=EXACT)
    assert out["tts"]["pa"]["stderr"] == pytest.approx(0.5, abs=EXACT)  # std([1, 0]) / √2
    assert out["tts"]["lp"]["success_rate"] == 0.0 and out["tts"]["rm"]["success_rate"] == 1.0
    bon = out["best_of_n"]["bon4"]
    assert bon["ns"] == [1, 2, 4] and bon["pass_at_1"] == pytest.approx((2 / 4 + 1 / 4) / 2, abs=EXACT)
    # pass@2: t0 1 − C(2,2)/C(4,2) = 5/6, t1 1 − C(3,2)/C(4,2) = 1/2
    assert bon["oracle_pass_at_n"]["2"] == pytest.approx((5 / 6 + 1 / 2) / 2, abs=EXACT)
    assert bon["oracle_pass_at_n"]["4"] == 1.0
    # best-of-2 by pa, rank weights 3/6, 2/6, 1/6, 0: t0 successes by rank 1,1,0,0 -> 5/6; t1 0,0,1,0 -> 1/6
    assert bon["scorers"]["pa"]["2"]["mean"] == pytest.approx((5 / 6 + 1 / 6) / 2, abs=EXACT)
    # UQ over the 8 bon4 rollouts. pa: positives .5 .4 .1 vs negatives .1 -.3 .2 .3 -.2 -> 5 + 5 + 2.5 of 15
    assert out["uq"]["pa"]["auroc"] == pytest.approx(12.5 / 15, abs=EXACT)
    assert out["uq"]["lp"]["auroc"] == pytest.approx(2 / 15, abs=EXACT)  # only -0.4 beats -0.5 and -0.9
    rm = out["uq"]["rm"]
    assert rm["auroc"] == 1.0 and rm["auprc"] == 1.0 and rm["mapping"] == "identity"
    assert rm["spearman"] == pytest.approx(30 / math.sqrt(42 * 30), abs=EXACT)  # Pearson of ranks, by hand
    assert rm["ece"] == pytest.approx((0.1 + 0.2 + 0.2 + 0.1 + 0.3 + 0.6 + 0.3 + 0.05) / 8, abs=EXACT)  # one per bin
    assert out["uq"]["pa"]["mapping"] == "minmax" and out["uq"]["pa"]["n"] == 8
    # FA over the 3 failures with truth (1, 0, 2). pa: cumulative minima 1, 0, 2; lp: 2, 1, 2
    assert out["fa"]["pa"] == {**out["fa"]["pa"], "accuracy": 1.0, "mae": 0.0, "n": 3}
    assert out["fa"]["lp"]["accuracy"] == pytest.approx(1 / 3, abs=EXACT) and out["fa"]["lp"]["mae"] == pytest.approx(2 / 3, abs=EXACT)
    assert out["fa"]["pa"]["methods"]["sharpest_drop"]["accuracy"] == 1.0
    # TTS arms and budget tuning
    assert out["tts_arms"]["bon4"]["success_rate"] == 0.5 and out["tts_arms"]["bon4"]["mean_tokens"] == 85
    # one stderr formula in every table: std([1, 0]) / √2 = √(p(1 − p)/(n − 1)), as for tts above
    assert out["tts_arms"]["bon4"]["stderr"] == pytest.approx(0.5) == out["tts"]["pa"]["stderr"]
    assert out["tts_arms"]["greedy"]["success_rate"] == 0.0 and out["tts_arms"]["greedy"]["mean_tokens"] == 11
    d = out["budget"]["difficulties"]
    assert d["easy"]["choice"] == "bon4"     # greedy 0/1 vs bon4 1/1 (stderr 0)
    assert d["hard"]["choice"] == "greedy"   # both 0/1: the cheaper
    # all: bon4 1/2 ± 0.5 (the same stderr as the arms table), so greedy's 0/2 is within one stderr
    assert d["all"]["best"] == "bon4" and d["all"]["tolerance"] == pytest.approx(0.5)
    assert d["all"]["choice"] == "greedy"
    assert out["available"] == {"best_of_n": True, "fa": True, "difficulty": True, "roc": True,
                                "diagnostics": True, "selection": False, "tuned": False, "alpha_sweep": False}


def check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not np.all(image == image[0, 0])


def test_report_function_matches_hand_values(tmp_path):
    run = load_run(write_run(tmp_path / "run", standard_rows(), partial='{"schema": 1, "key": "bon4|t2'))
    assert len(run.rows) == 4 and any("partial" in n for n in run.notes)
    check_json(json.loads(json.dumps(build_report(run).summary)))


def test_report_cli_json_markdown_and_plots(tmp_path):
    directory = write_run(tmp_path / "run", standard_rows())
    done = cli(str(directory), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    check_json(out)
    markdown = (directory / "report" / "report.md").read_text()
    assert "| bon4 |" in markdown and "Budget tuning" in markdown and "oracle pass@n" in markdown
    pngs = [Path(p) for name, p in out["files"].items() if name != "markdown"]
    assert len(pngs) == 7  # the six views and diagnostics
    for path in pngs:
        check_png(path)


def test_undefined_metrics_are_null_with_a_reason(tmp_path):
    failing = [traj(False, 0.1, -0.5, 0.2), traj(False, 0.2, -0.1, 0.4)]
    rows = [row("greedy", "t0", None, failing[0], 10), row("greedy", "t1", None, failing[1], 10)]
    directory = write_run(tmp_path / "run", rows, uq_fa_arms=())
    done = cli(str(directory), "--json", "--out-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["uq"]["pa"]["auroc"] is None and out["tts"]["pa"]["success_rate"] is None
    assert out["fa"]["pa"]["accuracy"] is None and out["best_of_n"] == {}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "only failures" in markdown and "no row kept its rollouts" in markdown
    assert "uq_fa_arms is empty" in markdown
    # empty sections are left out of the markdown and the plots, and the notes say how to fill them
    assert set(out["budget"]["difficulties"]) == {"all"}
    assert out["available"] == {"best_of_n": False, "fa": False, "difficulty": False, "roc": False,
                                "diagnostics": False, "selection": False, "tuned": False, "alpha_sweep": False}
    assert "Failure attribution" not in markdown and "| pa | min_cumulative |" not in markdown
    assert "attribution='my_pkg.attribution'" in markdown and "no task has a known difficulty" in markdown
    for name in ("roc", "best_of_n", "attribution"):
        assert not (tmp_path / "out" / f"{name}.png").exists()
    assert set(out["files"]) == {"markdown", "success_vs_compute", "reliability", "budget_tuning"}


def test_missing_or_empty_run_is_a_one_line_error(tmp_path):
    done = cli(str(tmp_path / "nope"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "does not exist" in done.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "episodes.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no finished episodes"):
        load_run(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "episodes.jsonl").write_text('{"key": 1\n{"key": "b"}\n')
    with pytest.raises(ConfigError, match="line 1"):
        load_run(tmp_path / "bad")
