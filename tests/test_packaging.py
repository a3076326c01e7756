"""Packaging: one import namespace, nothing named search/agents/envs/... at the top of site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_ttsearch_namespace_and_the_default_pair(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("ttsearch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"ttsearch", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for package in ("envs", "agents", "scorers", "search", "benchmarks"):
        assert f"ttsearch/{package}/__init__.py" in names
    assert "ttsearch/agents/checkpoints/pairs/maze/policy/config.json" in names
    assert "ttsearch/agents/checkpoints/pairs/maze/reference/model.safetensors" in names
    assert "ttsearch/agents/checkpoints/pairs/maze/rm/model.safetensors" in names  # the task reward model
    assert "ttsearch/agents/checkpoints/pairs/smollm2-chain-sum/policy/adapter_model.safetensors" in names  # real LoRA
    assert "ttsearch/benchmarks/configs/paper-maze.yaml" in names
    assert "ttsearch/__main__.py" in names and "ttsearch/__init__.py" not in names  # python -m ttsearch; still a namespace
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ttsearch = ttsearch.benchmarks.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
