"""How far two correct float computations of the same model may disagree: the one tolerance rule.

    tol = logprob_tolerance("float32", magnitude=row_magnitude(logits), layers=forward_depth(model))

Two correct computations of a transformer's log-probs (the cached engine vs a plain full
forward, SGLang vs transformers, a batch vs one row alone, base + LoRA adapter vs merged weights,
one CPU's kernels or thread count vs another's) do the same float operations in another order:
other GEMM blocking, split reductions, SIMD widths (``ATEN_CPU_CAPABILITY``), fused kernels. They
agree only up to rounding, and the rule bounds that rounding:

    tol = 2 · ε · M · (2L + 1)

- ε is the dtype's machine epsilon (float32: 2⁻²³ ≈ 1.19e-7), the relative rounding of one
  operation's result.
- M is the magnitude the rounding is relative to: the largest |logit| or |logsumexp| of the
  vocabulary rows compared (:func:`row_magnitude`). A token's log-prob is ``z_a − logsumexp(z)``:
  its error follows the size of the logits (and of their logsumexp over the whole vocabulary),
  not the size of the log-prob itself, which is near 0 for a likely token.
- 2L + 1 counts the rounded stages between the input and the log-probs: each of the L layers
  adds two branches to the residual stream (attention, then the MLP), each a chain of
  reductions whose result is rounded relative to the stream's size (RMSNorm rescales before
  every branch, so errors stay relative to M instead of compounding), and the LM head with
  the log-softmax is one more. Linear growth in the number of stages is the worst case (all
  errors of one sign); independent errors would grow like its square root.
- 2: each side of the comparison carries its own rounding.

Measured on this project's CPU (AVX-512, AVX2 and scalar kernels, 1 and 2 threads), as the
largest |difference| over the rule's tolerance: SmolLM2-135M-Instruct (30 layers, M = 39), the
cached engine against a plain full forward, 3.4e-5 = 0.06 of the rule; the 2-layer test model
of ``tests/test_transformers_backend.py`` (M = 6.3), sampled and scored log-probs against a
plain forward with eager attention, 2.4e-6 = 0.32 of the rule.

Where the math is exact (float64 of the same few operations, pure Python/numpy) tests compare
at 1e-12 instead; statistical tests state their own sampling tolerance.
"""

from __future__ import annotations

from typing import Any

EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "bfloat16": 2.0**-7, "float16": 2.0**-10}
"""Machine epsilon per dtype name (the spacing of floats just above 1)."""


def machine_epsilon(dtype: Any) -> float:
    """ε of a dtype given as a name, a torch dtype or a numpy dtype (no torch import needed)."""
    name = str(dtype).removeprefix("torch.")
    if name not in EPS:
        raise ValueError(f"no machine epsilon known for dtype {dtype!r}; one of {sorted(EPS)}")
    return EPS[name]


def rounding_tolerance(dtype: Any, magnitude: float, stages: int) -> float:
    """2·ε·max(M, 1)·stages: two computations of ``stages`` sequential accumulations of numbers
    of size ``magnitude``, done in another order (the rule above, for any float computation)."""
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    return 2.0 * machine_epsilon(dtype) * max(float(magnitude), 1.0) * stages


def logprob_tolerance(dtype: Any, magnitude: float, layers: int) -> float:
    """The tolerance for log-probs of a ``layers``-layer model whose compared vocabulary rows
    have magnitude ``magnitude`` (:func:`row_magnitude`): 2·ε·M·(2L + 1)."""
    return rounding_tolerance(dtype, magnitude, 2 * layers + 1)


def row_magnitude(logits: Any) -> float:
    """M for :func:`logprob_tolerance`: max(|logit|, |logsumexp|) over the rows of a torch tensor
    of logits (last axis the vocabulary). Pass the rows that are compared, or a superset."""
    logits = logits.detach().double()
    return float(max(logits.abs().max(), logits.logsumexp(-1).abs().max()))


def forward_depth(model_or_config: Any) -> int:
    """L: the number of transformer layers of a model (or its config)."""
    config = getattr(model_or_config, "config", model_or_config)
    text = getattr(config, "text_config", None) or config
    return int(text.num_hidden_layers)
