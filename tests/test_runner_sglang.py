"""``ttsearch run`` on SGLang servers: a server killed mid-run loses no finished work, and a
resumed run (on servers started by ``ttsearch serve``) completes with every episode exactly once.

Needs the runtime of ``make sglang-cpu`` (skipped without it unless TTSEARCH_REQUIRE_SGLANG=1).
The run launches its own policy and reference servers (about a minute each on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.sglang]  # skipped without the runtime: tests/conftest.py

CONFIG = {
    "name": "sglang-kill",
    "pair": "default:maze",
    "tasks": {"split": "test", "limit": 12, "episode_seed": 0},
    "arms": [{"name": "greedy", "controller": "greedy"},
             {"name": "step-bo2-pa", "controller": "step_best_of_n", "kwargs": {"k": 2}, "scorer": "pa"}],
    "scorers": [{"name": "progress_advantage", "label": "pa"}, {"name": "policy_logprob"}],
    "engine": {"kind": "sglang"},
}
EPISODES = CONFIG["tasks"]["limit"] * len(CONFIG["arms"])


def _run(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "ttsearch.benchmarks.cli", "run", str(config), "--out",
                             str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _rows(out: Path) -> list[dict]:
    path = out / "episodes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _server_pids(port: str) -> list[int]:
    listing = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in listing.splitlines()
            if "sglang.launch_server" in line and f"--port {port} " in line + " "]


def _ports(log: Path) -> list[str]:
    """Every port a server was launched on, from the launch lines in its log."""
    return re.findall(r"--port (\d+)", log.read_text())


def test_killed_server_keeps_finished_episodes_and_resume_completes(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    # one episode in flight: 24 episodes take seconds, so the run cannot finish between the
    # second row and the kill (with 16 in flight a fast pair finished all of them first)
    proc = _run(config, out, "--concurrency", "1")
    try:
        deadline = time.monotonic() + 400
        while len(_rows(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        assert len(_rows(out)) >= 2, "the run wrote no episode in time"
        (pid,) = _server_pids(_ports(out / "sglang" / "policy.log")[-1])
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert "rerun with --resume" in stderr and "policy" in stderr
    kept = _rows(out)  # every line is whole JSON: _rows would raise on a torn line
    keys = {row["key"] for row in kept}
    assert len(keys) == len(kept) >= 2 and len(kept) < EPISODES

    # Resume on fresh servers from `ttsearch serve`, given to the run by URL (not in the config hash).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    serve = subprocess.Popen([sys.executable, "-m", "ttsearch.benchmarks.cli", "serve", "--run-dir",
                              str(tmp_path / "served")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        urls = json.loads(serve.stdout.readline() or "null")
        assert urls is not None, serve.communicate(timeout=60)[1]
        config.write_text(yaml.safe_dump({**CONFIG, "engine": {"kind": "sglang", "policy_url": urls["policy_url"],
                                                               "reference_url": urls["reference_url"]}}))
        resumed = _run(config, out, "--resume")
        _, stderr = resumed.communicate(timeout=900)
        assert resumed.returncode == 0, stderr
        serve.send_signal(signal.SIGINT)  # Ctrl-C stops both servers
        assert serve.wait(timeout=120) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
    rows = _rows(out)
    assert len(rows) == EPISODES and len({row["key"] for row in rows}) == EPISODES
    assert [row for row in rows if row["key"] in keys] == kept  # finished work untouched
    for row in rows:  # both models' log-probs came through the servers: the scores exist
        assert set(row["trajectory"]["scores"]) == {"pa", "policy_logprob"}
    for log in (out / "sglang" / "policy.log", out / "sglang" / "reference.log",
                tmp_path / "served" / "policy.log", tmp_path / "served" / "reference.log"):
        assert all(not _server_pids(port) for port in _ports(log)), log  # every server was stopped
