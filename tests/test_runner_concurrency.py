"""Episodes in flight, and env faults as data: ``ttsearch run`` with concurrency and broken envs.

- The same config at concurrency 1 and 8 gives every episode the same actions, success, budget
  usage and stop reason, and scores equal to float rounding (the real maze pair, real engines).
- A 20-episode run whose tasks include an env that raises, one that hangs and one that returns
  a malformed observation completes: those three are error rows naming kind, call and step,
  every other row equals the clean run's, and ``--resume --retry-errors`` reruns only them.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ttsearch.benchmarks import cli
from ttsearch.benchmarks.run.config import parse_config
from ttsearch.benchmarks.run.runner import run_experiment
from ttsearch.envs.registry import REGISTRY, list_tasks, register

from tolerances import shipped_score_tol

BUDGET_FIELDS = ("generated_tokens", "scored_tokens", "model_calls", "env_steps", "proposals", "candidates")

FAULTY_ENV = textwrap.dedent('''
    """A maze whose step() raises, hangs or answers garbage at a given step (for tests)."""
    import time

    from ttsearch.envs.base import Observation, StepResult, Task
    from ttsearch.envs.maze import SlipperyMaze, maze_tasks


    class FaultyMaze(SlipperyMaze):
        def __init__(self, *, fault=None, fault_step=2, **kwargs):
            super().__init__(**kwargs)
            self.fault, self.fault_step, self.steps = fault, fault_step, 0

        def reset(self, *, seed=None):
            self.steps = 0
            return super().reset(seed=seed)

        def step(self, action):
            self.steps += 1
            if self.steps == self.fault_step:
                if self.fault == "raise":
                    raise RuntimeError("the simulator crashed")
                if self.fault == "hang":
                    time.sleep(600)
                if self.fault == "malformed":
                    return StepResult(Observation(12345), 0.0, False, False)
            return super().step(action)


    def faulty_tasks(*, split="test", faults=None, **kwargs):
        for i, task in enumerate(maze_tasks(split=split, **kwargs)):
            fault = (faults or {}).get(str(i))
            yield Task(env="faulty_maze", id=task.id, seed=task.seed, split=task.split,
                       kwargs={**task.kwargs, "fault": fault})
''')


@pytest.fixture
def faulty_env(tmp_path, monkeypatch):
    folder = tmp_path / "userenv"
    folder.mkdir()
    (folder / "faulty_maze_env.py").write_text(FAULTY_ENV)
    monkeypatch.syspath_prepend(str(folder))
    register("faulty_maze", "faulty_maze_env:FaultyMaze", tasks="faulty_maze_env:faulty_tasks", overwrite=True)
    yield
    REGISTRY.pop("faulty_maze", None)
    sys.modules.pop("faulty_maze_env", None)


def config(**tasks) -> dict:
    return {"name": "faults", "pair": "default:maze", "tasks": {"split": "test", **tasks},
            "sampling": {"max_new_tokens": 4}, "env_timeout_s": 3, "prompt": "pair",
            "arms": [{"name": "greedy", "controller": "greedy"},
                     {"name": "step-bo2-pa", "controller": "step_best_of_n", "kwargs": {"k": 2}, "scorer": "pa"}],
            "scorers": [{"name": "progress_advantage", "label": "pa"}, {"name": "policy_logprob"}]}


def rows(out: Path) -> dict[str, dict]:
    return {row["key"]: row for row in map(json.loads, (out / "episodes.jsonl").read_text().splitlines())}


def assert_same_episode(mine: dict, theirs: dict) -> None:
    for name in ("success", "reward", "n_steps", "stop_reason", "chosen"):
        assert mine[name] == theirs[name], (mine["key"], name)
    assert {f: mine["usage"][f] for f in BUDGET_FIELDS} == {f: theirs["usage"][f] for f in BUDGET_FIELDS}
    assert mine["trajectory"]["actions"] == theirs["trajectory"]["actions"]
    for label, score in mine["trajectory"]["scores"].items():
        assert score["steps"] == pytest.approx(theirs["trajectory"]["scores"][label]["steps"], abs=shipped_score_tol(tokens=8))


def test_concurrency_1_and_8_play_the_same_episodes(tmp_path):
    cfg = parse_config({**config(env="maze", limit=6, episode_seed=0),
                        "arms": [{"name": "beam-pa", "controller": "beam", "kwargs": {"width": 2, "expand": 2},
                                  "scorer": "pa", "budget": {"tokens": 300}},
                                 *config()["arms"]]})
    one = run_experiment(cfg, tmp_path / "one", concurrency=1, progress=False)
    eight = run_experiment(cfg, tmp_path / "eight", concurrency=8, progress=False)
    assert one["ran"] == eight["ran"] == 18 and one["errors"] == eight["errors"] == 0
    a, b = rows(tmp_path / "one"), rows(tmp_path / "eight")
    assert set(a) == set(b)
    for key in a:
        assert_same_episode(b[key], a[key])
    order = [json.loads(line)["key"] for line in (tmp_path / "one" / "episodes.jsonl").read_text().splitlines()]
    assert order == list(a)  # concurrency 1 writes in run order; 8 in finishing order (any)


def test_raising_hanging_and_malformed_envs_end_their_episodes_as_error_rows(tmp_path, faulty_env, capsys):
    clean_cfg = parse_config(config(env="faulty_maze", limit=10))
    faults = {"2": "raise", "5": "hang", "7": "malformed"}
    faulty_cfg = parse_config(config(env="faulty_maze", limit=10, kwargs={"faults": faults}))
    run_experiment(clean_cfg, tmp_path / "clean", concurrency=4, progress=False)
    summary = run_experiment(faulty_cfg, tmp_path / "faulty", concurrency=4, progress=False)
    assert summary["ran"] == 20 and summary["errors"] == 6 and summary["total"] == 14
    clean, faulty = rows(tmp_path / "clean"), rows(tmp_path / "faulty")
    tasks = {t.kwargs["fault"]: t.id for t in list_tasks("faulty_maze", limit=10, faults=faults) if t.kwargs["fault"]}
    kinds = {tasks["raise"]: ("raised", "RuntimeError: the simulator crashed"), tasks["hang"]: ("timeout", "no answer"),
             tasks["malformed"]: ("malformed", "observation.text is int")}
    for key, row in faulty.items():
        task = row["task"]["id"]
        if task in kinds:
            kind, text = kinds[task]
            assert row["error"]["kind"] == kind and text in row["error"]["message"], row["error"]
            assert row["error"]["call"] == "step" and row["error"]["step"] == 2
            assert row["trajectory"] is None and row["success"] is False
        else:
            assert row["error"] is None
            assert_same_episode(row, clean[key])
    # the report leaves the error rows out and says how to retry them
    assert cli.main(["report", str(tmp_path / "faulty"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["episodes"] == 14 and report["run"]["env_errors"] == 6
    # a resume reruns nothing; --retry-errors reruns exactly the six error rows
    again = run_experiment(faulty_cfg, tmp_path / "faulty", resume=True, progress=False)
    assert again["ran"] == 0
    retry = run_experiment(faulty_cfg, tmp_path / "faulty", resume=True, retry_errors=True, progress=False)
    assert retry["ran"] == 6 and retry["errors"] == 6  # the envs are still broken


def test_retry_errors_needs_resume(tmp_path, capsys):
    smoke = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "smoke-maze.yaml"
    assert cli.main(["run", str(smoke), "--out", str(tmp_path / "r"), "--retry-errors"]) == 2
    assert "add --resume" in capsys.readouterr().err


def test_concurrency_is_validated_and_not_hashed():
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "smoke-maze.yaml").read_text())
    with pytest.raises(Exception, match="concurrency must be 'auto' or an int >= 1"):
        parse_config({**base, "concurrency": 0})
    assert parse_config({**base, "concurrency": 3}).config_hash() == parse_config(base).config_hash()
    assert parse_config({**base, "env_timeout_s": 5}).config_hash() == parse_config(base).config_hash()
