"""Issue 13: a user's environment, living in its own folder, first-class on the command line.

A 5×5 key-and-door env is written (from the README's guide) into a temporary folder outside
the project and reaches `ttsearch check-env`, `ttsearch run` and `ttsearch sweep` three ways:
by ``--import`` / ``imports:``, as a ``module:Class`` spec from its folder, and through a
``ttsearch.envs`` entry point of a tiny installed distribution (a ``.dist-info`` folder on
PYTHONPATH). Every case the issue lists is reproduced through the real console script (or the
CLI's ``main`` where a subprocess adds nothing) and checked against what the issue asked for.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from ttsearch.benchmarks import cli
from ttsearch.benchmarks.run.config import parse_config
from ttsearch.envs import (
    REGISTRY,
    check_observation,
    check_step_result,
    env_names,
    list_tasks,
    make,
)
from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError, EnvError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TTSEARCH = BIN / "ttsearch"

KEYDOOR = '''
"""A 5x5 room: walk to the key, pick it up, walk to the door, open it (a user's env)."""
import time

from ttsearch.envs import EnvError, Env, Observation, StepResult, Task, register

MOVES = {"north": (-1, 0), "south": (1, 0), "east": (0, 1), "west": (0, -1)}
ACTIONS = (*MOVES, "pick up key", "open door")


class KeyDoor(Env):
    deterministic = True
    system_prompt = "Find the key, then open the door. Answer one action."
    max_steps = 12

    def __init__(self, size=5, layout=0, fault=None, delay=0.0):
        if size < 3:
            raise ValueError(f"size must be >= 3, got {size}")
        self.size, self.fault, self.delay = size, fault, delay
        self.door = (size - 1, size - 1)
        cells = [(r, c) for r in range(size) for c in range(size) if (r, c) not in {(0, 0), self.door}]
        self.key = cells[layout % len(cells)]
        self.done = True

    def _obs(self):
        if self.fault == "bad_obs":
            return Observation(42, ACTIONS)
        key = "in hand" if self.has_key else f"at {self.key}"
        return Observation(f"you are at {self.pos}; key {key}; door at {self.door}", ACTIONS)

    def reset(self, *, seed=None):
        self.pos, self.has_key, self.t, self.done = (0, 0), False, 0, False
        return self._obs()

    def step(self, action):
        if self.delay:
            time.sleep(self.delay)
        if self.done:
            raise EnvError("the episode is over; call reset")
        if self.fault == "hang" and self.t >= 2:
            time.sleep(3600)
        self.t += 1
        reward, invalid, a = 0.0, False, action.strip().lower()
        if a in MOVES:
            r, c = self.pos[0] + MOVES[a][0], self.pos[1] + MOVES[a][1]
            if 0 <= r < self.size and 0 <= c < self.size:
                self.pos = (r, c)
        elif a == "pick up key" and self.pos == self.key:
            self.has_key = True
        elif a == "open door" and self.pos == self.door and self.has_key:
            reward = 1.0
        else:
            invalid = True
        terminated = reward > 0
        truncated = not terminated and self.t >= self.max_steps
        self.done = terminated or truncated
        return StepResult(self._obs(), reward, terminated, truncated, {"invalid_action": invalid})

    def gold_actions(self):
        (kr, kc), (dr, dc) = self.key, self.door
        return ["south"] * kr + ["east"] * kc + ["pick up key"] + ["south"] * (dr - kr) + ["east"] * (dc - kc) + ["open door"]


def keydoor_tasks(*, split, size=5, fault=None, delay=0.0):
    base = 0 if split == "train" else 1000
    for i in range(50):
        yield Task(env="keydoor", id=f"kd-{split}-{i}", seed=i, split=split,
                   kwargs={"size": size, "layout": base + i, "fault": fault, "delay": delay})


def register_envs():
    register("keydoor", KeyDoor, tasks="keydoor_env:keydoor_tasks", description="5x5 key and door")


register_envs()
'''

ENTRY_POINTS = """\
[ttsearch.envs]
keydoor = keydoor_env:register_envs
kdclass = keydoor_env:KeyDoor
broken_ep = no_such_plugin_module_xyz:register
"""

ARMS = [{"name": "greedy", "controller": "greedy"},
        {"name": "beam", "controller": "beam", "kwargs": {"width": 2, "expand": 2}, "scorer": "pa",
         "budget": {"tokens": 120}}]
SCORERS = [{"name": "progress_advantage", "label": "pa"}, {"name": "policy_logprob"}]


def run_config(tasks: dict, *, imports=("keydoor_env",), arms=ARMS, pair="default:maze", **extra) -> dict:
    return {"name": "keydoor", **({"imports": list(imports)} if imports else {}), "pair": pair, "tasks": tasks,
            "sampling": {"max_new_tokens": 4}, "arms": arms, "scorers": SCORERS, **extra}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """The user's own folder (not in the project): the env module and run configs."""
    folder = tmp_path_factory.mktemp("user")
    assert ROOT not in folder.parents
    (folder / "keydoor_env.py").write_text(KEYDOOR)
    (folder / "keydoor.yaml").write_text(yaml.safe_dump(run_config({"env": "keydoor", "limit": 2})))
    return folder


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A tiny installed distribution: keydoor_env.py + a dist-info with ttsearch.envs entry points."""
    site = tmp_path_factory.mktemp("site")
    (site / "keydoor_env.py").write_text(KEYDOOR)
    info = site / "keydoor_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: keydoor-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def ttsearch(*args: str, cwd: Path, pythonpath: Path | None = None, module: bool = False,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed console script (or ``python -m ttsearch``), run like a user would."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, "-m", "ttsearch"] if module else [str(TTSEARCH)]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ttsearch: error: "), done.stderr
    return lines[0]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


@pytest.fixture
def clean_registry(monkeypatch):
    """In-process tests register envs, import the user's module and (through ``cli.main``) put
    the working directory on sys.path: undo all three afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)
    sys.modules.pop("keydoor_env", None)


pytestmark = pytest.mark.skipif(not TTSEARCH.exists(), reason=f"no console script at {TTSEARCH}")


# --- check-env: module:Class from its folder, --import, entry points, python -m ---------------

def test_check_env_module_class_from_the_users_folder(user_dir, tmp_path):
    done = ttsearch("check-env", "keydoor_env:KeyDoor", "--json", cwd=user_dir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["gold_success"] is True and report["task"] is None
    # elsewhere: one line that names the module and the fix, no traceback
    line = one_line_error(ttsearch("check-env", "keydoor_env:KeyDoor", cwd=tmp_path))
    assert "'keydoor_env'" in line and "from the folder that holds keydoor_env.py" in line
    # python -m ttsearch is the same command line
    done = ttsearch("check-env", "keydoor_env:KeyDoor", "--json", cwd=user_dir, module=True)
    assert done.returncode == 0 and json.loads(done.stdout)["passed"], done.stderr


def test_check_env_by_import_checks_the_first_listed_task(user_dir):
    for args in (["check-env", "keydoor", "--import", "keydoor_env", "--json"],
                 ["--import", "keydoor_env", "check-env", "keydoor", "--json"]):  # before the command too
        done = ttsearch(*args, cwd=user_dir)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["passed"] and report["task"]["id"] == "kd-test-0"
        assert report["task"]["kwargs"]["layout"] == 1000 and report["env"] == "keydoor"
    line = one_line_error(ttsearch("check-env", "keydoor", cwd=user_dir))  # without --import
    assert "unknown environment 'keydoor'" in line and "--import MODULE" in line
    line = one_line_error(ttsearch("check-env", "keydoor", "--import", "./keydoor_env.py", cwd=user_dir))
    assert "is a file path" in line and "'keydoor_env'" in line


def test_check_env_through_entry_points(plugin_site, tmp_path):
    done = ttsearch("check-env", "keydoor", "--json", cwd=tmp_path, pythonpath=plugin_site)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["task"]["id"] == "kd-test-0"
    # an entry point naming an Env subclass: registered with no task list (built with --kwargs)
    done = ttsearch("check-env", "kdclass", "--kwargs", '{"layout": 3}', "--json", cwd=tmp_path,
                    pythonpath=plugin_site)
    assert done.returncode == 0 and json.loads(done.stdout)["passed"], done.stderr
    line = one_line_error(ttsearch("check-env", "broken_ep", cwd=tmp_path, pythonpath=plugin_site))
    assert "no_such_plugin_module_xyz" in line and "entry point broken_ep" in line


def test_check_env_constructor_error_is_one_line_exit_2(user_dir):
    line = one_line_error(ttsearch("check-env", "keydoor", "--import", "keydoor_env", "--kwargs", '{"size": 2}',
                                   cwd=user_dir))
    assert "ValueError" in line and "size must be >= 3" in line and "'keydoor'" in line


def test_check_env_flags_slow_steps(user_dir):
    done = ttsearch("check-env", "keydoor_env:KeyDoor", "--kwargs", '{"delay": 0.03}', "--slow", "0.02",
                    "--steps", "3", "--no-gold", "--json", cwd=user_dir)
    assert done.returncode == 0, done.stderr  # slow is a warning, not a failure
    report = json.loads(done.stdout)
    assert report["passed"] and report["slow"] is True and report["slow_threshold_s"] == 0.02
    step = report["timings"]["step"]
    assert step["slow_calls"] == step["calls"] > 0 and step["max_s"] >= 0.03
    speed = next(c for c in report["checks"] if c["name"] == "speed")
    assert not speed["passed"] and not speed["required"] and "SLOW: step" in speed["detail"]
    table = ttsearch("check-env", "keydoor_env:KeyDoor", "--kwargs", '{"delay": 0.03}', "--slow", "0.02",
                     "--steps", "3", "--no-gold", cwd=user_dir)
    assert table.returncode == 0 and "SLOW env calls" in table.stdout
    fast = json.loads(ttsearch("check-env", "keydoor_env:KeyDoor", "--json", cwd=user_dir).stdout)
    assert fast["slow"] is False and fast["timings"]["step"]["max_s"] < 1.0


def test_check_env_gives_up_on_a_hanging_step(user_dir):
    started = time.perf_counter()
    done = ttsearch("check-env", "keydoor_env:KeyDoor", "--kwargs", '{"fault": "hang"}', "--timeout", "1",
                    "--json", cwd=user_dir, timeout=120)
    assert time.perf_counter() - started < 60  # not the hour the step sleeps
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    hung = [c for c in report["checks"] if "did not return within 1 s" in c["detail"]]
    assert len(hung) == 1 and not report["passed"] and report["checks"][-1]["name"] == "speed"


def test_malformed_observation_is_named_at_the_boundary(user_dir, clean_registry, monkeypatch):
    done = ttsearch("check-env", "keydoor_env:KeyDoor", "--kwargs", '{"fault": "bad_obs"}', "--json", cwd=user_dir)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    reset = json.loads(done.stdout)["checks"][0]
    assert reset["name"] == "reset" and not reset["passed"] and "Observation.text is int 42, not str" in reset["detail"]
    # the function ttsearch run calls at its env guard: one line naming env, task and field
    monkeypatch.syspath_prepend(str(user_dir))
    env = make("keydoor_env:KeyDoor", fault="bad_obs")
    with pytest.raises(EnvError) as err:
        check_observation(env.reset(seed=0), env="keydoor", task="kd-test-0", where="reset(seed=0)")
    message = str(err.value)
    assert "\n" not in message and message.startswith("env 'keydoor' task 'kd-test-0' reset(seed=0): ")
    assert "Observation.text is int" in message
    good = make("keydoor_env:KeyDoor")
    good.reset(seed=0)
    assert check_step_result(good.step("east"), env="keydoor", task="t", where="step 1").reward == 0.0
    for bad, field in [(StepResult(Observation("x"), 1, True, False), "StepResult.reward"),
                       (StepResult(Observation("x"), 0.0, 1, False), "StepResult.terminated"),
                       (StepResult(Observation("x", ["a"]), 0.0, False, False), "admissible_actions"),
                       ("text", "not a StepResult")]:
        with pytest.raises(EnvError, match=field):
            check_step_result(bad, env="keydoor", task="t", where="step 2 ('north')")


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import textworld"], capture_output=True).returncode,
                    reason="textworld not installed (make benchmarks)")
def test_check_env_textworld_without_kwargs_uses_its_first_task(tmp_path):
    done = ttsearch("check-env", "textworld", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["passed"] and report["task"]["id"].startswith("tw-coin_collector")


# --- run, report, sweep: imports:, --import, module:Class + items, entry points -------------

@pytest.fixture(scope="module")
def keydoor_run(user_dir) -> Path:
    out = user_dir / "runs" / "kd"
    done = ttsearch("run", "keydoor.yaml", "--out", str(out), "--quiet", cwd=user_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_run_reaches_the_user_env_through_imports(keydoor_run):
    got = rows(keydoor_run)
    assert sorted(r["key"] for r in got) == ["beam|kd-test-0|0", "beam|kd-test-1|0",
                                             "greedy|kd-test-0|0", "greedy|kd-test-1|0"]
    for row in got:
        assert row["task"]["env"] == "keydoor" and row["task"]["info"]["difficulty"] is None
        assert row["trajectory"]["truth"] == {"decisive_step": None, "decisive_regret": None}
        assert row["n_steps"] >= 1 and row["usage"]["tokens"] > 0
    manifest = json.loads((keydoor_run / "run.json").read_text())
    assert manifest["config"]["imports"] == ["keydoor_env"]


def test_report_of_a_run_without_truth_or_difficulty(keydoor_run, user_dir):
    done = ttsearch("report", str(keydoor_run), "--json", cwd=user_dir)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # roc and diagnostics depend on the run's outcomes (both successes and failures); the rest
    # needs what this env does not give (rollouts, truth, difficulty) or this config does not ask
    assert summary["available"] == {"best_of_n": False, "fa": False, "difficulty": False,
                                    "roc": summary["available"]["roc"],
                                    "diagnostics": summary["available"]["diagnostics"],
                                    "selection": False, "tuned": False, "alpha_sweep": False}
    assert set(summary["budget"]["difficulties"]) == {"all"}
    assert {"attribution", "best_of_n"}.isdisjoint(summary["files"])
    markdown = (keydoor_run / "report" / "report.md").read_text()
    assert "## Failure attribution" not in markdown and "difficulty: unknown" not in markdown
    assert "attribution='my_pkg.attribution'" in markdown  # how an env provides truth and difficulty
    assert "n/a | n/a | n/a" not in markdown.split("## Uncertainty")[0]
    # `ttsearch report DIR --json | head`: the reader goes away; no BrokenPipeError. `| true` closes
    # the pipe before anything is written (`head` may read a small output whole before it exits).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for reader in ("head -c 20", "true"):
        piped = subprocess.run(["bash", "-c", f"{TTSEARCH} report {keydoor_run} --json | {reader}; "
                                              "echo status=${PIPESTATUS[0]} >&2"],
                               cwd=user_dir, capture_output=True, text=True, timeout=120, env=env)
        assert "Error" not in piped.stderr and "Traceback" not in piped.stderr, piped.stderr
        assert piped.stderr.strip().splitlines()[-1] in ("status=0", "status=141")
    assert piped.stderr.strip() == "status=141"  # `| true`: the pipe was closed, and said so quietly


def test_run_module_class_with_inline_items(user_dir, tmp_path):
    config = run_config({"env": "keydoor_env:KeyDoor", "kwargs": {"size": 4},
                         "items": [{"id": "room-a", "seed": 0, "kwargs": {"layout": 2}},
                                   {"id": "room-b", "seed": 5}]}, imports=(), arms=ARMS[:1])
    (user_dir / "items.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "items"
    done = ttsearch("run", "items.yaml", "--out", str(out), "--quiet", cwd=user_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    got = {r["task"]["id"]: r for r in rows(out)}
    assert set(got) == {"room-a", "room-b"} and got["room-b"]["task"]["seed"] == 5
    assert "(3, 3)" in got["room-a"]["trajectory"]["steps"][0]["observation"]  # size 4: door at (3, 3)


def test_run_and_sweep_through_an_entry_point(plugin_site, tmp_path):
    config = tmp_path / "ep.yaml"
    config.write_text(yaml.safe_dump(run_config({"env": "keydoor", "limit": 1}, imports=(), arms=ARMS[:1])))
    done = ttsearch("run", str(config), "--out", str(tmp_path / "ep-run"), "--quiet", cwd=tmp_path,
                    pythonpath=plugin_site)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["key"] for r in rows(tmp_path / "ep-run")] == ["greedy|kd-test-0|0"]
    done = ttsearch("sweep", "--env", "keydoor", "--controller", "greedy", "--budgets", "30,60", "--episodes", "2",
                    "--out", str(tmp_path / "ep-sweep"), "--json", cwd=tmp_path, pythonpath=plugin_site)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["env"] == "keydoor" and summary["episodes"] == 2 and len(summary["points"]) == 2


@pytest.mark.slow
def test_sweep_any_env_resumes_and_never_duplicates(user_dir, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--config", "keydoor.yaml", "--controller", "greedy", "--budgets", "30,60", "--out", str(out)]
    done = ttsearch(*args, cwd=user_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if "success" in line and "±" in line]
    assert len(table) == 2 and "±" not in done.stderr  # the table once, on stdout
    points = (out / "points.jsonl").read_text()
    assert len(points.splitlines()) == 2 and (out / "sweep.json").exists()
    best = max(json.loads(line)["successes"] for line in points.splitlines())
    if best == 0:  # the maze pair cannot read this env: the sweep must say so, not recommend
        assert "no budget solved any of the 2 tasks" in done.stderr and "cheapest within 0.02: none" in done.stdout
    # a plain rerun is refused (nothing overwritten); --resume runs nothing new
    line = one_line_error(ttsearch(*args, cwd=user_dir))
    assert "pass --resume" in line and (out / "points.jsonl").read_text() == points
    again = ttsearch(*args, "--resume", cwd=user_dir)
    assert again.returncode == 0 and (out / "points.jsonl").read_text() == points
    assert again.stdout.splitlines()[:2] == done.stdout.splitlines()[:2]
    # other settings: refused too
    line = one_line_error(ttsearch(*args[:-2], "--budgets", "30,90", "--out", str(out), "--resume", cwd=user_dir))
    assert "other settings" in line
    # and --import / --env work without a config
    done = ttsearch("sweep", "--import", "keydoor_env", "--env", "keydoor", "--controller", "greedy",
                    "--budgets", "60", "--episodes", "1", "--out", str(tmp_path / "s2"), "--json", cwd=user_dir)
    assert done.returncode == 0 and json.loads(done.stdout)["episodes"] == 1, done.stderr[-2000:]


@pytest.mark.slow
def test_interrupt_says_resume_and_the_resume_finishes(user_dir, tmp_path):
    config = run_config({"env": "keydoor", "limit": 3, "kwargs": {"delay": 0.15}}, arms=ARMS[:1])
    (user_dir / "slow.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "slow"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([str(TTSEARCH), "run", "slow.yaml", "--out", str(out), "--quiet"], cwd=user_dir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not ((out / "episodes.jsonl").exists()
                                          and (out / "episodes.jsonl").read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "rerun the same command with --resume" in err
    finished = len(rows(out))
    assert 1 <= finished < 3
    assert "pass --resume" in one_line_error(ttsearch("run", "slow.yaml", "--out", str(out), cwd=user_dir))
    done = ttsearch("run", "slow.yaml", "--out", str(out), "--resume", "--quiet", cwd=user_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["ran"] == 3 - finished and len(rows(out)) == 3


# --- config validation before anything runs, through the CLI's main --------------------------

def test_missing_modules_fail_first_naming_module_and_fix(user_dir, plugin_site, tmp_path, capsys, monkeypatch,
                                                          clean_registry):
    empty_pair = tmp_path / "not-a-pair"  # exists, holds no weights: loading it would fail differently
    empty_pair.mkdir()
    monkeypatch.chdir(tmp_path)
    cases = [(run_config({"env": "keydoor", "limit": 1}, imports=("keydoor_envv",), pair=str(empty_pair)),
              ["imports:", "'keydoor_envv'", "from the folder that holds keydoor_envv.py"]),
             (run_config({"env": "keydoorr_env:KeyDoor", "items": [{"id": "a"}]}, imports=(), pair=str(empty_pair)),
              ["tasks.env", "'keydoorr_env'", "PYTHONPATH"]),
             (run_config({"env": "broken_ep", "limit": 1}, imports=(), pair=str(empty_pair)),
              ["tasks:", "no_such_plugin_module_xyz", "entry point broken_ep"])]
    monkeypatch.syspath_prepend(str(plugin_site))
    for config, needles in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config))
        assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "policy" not in err, err  # the pair was never loaded
        for needle in needles:
            assert needle in err, (needle, err)
        assert not (tmp_path / "out").exists()
    assert cli.main(["--import", "no_such_module_q", "envs"]) == 2
    assert "cannot import 'no_such_module_q'" in capsys.readouterr().err


def test_env_without_task_list_says_how_to_list_tasks(user_dir, capsys, tmp_path, monkeypatch, clean_registry):
    path = tmp_path / "nolist.yaml"
    path.write_text(yaml.safe_dump(run_config({"env": "keydoor_env:KeyDoor", "limit": 2}, imports=())))
    monkeypatch.chdir(user_dir)  # the module:Class spec imports from the working directory
    assert cli.main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has no task list" in err and "items" in err and "tasks='module:lister'" in err


def test_every_config_error_is_listed_unknown_fields_first(capsys, tmp_path, clean_registry):
    smoke = yaml.safe_load((ROOT / "benchmarks/configs/smoke-maze.yaml").read_text())
    typo = json.loads(json.dumps(smoke))
    typo["arms"][3] = {"name": "beam-pa", "contoller": "beam", "scorer": "pa"}
    with pytest.raises(ConfigError) as err:
        parse_config(typo, source="typo.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("typo.yaml: 2 errors: (1) arms[3]: unknown field 'contoller'")
    assert "valid fields here: name, controller, kwargs, scorer, budget" in message
    assert "(2) arms[3].controller: required field is missing" in message
    # the other arms' problems are listed in the same pass, not after the typo is fixed
    typo["arms"][2]["budget"] = {"tokens": 5}
    with pytest.raises(ConfigError) as err:
        parse_config(typo, source="typo.yaml")
    assert str(err.value).startswith("typo.yaml: 3 errors: (1) arms[3]: unknown field 'contoller'")
    assert "(3) arms[2] (step-bo2-pa): budget: impossible budget: tokens=5" in str(err.value)
    # an impossible budget is caught before the first episode, with every other problem
    impossible = json.loads(json.dumps(smoke))
    impossible["arms"][3]["budget"] = {"tokens": 3}
    impossible["arms"][2]["budget"] = {"model_calls": 1}
    impossible["applications"]["uq_fa_arms"] = ["bon9"]
    path = tmp_path / "impossible.yaml"
    path.write_text(yaml.safe_dump(impossible))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "3 errors" in line
    assert "arms[2] (step-bo2-pa): budget: impossible budget: model_calls=1" in line
    assert "arms[3] (beam-pa): budget: impossible budget: tokens=3 is smaller than one call" in line
    assert "raise it to at least 8" in line and "uq_fa_arms" in line  # 4 generated + 4 reference-scored
    assert not (tmp_path / "out").exists()
    # greedy scores nothing: the same budget is fine there (its smallest call has no reference pass)
    fine = json.loads(json.dumps(smoke))
    fine["arms"][0]["budget"] = {"tokens": 4}
    parse_config(fine)


# --- plugin path in process: entry-point forms, register, lister checks ---------------------

def test_entry_points_are_read_lazily_and_both_forms_work(plugin_site, monkeypatch, clean_registry):
    monkeypatch.syspath_prepend(str(plugin_site))
    assert "keydoor" not in REGISTRY and "keydoor_env" not in sys.modules  # nothing imported yet
    assert {"keydoor", "kdclass", "broken_ep"} <= set(env_names())
    assert "keydoor_env" not in sys.modules  # listing names reads metadata only
    tasks = list_tasks("keydoor", limit=3)
    assert [t.id for t in tasks] == ["kd-test-0", "kd-test-1", "kd-test-2"] and "keydoor" in REGISTRY
    assert make("kdclass", layout=4).gold_actions()[-1] == "open door"
    assert REGISTRY["kdclass"].factory == "keydoor_env:KeyDoor" and REGISTRY["kdclass"].tasks is None


def test_function_entry_point_must_register_its_name(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "quiet_plugin.py").write_text(textwrap.dedent("""
        from ttsearch.envs import register
        CALLS = []
        def register_envs():
            CALLS.append(1)
            register("quiet", "ttsearch.envs.maze.env:SlipperyMaze", tasks="ttsearch.envs.maze.env:maze_tasks")
        def forgets():
            pass
    """))
    info = tmp_path / "quiet_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: quiet-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ttsearch.envs]\nquiet = quiet_plugin:register_envs\n"
                                           "forgetful = quiet_plugin:forgets\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert list_tasks("quiet", limit=1)[0].env == "maze"
        assert sys.modules["quiet_plugin"].CALLS == [1]
        with pytest.raises(EnvError, match="ran but registered no environment 'forgetful'"):
            make("forgetful")
    finally:
        sys.modules.pop("quiet_plugin", None)


def test_register_is_idempotent_and_listers_are_checked(clean_registry):
    from ttsearch.envs import register

    register("twice", "ttsearch.envs.maze.env:SlipperyMaze")
    register("twice", "ttsearch.envs.maze.env:SlipperyMaze")  # the same entry: a no-op
    with pytest.raises(EnvError, match="already registered"):
        register("twice", "ttsearch.envs.gym_wrapper:GymTextEnv")
    register("badlist", "ttsearch.envs.maze.env:SlipperyMaze", tasks=f"{__name__}:_bad_lister")
    with pytest.raises(EnvError, match="yielded a dict, not a ttsearch Task"):
        list_tasks("badlist")
    register("raising", "ttsearch.envs.maze.env:SlipperyMaze", tasks=f"{__name__}:_raising_lister")
    with pytest.raises(EnvError, match="raised OSError: no data"):
        list_tasks("raising")


def _bad_lister(*, split):
    yield {"id": "x"}


def _raising_lister(*, split):
    raise OSError("no data")


# --- one stderr formula, one colour per arm, run_sweep's file --------------------------------

def test_one_stderr_formula_everywhere(tmp_path):
    from ttsearch.benchmarks.report.budget_tuning import EpisodeOutcome, tune
    from ttsearch.benchmarks.report.tables import build_report, load_run
    from ttsearch.search import Budget
    from ttsearch.search.sweep import SweepPoint

    expected = math.sqrt((11 / 12) * (1 / 12) / 11)  # sample std (n − 1) over √n: 0.0833
    run = tmp_path / "run"
    run.mkdir()
    traj = {"success": True, "reward": 1.0, "n_steps": 1, "tokens": 1, "actions": ["a"], "steps": [],
            "scores": {}, "truth": {"decisive_step": None, "decisive_regret": None}}
    lines = [{"key": f"a|t{i}|0", "arm": "a", "success": i < 11, "usage": {"tokens": 10},
              "task": {"id": f"t{i}", "info": {"difficulty": None}},
              "trajectory": {**traj, "success": i < 11}, "rollouts": None} for i in range(12)]
    (run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = build_report(load_run(run)).summary
    assert summary["tts_arms"]["a"]["stderr"] == pytest.approx(expected, abs=1e-12)
    assert summary["budget"]["difficulties"]["all"]["arms"][0]["stderr"] == pytest.approx(expected, abs=1e-12)
    assert tune([EpisodeOutcome("x", "a", i < 11, 1) for i in range(12)]).best["x"].stderr == pytest.approx(expected)
    point = SweepPoint(Budget(tokens=1), 12, 11, 1.0, 1.0, 0.0, 1.0, 1.0, 0)
    assert point.stderr == pytest.approx(expected) and round(expected, 4) == 0.0833


def test_each_arm_keeps_its_colour_in_every_plot(tmp_path, monkeypatch):
    import matplotlib.figure

    from ttsearch.benchmarks.report.plots import write_plots
    from ttsearch.benchmarks.report.tables import build_report, load_run

    seen: dict[str, dict[str, tuple]] = {}

    def record(fig, path, *args, **kwargs):
        colours = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                line = handle.lines[0] if hasattr(handle, "lines") else handle
                colours[label.removesuffix(" (chosen)")] = tuple(line.get_color())
        seen[Path(path).stem] = colours

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    run = tmp_path / "run"
    run.mkdir()
    arms = [f"arm{i}" for i in range(5)]
    out = []
    for i, arm in enumerate(arms):  # tokens fall as the index grows: the budget plot sorts by tokens
        for t in range(4):
            success = (t + i) % 3 == 0
            out.append({"key": f"{arm}|t{t}|0", "arm": arm, "success": success, "usage": {"tokens": 100 - 10 * i},
                        "task": {"id": f"t{t}", "info": {"difficulty": "easy" if t < 2 else "hard"}},
                        "trajectory": {"success": success, "reward": float(success), "n_steps": 1, "steps": [],
                                       "scores": {}, "truth": {}}, "rollouts": None})
    (run / "run.json").write_text(json.dumps({"arms": [{"name": a} for a in arms], "scorers": []}))
    (run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    write_plots(build_report(load_run(run)), tmp_path / "plots")
    compute, budget = seen["success_vs_compute"], seen["budget_tuning"]
    assert set(compute) == set(arms) and set(budget) == set(arms)
    assert all(compute[a] == budget[a] for a in arms) and len(set(compute.values())) == 5


def test_run_sweep_file_is_created_and_never_duplicated(tmp_path):
    from ttsearch.scorers import make_scorer
    from ttsearch.search import Budget, make_controller
    from ttsearch.search.sweep import run_sweep
    from ttsearch.search.testing import Choice, FakeProposer

    class Coin(Env):
        deterministic = True

        def reset(self, *, seed=None):
            return Observation("pick", ("good", "bad"))

        def step(self, action):
            return StepResult(Observation("over"), float(action == "good"), True, False)

    proposer = FakeProposer(lambda state: [Choice("good", math.log(0.3), 1.0), Choice("bad", math.log(0.7), -1.0)])
    tasks = [Task("coin", f"c{i}", seed=i) for i in range(4)]
    out = tmp_path / "not" / "yet" / "points.jsonl"

    def sweep(budgets, controller="step_best_of_n"):
        return run_sweep(make_controller(controller, k=4) if controller == "step_best_of_n" else
                         make_controller(controller), tasks, proposer, make_scorer("progress_advantage"),
                         [Budget(generated_tokens=b) for b in budgets], env_factory=lambda task: Coin, out=out)

    first = sweep([4, 8])
    assert len(out.read_text().splitlines()) == 2
    again = sweep([4, 8, 16])  # a rerun with one more budget: the two are read back, one runs
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and [p.to_dict() for p in again[:2]] == [p.to_dict() for p in first]
    with out.open("a") as fh:
        fh.write('{"sweep": "cut by a cra')  # a crash mid-line
    sweep([4, 8, 16])
    assert out.read_text().splitlines() == lines
    sweep([4], controller="greedy")  # another sweep shares the file: appended, not confused
    assert len(out.read_text().splitlines()) == 4
