"""Issue 15's report sections on hand-made rows: diagnostics, voting re-ranking, tuning, the α sweep."""

from __future__ import annotations

import itertools
import json

import pytest
import yaml

from ttsearch.benchmarks.cli import main
from ttsearch.benchmarks.report.diagnostics import diagnostics, p_higher
from ttsearch.benchmarks.report.metrics_selection import expected_selection, selection_curve
from ttsearch.benchmarks.report.sections import alpha_sweep
from ttsearch.benchmarks.report.tuning import grid, tune
from ttsearch.search.selection import select

EXACT = 1e-12


def step(score: float, error: str | None = None, policy=(-0.1,), reference=(-0.2,)) -> dict:
    return {"observation": "o", "action_text": "x" if error is None else "xx", "action": "x", "reward": 0.0,
            "parse_error": error, "n_action_tokens": len(policy),
            "token_data": {"policy": list(policy), "reference": list(reference), "kl": None, "decisive": None,
                           "variants": {}}}


def traj(step_scores, errors, success: bool, total=None, answer=None, data=None) -> dict:
    steps = [step(s, e) if data is None else {**step(s, e), "token_data": d}
             for s, e, d in zip(step_scores, errors, data or [None] * len(step_scores))]
    score = sum(step_scores) / len(step_scores) if total is None else total
    return {"success": success, "reward": float(success), "n_steps": len(steps), "steps": steps, "answer": answer,
            "scores": {"s": {"steps": list(step_scores), "trajectory": score}}, "truth": {"decisive_step": None}}


def test_parse_and_outcome_sections_by_hand():
    good = traj([0.1, -0.2], [None, None], True)
    bad = traj([0.5, 0.0], ["garbled", None], False)
    out = diagnostics([good, bad], [], ["s"])
    parse = out["parse"]["s"]
    assert parse["parseable"]["n"] == 3 and parse["unparseable"]["n"] == 1
    assert parse["parseable"]["mean"] == pytest.approx((0.1 - 0.2 + 0.0) / 3, abs=EXACT)
    assert parse["p_unparseable_higher"] == 1.0  # 0.5 beats all three parseable steps
    assert out["outcome"]["s"]["p_success_higher"] == 0.0  # the failure's mean 0.25 > the success's -0.05
    assert out["picks"]["s"] is None  # no rows with rollouts
    assert diagnostics([good], [], ["s"])["parse"]["s"] is None  # no unparseable step: no section
    assert p_higher([1.0, 2.0], [1.0]) == 0.75  # a tie counts half


def test_picks_and_their_deciding_steps():
    rollouts = [traj([0.1, 0.1], [None, None], True), traj([0.9, -0.5], ["garbled", None], False)]
    row = {"arm": "bon", "task": {"id": "t0"}, "rollouts": rollouts}
    picks = diagnostics(rollouts, [row], ["s"])["picks"]["s"]
    # means 0.1 vs 0.2: the garbled rollout is picked, and its 0.9 step decided it
    assert picks == {"picks": 1, "success": 0.0, "picks_with_unparseable": 1.0, "rollouts_with_unparseable": 0.5,
                     "deciding_step_unparseable": 1.0,
                     "examples": [{"task": "t0", "arm": "bon", "rollout": 1, "step": 0, "action_text": "xx",
                                   "step_score": 0.9, "success": False}]}


def test_voting_re_ranking_is_the_exact_mean_over_subsets():
    scores, answers, success = [0.9, 0.1, 0.2], ["7", "5", "5"], [0.0, 1.0, 1.0]
    # n = 2: subsets {0,1}: a 1-1 tie -> "7" first -> fail; {0,2}: same -> fail; {1,2}: "5" -> success
    assert expected_selection(scores, answers, success, "majority", 2) == pytest.approx(1 / 3, abs=EXACT)
    assert expected_selection(scores, answers, success, "majority", 3) == 1.0
    by_hand = [success[s[select([scores[i] for i in s], [answers[i] for i in s], "weighted_majority")]]
               for s in itertools.combinations(range(3), 2)]
    curve = selection_curve([(scores, answers, success)], "weighted_majority", [2])
    assert curve[2][0] == pytest.approx(sum(by_hand) / 3, abs=EXACT)


def _data(policy, reference):
    return {"policy": policy, "reference": reference, "kl": None, "decisive": None, "variants": {}}


