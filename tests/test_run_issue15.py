"""`ttsearch run` with issue 15's pieces end to end on the shipped maze pair: the centred and
decisive PA variants, both self-certainty signs, merged-reference variants, validation tasks."""

from __future__ import annotations

import json

import pytest
import yaml

from ttsearch.agents.checkpoints.merge import CACHE_ENV
from ttsearch.benchmarks.cli import main
from ttsearch.benchmarks.report.token_scores import score_record

from tolerances import shipped_score_tol

CONFIG = {
    "name": "issue15", "pair": "default:maze", "tasks": {"split": "test", "limit": 2, "episode_seed": 0},
    "validation": {"split": "train", "limit": 1, "kwargs": {"start": 20000}},
    "sampling": {"max_new_tokens": 4},
    "arms": [{"name": "bon3", "controller": "trajectory_best_of_n", "kwargs": {"n": 3}, "scorer": "pa"},
             {"name": "step-pac", "controller": "step_best_of_n", "kwargs": {"k": 2}, "scorer": "pac"}],
    "scorers": [{"name": "progress_advantage", "label": "pa"},
                {"name": "progress_advantage_centered", "label": "pac"},
                {"name": "progress_advantage", "label": "pad", "kwargs": {"span": "decisive"}},
                {"name": "self_certainty", "label": "sc-deepconf"},
                {"name": "self_certainty", "label": "sc-paper", "kwargs": {"sign": "paper"}}],
    "reference_variants": [{"merge": "linear", "alpha": 0.0}, {"merge": "dare", "alpha": 0.5}],
    "reference_variant_scorers": ["pa", "pac"],
    "applications": {"uq_fa_arms": ["bon3"]},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue15")
    (root / "run.yaml").write_text(yaml.safe_dump(CONFIG))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root / "merged"))
        assert main(["run", str(root / "run.yaml"), "--out", str(root / "out"), "--concurrency", "2"]) == 0
    return root / "out"


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]


def test_rows_keep_token_data_roles_and_every_label(run_dir):
    rows = _rows(run_dir)
    assert sorted(r["task"]["role"] for r in rows) == ["test"] * 4 + ["validation"] * 2
    labels = {"pa", "pac", "pad", "sc-deepconf", "sc-paper", "pa@linear-0", "pac@linear-0", "pa@dare-0.5-d0.1-s0",
              "pac@dare-0.5-d0.1-s0"}
    for row in rows:
        for traj in row["rollouts"] or [row["trajectory"]]:
            assert set(traj["scores"]) == labels
            data = traj["steps"][0]["token_data"]
            assert data["kl"] is not None and data["decisive"] is not None
            assert set(data["variants"]) == {"linear-0", "dare-0.5-d0.1-s0"}
            sc = [traj["scores"][k]["trajectory"] for k in ("sc-deepconf", "sc-paper")]
            assert sc[0] == pytest.approx(-sc[1], abs=1e-9)  # the two signs


def test_scores_equal_their_recomputation_and_alpha_zero_is_the_reference(run_dir):
    for row in _rows(run_dir):
        for traj in row["rollouts"] or [row["trajectory"]]:
            for label, spec in (("pa", {"name": "progress_advantage", "kwargs": {"beta": 0.1}, "reference": None}),
                                ("pac@dare-0.5-d0.1-s0", {"name": "progress_advantage_centered", "kwargs": {"beta": 0.1},
                                                           "reference": "dare-0.5-d0.1-s0"})):
                # the variant's policy log-probs come from its own rescoring pass: float32 rounding apart
                assert score_record(traj, spec) == pytest.approx(traj["scores"][label]["trajectory"], abs=shipped_score_tol(tokens=8))
            assert traj["scores"]["pa@linear-0"]["trajectory"] == pytest.approx(traj["scores"]["pa"]["trajectory"],
                                                                               abs=shipped_score_tol(tokens=8))


def test_the_report_leaves_validation_out_and_sweeps_alpha(run_dir, capsys):
    assert main(["report", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run"]["episodes"] == 4
    assert [r["reference"] for r in summary["alpha_sweep"]["rows"]] == ["π_ref (the pair's)", "dare-0.5-d0.1-s0",
                                                                        "linear-0"]
    assert summary["scorer_specs"]["sc-paper"]["kwargs"] == {"sign": "paper"}
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "paper: +mean top-k log-prob" in markdown and "## Merged references: the α sweep" in markdown
