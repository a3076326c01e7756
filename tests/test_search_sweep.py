"""Budget sweeps (fake proposer) and the `bench search` / `sweep` command modules (tiny real pair)."""

from __future__ import annotations

import json
import math

import pytest

from ttsearch.benchmarks.cli import build_parser
from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import Budget, make_controller
from ttsearch.search.sweep import (
    SweepPoint,
    best_point,
    budget_grid,
    cheapest_within,
    plot_sweep,
    run_sweep,
)
from ttsearch.search.testing import Choice, FakeProposer

COMMANDS = {
    "bench search": ("ttsearch.benchmarks.cli.bench_search_cmd", "search bench"),
    "sweep": ("ttsearch.benchmarks.cli.sweep_cmd", "budget sweep"),
}


class Coin(Env):
    """One step: 'good' pays 1. The fake policy prefers 'bad' (p=.7); PA prefers 'good'."""

    deterministic = True

    def reset(self, *, seed=None):
        return Observation("pick", ("good", "bad"))

    def step(self, action):
        return StepResult(Observation("over"), float(action == "good"), True, False)


def coin_table(state):
    return [Choice("good", math.log(0.3), 1.0), Choice("bad", math.log(0.7), -1.0)]


def point(mean_tokens, successes, episodes=10, **budget):
    return SweepPoint(Budget(**budget), episodes, successes, mean_tokens, mean_tokens, 0.0, 1.0, 1.0, 0)


def test_sweep_success_grows_with_budget_and_points_are_written(tmp_path):
    tasks = [Task("coin", f"c{i}", seed=i) for i in range(6)]
    out = tmp_path / "points.jsonl"
    # k candidates need k * 4 generated tokens: budgets of 4 and 8 afford 1 and 2 samples.
    points = run_sweep(make_controller("step_best_of_n", k=4), tasks, FakeProposer(coin_table),
                       make_scorer("progress_advantage"), budget_grid("generated_tokens", [4, 8, 16]),
                       env_factory=lambda task: Coin, out=out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["budget"] for p in lines] == [{"generated_tokens": 4}, {"generated_tokens": 8}, {"generated_tokens": 16}]
    assert lines[0]["controller"] == "step_best_of_n" and lines[0]["scorer"] == "progress_advantage"
    assert [p.episodes for p in points] == [6, 6, 6]
    assert points[0].mean_tokens < points[1].mean_tokens < points[2].mean_tokens
    # 4 stratified samples always include 'good' (p=.3 >= 1/4): PA then always picks it
    assert points[2].success_rate == 1.0 and points[0].success_rate <= points[2].success_rate
    assert all(p.mean_generated_tokens <= p.budget.generated_tokens for p in points)


def test_cheapest_within_tolerance_by_hand():
    points = [point(10, 5), point(20, 8), point(40, 9), point(80, 9)]
    assert best_point(points) is points[2]  # ties on success: the cheaper one
    assert cheapest_within(points, 0.1) is points[1]  # 0.8 >= 0.9 - 0.1
    assert cheapest_within(points, 0.0) is points[2]
    assert cheapest_within(points, 0.5) is points[0]
    with pytest.raises(ConfigError, match="tolerance"):
        cheapest_within(points, 2.0)


def test_budget_grid_and_plot(tmp_path):
    grid = budget_grid("tokens", [10, 20], Budget(env_steps=5))
    assert grid == [Budget(tokens=10, env_steps=5), Budget(tokens=20, env_steps=5)]
    with pytest.raises(ConfigError, match="unknown budget limit 'token'"):
        budget_grid("token", [1])
    path = plot_sweep([point(10, 5, tokens=10), point(20, 8, tokens=20)], tmp_path / "s.png",
                      cheapest=point(20, 8, tokens=20))
    assert path.read_bytes()[:4] == b"\x89PNG"


# --- the command modules over a tiny real pair ----------------------------------------------

@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    from ttsearch.agents import PairManifest, PromptConfig
    from ttsearch.envs.maze.env import SYSTEM_PROMPT
    from ttsearch.envs.maze.layout import ACTIONS, describe, generate_layout
    from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

    layout = generate_layout(0)
    tok = train_tokenizer([SYSTEM_PROMPT, *ACTIONS] * 5 + [describe(layout, c) for c in layout.free_cells],
                          vocab_size=400)
    root = tmp_path_factory.mktemp("pair")
    save_pair_folder(make_model(tok, init_std=0.1, seed=1), tok, root / "policy")
    save_pair_folder(make_model(tok, init_std=0.1, seed=2), tok, root / "reference")
    PairManifest(beta=0.5, env="maze", env_kwargs={"size": 5, "slip": 0.1, "gamma": 0.95, "max_steps": 3},
                 prompt=PromptConfig(max_history_turns=0)).write(root)
    return root


def cli(argv, capsys):
    args = build_parser(argv, COMMANDS).parse_args(argv)
    code = args._main(args)
    return code, capsys.readouterr().out


