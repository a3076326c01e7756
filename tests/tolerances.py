"""The suite's float tolerances, derived in one place.

- A model forward compared with another correct computation of it (cached vs plain forward,
  batched vs alone, SGLang vs transformers, adapter vs merged weights, other kernels or thread
  counts): :func:`logprob_tol`, the rule of ``agents/engines/numerics.py`` (derivation there):
  2·ε·M·(2L + 1) for an L-layer model whose compared rows have magnitude M (their largest
  |logit| or |logsumexp|). float32 ε ≈ 1.19e-7; the error grows with M and with the number of
  rounded stages (two residual branches per layer, attention and MLP, plus the head and
  log-softmax), and the reduction order changes with the CPU's SIMD width, the kernel path and
  the thread count. Measured here: at most 0.32 of the rule (2-layer test models) and 0.06
  (SmolLM2, 30 layers), over AVX-512/AVX2/scalar kernels at 1 and 2 threads.
- Float arithmetic that is not a model forward (a loss or a KL over a few small tensors):
  :func:`float_tol`, the same rule with the number of chained operations as the depth.
- Exact math, the same float64 operations in another order (pure Python or numpy: metrics,
  aggregations, the maze solver's identities): :data:`EXACT`. A handful of float64 operations on
  numbers of size ≤ 10 round to ≤ n·2⁻⁵³·10 ≈ 1e-14, so 1e-12 fails on any real mistake.

Sampling tests (frequencies, total variation) state their own statistical tolerance; optimiser
tests (a solver's convergence tolerance) say which tolerance they use.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ttsearch.agents.engines.numerics import (
    forward_depth,
    logprob_tolerance,
    rounding_tolerance,
    row_magnitude,
)

EXACT = 1e-12


def logprob_tol(dtype: Any, magnitude: float, depth: int) -> float:
    """Tolerance for log-probs (or logits) of a ``depth``-layer model, rows of size ``magnitude``."""
    return logprob_tolerance(dtype, magnitude, depth)


def model_tol(model: Any, logits: Any, dtype: Any = "float32") -> float:
    """:func:`logprob_tol` for ``model``'s forward whose compared rows are ``logits``."""
    return logprob_tolerance(dtype, row_magnitude(logits), forward_depth(model))


def float_tol(dtype: Any, magnitude: float, ops: int) -> float:
    """Tolerance for ``ops`` chained float operations on numbers of size ``magnitude``."""
    return rounding_tolerance(dtype, magnitude, ops)


@functools.cache
def folder_tol(model_dir: str | Path, text: str = "") -> float:
    """:func:`logprob_tol` for the model saved in ``model_dir``, its rows measured on ``text``
    (a representative prompt; the folder's own tokenizer; empty: the first task of the maze)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not text:
        from ttsearch.envs.maze.env import maze_tasks

        text = next(maze_tasks()).make().reset().text
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    ids = AutoTokenizer.from_pretrained(str(model_dir))(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0]
    # logits grow along a prompt and near a trained model's certain moves: half again as large
    return model_tol(model, logits * 1.5)


def pair_score_tol(pair_dir: str | Path, *, tokens: int, beta: float = 1.0) -> float:
    """How far two correct computations of a score over a model pair may differ: ``tokens``
    log-prob terms of each model (a step's token sum, or a mean of such), times β."""
    pair_dir = Path(pair_dir)
    return beta * tokens * (folder_tol(pair_dir / "policy") + folder_tol(pair_dir / "reference"))


def shipped_score_tol(name: str = "maze", *, tokens: int = 16) -> float:
    """:func:`pair_score_tol` for a shipped pair (β ≤ 1 in every shipped config)."""
    from ttsearch.agents.checkpoints.shipped import default_pair_dir

    return pair_score_tol(default_pair_dir(name), tokens=tokens)
