"""``ttsearch run --ray``: a local Ray cluster (2 CPUs) plays the episodes, this process writes
every row; the rows equal the in-process run's (float rounding aside)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttsearch.benchmarks import cli

ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra (pip install 'ttsearch[ray]')")

SMOKE = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "smoke-maze.yaml"
BUDGET_FIELDS = ("generated_tokens", "scored_tokens", "model_calls", "env_steps", "proposals", "candidates")


def rows(out: Path) -> dict[str, dict]:
    return {row["key"]: row for row in map(json.loads, (out / "episodes.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_ray_actors_play_the_same_episodes_and_one_writer_keeps_the_jsonl(tmp_path, capsys):
    assert cli.main(["run", str(SMOKE), "--out", str(tmp_path / "local"), "--concurrency", "1", "--quiet"]) == 0
    assert cli.main(["run", str(SMOKE), "--out", str(tmp_path / "ray"), "--ray", "--concurrency", "2",
                     "--limit", "2", "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["ran"] == 8 and not ray.is_initialized()  # the run's own cluster is shut down
    # a resume on Ray runs exactly the rest
    assert cli.main(["run", str(SMOKE), "--out", str(tmp_path / "ray"), "--ray", "--resume", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ran"] == 4
    local, remote = rows(tmp_path / "local"), rows(tmp_path / "ray")
    lines = (tmp_path / "ray" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == len(remote) == len(local) == 12
    for key, row in remote.items():
        ref = local[key]
        for name in ("success", "reward", "n_steps", "stop_reason", "chosen", "tree_path"):
            assert row[name] == ref[name], (key, name)
        assert {f: row["usage"][f] for f in BUDGET_FIELDS} == {f: ref["usage"][f] for f in BUDGET_FIELDS}
        for mine, theirs in zip([row["trajectory"], *(row["rollouts"] or [])],
                                [ref["trajectory"], *(ref["rollouts"] or [])], strict=True):
            assert mine["actions"] == theirs["actions"]
            for label, score in mine["scores"].items():
                assert score["steps"] == pytest.approx(theirs["scores"][label]["steps"], abs=1e-5)
