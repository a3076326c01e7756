"""Shipped checkpoint pairs (package data) and where to find them.

    from ttsearch.agents.pairs import default_pair_dir
    pair_dir = default_pair_dir("maze")      # .../ttsearch/agents/pairs/maze/{reference,policy}

The maze pair was trained by ``ttsearch pair train --env maze`` (agents/maze_recipe.py); its
``ttsearch_pair.json`` records the recipe, β and the measured training statistics.
"""

from __future__ import annotations

from pathlib import Path

from ttsearch.envs.errors import BackendError, unknown_choice

PAIRS_ROOT = Path(__file__).resolve().parent / "pairs"
SHIPPED_PAIRS = ("maze",)


def default_pair_dir(name: str = "maze") -> Path:
    """The folder of a pair shipped with the package (no network needed)."""
    if name not in SHIPPED_PAIRS:
        raise BackendError(unknown_choice("shipped pair", name, SHIPPED_PAIRS) + "; or pass a folder made by `ttsearch pair train`")
    path = PAIRS_ROOT / name
    if not (path / "policy" / "config.json").exists():
        raise BackendError(f"the shipped {name!r} pair is missing at {path}; reinstall ttsearch or train one with "
                           f"`ttsearch pair train --env {name} --out DIR`")
    return path