def test_bench_search_prints_the_results_object(pair_dir, tmp_path, capsys):
    argv = ["bench", "search", "--pair", str(pair_dir), "--episodes", "2", "--budget", "tokens=24",
            "--controllers", "greedy,step_best_of_n,beam", "--scorers", "progress_advantage,policy_logprob",
            "--option", "beam.width=2", "--option", "step_best_of_n.k=3", "--out", str(tmp_path), "--json"]
    code, out = cli(argv, capsys)
    data = json.loads(out)
    assert code == 0 and data["episodes"] == 2 and data["budget"] == {"tokens": 24}
    cells = {r["cell"]: r for r in data["results"]}
    assert {"greedy/none", "step_best_of_n/progress_advantage", "step_best_of_n/policy_logprob",
            "beam/progress_advantage", "step_best_of_n/progress_advantage/gate",
            "beam/progress_advantage/gate"} <= set(cells)
    for r in data["results"]:
        assert {"controller", "scorer", "early_stop", "episodes", "success_rate", "stderr", "tokens"} <= set(r)
        assert r["episodes"] == 2 and 0 <= r["success_rate"] <= 1 and r["tokens"] <= 24
    assert cells["beam/progress_advantage"]["options"]["width"] == 2
    # the step-by-step controllers pace their budget to the env's step limit (max_steps=3 here)
    assert data["horizon"] == 3 and cells["beam/progress_advantage"]["options"]["horizon"] == 3
    # equal compute: a scorer without a reference pass gets 1.5x the samples (k=3 -> 4.5 -> 4)
    assert cells["step_best_of_n/policy_logprob"]["options"]["k"] == round(3 * 1.5)
    assert cells["step_best_of_n/progress_advantage/gate"]["early_stop"].startswith("gate(")
    assert any(c["claim"].startswith("step_best_of_n by PA beats greedy") for c in data["comparisons"])
    # resumable: a rerun reads the episodes back instead of running them again
    records = (tmp_path / "cells" / "greedy__none.jsonl").read_text().splitlines()
    code, out = cli(argv, capsys)
    assert json.loads(out)["results"][0] == data["results"][0]
    assert (tmp_path / "cells" / "greedy__none.jsonl").read_text().splitlines() == records


def test_sweep_command_writes_points_plot_and_names_the_cheapest(pair_dir, tmp_path, capsys):
    argv = ["sweep", "--pair", str(pair_dir), "--controller", "step_best_of_n", "--option", "k=2",
            "--budgets", "8,16", "--episodes", "2", "--out", str(tmp_path), "--json"]
    code, out = cli(argv, capsys)
    data = json.loads(out)
    assert code == 0 and len(data["points"]) == 2
    assert [p["budget"]["tokens"] for p in data["points"]] == [8, 16]
    if data["best"]["successes"]:
        assert data["cheapest_within_tolerance"]["label"] in {p["label"] for p in data["points"]}
    else:  # the random tiny pair: nothing solved, so nothing is recommended
        assert data["cheapest_within_tolerance"] is None and "no budget solved" in data["warnings"][0]
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "points.jsonl").read_text().splitlines()) == 2


def test_command_errors_are_one_line(pair_dir, capsys):
    with pytest.raises(ConfigError, match="unknown controller 'bem'"):
        cli(["sweep", "--pair", str(pair_dir), "--controller", "bem", "--budgets", "8"], capsys)
    with pytest.raises(ConfigError, match="CONTROLLER.KEY=VALUE"):
        cli(["bench", "search", "--pair", str(pair_dir), "--option", "width=3"], capsys)


def test_bench_cells_options_and_early_stop_overrides():
    from ttsearch.benchmarks.cli.bench_search_cmd import settings_from_args
    from ttsearch.benchmarks.perf.search import build_cells

    argv = ["bench", "search", "--controllers", "step_best_of_n,beam", "--scorers", "progress_advantage",
            "--early-stop", 'step_best_of_n={"name": "gate", "threshold": 0.8}',
            "--early-stop", 'step_best_of_n={"name": "gate", "threshold": 0.6}']
    args = build_parser(argv, COMMANDS).parse_args(argv)
    cells = {c["id"]: c for c in build_cells(settings_from_args(args), horizon=20)}
    assert set(cells) == {"step_best_of_n/progress_advantage", "beam/progress_advantage",
                          "step_best_of_n/progress_advantage/gate(signal=policy_prob,threshold=0.8)",
                          "step_best_of_n/progress_advantage/gate(signal=policy_prob,threshold=0.6)"}
    assert all(c["options"]["horizon"] == 20 for c in cells.values())
    bad = ["bench", "search", "--early-stop", "step_best_of_n=gate"]
    with pytest.raises(ConfigError, match="must look like CONTROLLER="):
        settings_from_args(build_parser(bad, COMMANDS).parse_args(bad))