def _row(task: str, seed: int, role: str, rollouts: list[dict]) -> dict:
    return {"arm": "bon", "task": {"id": task, "seed": seed, "role": role, "split": "test"}, "rollouts": rollouts,
            "trajectory": rollouts[0], "success": rollouts[0]["success"]}


def _tuning_rows(min_wins: bool, task: str, seed: int, role: str) -> dict:
    """Two rollouts whose PA (β = 1) ranks differently under step_agg mean and min: the winner
    (success) is the one min prefers when ``min_wins``, else the one mean prefers."""
    steady = [_data([-0.1], [-0.2]), _data([-0.1], [-0.2])]  # step PA 0.1, 0.1: mean 0.1, min 0.1
    spiky = [_data([-0.1], [-0.6]), _data([-0.3], [-0.2])]   # step PA 0.5, -0.1: mean 0.2, min -0.1
    a = traj([0.1, 0.1], [None, None], min_wins, data=steady)
    b = traj([0.5, -0.1], [None, None], not min_wins, data=spiky)
    return _row(task, seed, role, [a, b])


def test_tuning_sees_validation_rows_only():
    validation = [_tuning_rows(True, f"v{i}", i, "validation") for i in range(3)]
    picked = tune(validation, pool_arms=["bon"], references={}, beta=1.0, objectives=["best_of_n"])
    spec = picked["best_of_n"]["spec"]
    assert spec["kwargs"]["step_agg"] in ("min", "bottom10", "last")  # a step aggregation that prefers "steady"
    assert spec["tuned"]["validation_value"] == 1.0 and spec["tuned"]["default_value"] == 0.0
    assert len(grid(validation[0]["rollouts"])) == 6 * (5 + 2)  # step aggs x (5 token aggs + min/max per token)


def test_tune_scorer_command_and_the_report_evaluate_on_test_tasks_only(tmp_path, capsys):
    rows = [_tuning_rows(True, f"v{i}", i, "test") for i in range(3)]
    rows += [_tuning_rows(False, f"t{i}", 100 + i, "test") for i in range(4)]  # test tasks prefer the mean
    for r in rows:
        r.update({"schema": 3, "key": f"bon|{r['task']['id']}|0", "controller": "trajectory_best_of_n",
                  "search_scorer": "s", "usage": {"tokens": 1}, "error": None, "chosen": 0})
    (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run.json").write_text(json.dumps({"arms": [{"name": "bon"}], "scorers": ["s"],
                                                   "applications": {"uq_fa_arms": ["bon"]}}))
    assert main(["tune-scorer", str(tmp_path), "--validation-seeds", "0-2", "--objectives", "best_of_n"]) == 0
    spec = yaml.safe_load((tmp_path / "tuned_scorers.yaml").read_text())
    assert spec["validation"]["tasks"] == ["v0", "v1", "v2"]
    assert spec["scorers"][0]["tuned"]["validation_value"] == 1.0
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)["tuned"]
    assert tuned["test_tasks"] == 4
    cell = tuned["cells"][0]
    assert cell["test"]["value"] == 0.0 and cell["default_test"]["value"] == 1.0  # honest: it does not transfer
    assert (tmp_path / "report" / "report.md").read_text().count("(tuned)") == 1


def test_alpha_sweep_rows_name_each_reference():
    summary = {"tts": {"pa": {"success_rate": 0.5}, "pa@linear-0.5": {"success_rate": 0.6}},
               "uq": {"pa": {"auroc": 0.7}, "pa@linear-0.5": {"auroc": 0.65}},
               "fa": {"pa": {"accuracy": 0.3}, "pa@linear-0.5": {"accuracy": 0.35}}}
    specs = {"pa": {"name": "progress_advantage", "reference": None},
             "pa@linear-0.5": {"name": "progress_advantage", "reference": {"merge": "linear", "alpha": 0.5}}}
    sweep = alpha_sweep(summary, specs)
    assert [r["reference"] for r in sweep["rows"]] == ["π_ref (the pair's)", "linear-0.5"]
    assert sweep["rows"][1]["cells"]["pa"] == {"best_of_n": 0.6, "auroc": 0.65, "fa_accuracy": 0.35}
    assert alpha_sweep(summary, {"pa": specs["pa"]}) is None
