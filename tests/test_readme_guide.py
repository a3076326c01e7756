"""The custom-environment guides run exactly as written: the README's and docs/custom_envs.md's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_block(path: Path, marker: str, tmp_path: Path) -> tuple[str, list[str]]:
    text = path.read_text()
    block = re.search(rf"<!-- {marker}:start -->\s*```python\n(.*?)```\s*<!-- {marker}:end -->", text, re.S)
    assert block, f"{path.name} lost its {marker} markers"
    code = block.group(1)
    script = tmp_path / f"{marker}.py"
    script.write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return code, done.stdout.strip().splitlines()


def _is_stop_reason(text: str) -> bool:
    return text in {"done", "max_steps", "exhausted"} or text.startswith(("budget:", "early_stop:"))


def test_custom_env_guide_runs_as_written(tmp_path):
    code, lines = _run_block(ROOT / "README.md", "guide", tmp_path)
    assert len([line for line in code.splitlines() if line.strip()]) < 30  # the guide's promise
    assert lines[0] == "True"  # check_env passed
    success, stop_reason, tokens, actions = lines[-1].split(" ", 3)
    # the guide says the search solves the corridor (20 of 20 seeds here): it must, as printed
    assert success == "True" and stop_reason == "done", lines[-1]
    assert 0 < int(tokens) <= 3000 and actions.startswith("(") and "'east'" in actions
    shown = re.search(r"It prints `True`, then `(True done \d+) \(", (ROOT / "README.md").read_text())
    assert shown, "the README no longer shows the guide's output"


def test_docs_custom_envs_guide_runs_as_written(tmp_path):
    _, lines = _run_block(ROOT / "docs" / "custom_envs.md", "custom-envs", tmp_path)
    assert lines[0] == "True"  # check_env passed, the snapshot round-trip included
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["windy-test-0", "windy-test-1"]  # the registered task lister
    for _, success, stop_reason, tokens in rows:
        assert success in {"True", "False"} and _is_stop_reason(stop_reason) and 0 < int(tokens) <= 2000
