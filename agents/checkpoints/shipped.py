"""Shipped checkpoint pairs (package data) and where to find them.

    from ttsearch.agents.checkpoints.shipped import default_pair_dir
    pair_dir = default_pair_dir("maze")      # .../ttsearch/agents/checkpoints/pairs/maze/{reference,policy}

- ``maze``: trained by ``ttsearch pair train --env maze`` (training/maze_recipe.py), both models
  shipped (1.1 MB); its ``ttsearch_pair.json`` records the recipe, β and training statistics.
- ``smollm2-chain-sum``: a real pair. The policy is a 3.7 MB LoRA adapter trained by
  ``ttsearch pair grpo`` (training/grpo_recipe.py) on reasoning-gym chain_sum; the reference is
  SmolLM2-135M-Instruct itself, named ``import:smollm2`` (run ``ttsearch pair import-gguf`` once).
- ``smollm2-maze``: a real pair on a multi-turn task with exact truth. The policy is a LoRA
  adapter trained by ``ttsearch pair grpo --preset maze`` (KL-regularised policy gradient on whole
  one-token turns of 3x3 slippery mazes, β in the manifest) over the same ``import:smollm2``.
"""

from __future__ import annotations

from pathlib import Path

from ttsearch.envs.errors import BackendError, unknown_choice

PAIRS_ROOT = Path(__file__).resolve().parent / "pairs"
SHIPPED_PAIRS = ("maze", "smollm2-chain-sum", "smollm2-maze")
DEFAULT_PAIR_PREFIX = "default:"
"""``default:NAME`` names a shipped pair wherever a pair folder is asked for."""


def default_pair_dir(name: str = "maze") -> Path:
    """The folder of a pair shipped with the package (no network needed)."""
    if name not in SHIPPED_PAIRS:
        raise BackendError(unknown_choice("shipped pair", name, SHIPPED_PAIRS) + "; or pass a folder made by `ttsearch pair train`")
    path = PAIRS_ROOT / name
    policy = path / "policy"
    if not (policy / "config.json").exists() and not (policy / "adapter_config.json").exists():
        raise BackendError(f"the shipped {name!r} pair is missing at {path}; reinstall ttsearch or train one with "
                           "`ttsearch pair train` / `ttsearch pair grpo`")
    return path


def resolve_pair_dir(spec: str | Path) -> Path:
    """A pair folder from ``default:NAME`` (a shipped pair) or a path."""
    spec = str(spec)
    if spec.startswith(DEFAULT_PAIR_PREFIX):
        return default_pair_dir(spec[len(DEFAULT_PAIR_PREFIX):])
    return Path(spec).resolve()
