"""Best-of-n re-ranking with the voting selection modes (``ttsearch.search.selection``).

    curve = selection_curve(tasks, "majority", ns=[1, 2, 4, 8])     # {n: (mean, stderr)}
    # tasks: [(scores, answers, success) per task, one entry per rollout]

For each task, the expected success of the rollout ``select`` picks from a uniformly random
size-n subset of its N rollouts: exact over all C(N, n) subsets when there are at most
``max_subsets`` of them, else the mean over ``max_subsets`` subsets drawn with a fixed seed
(reproducible). ``best`` has the closed form of ``metrics_tts.best_of_n``; the voting modes need
the subsets themselves. The mean and its stderr are over tasks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ttsearch.scorers.metrics import mean_and_stderr
from ttsearch.search.selection import select

MAX_SUBSETS = 2000


def _subsets(size: int, n: int, max_subsets: int, seed: int) -> list[tuple[int, ...]]:
    if math.comb(size, n) <= max_subsets:
        return list(itertools.combinations(range(size), n))
    rng = np.random.default_rng(seed)
    return [tuple(sorted(rng.choice(size, n, replace=False).tolist())) for _ in range(max_subsets)]


def expected_selection(scores: Sequence[float | None], answers: Sequence[str | None], success: Sequence[float],
                       mode: str, n: int, *, temperature: float | None = None, max_subsets: int = MAX_SUBSETS,
                       seed: int = 0) -> float:
    """Expected success of ``mode``'s pick from a random size-``n`` subset (module docstring)."""
    picks = []
    for subset in _subsets(len(scores), n, max_subsets, seed):
        chosen = select([scores[i] for i in subset], [answers[i] for i in subset], mode, temperature=temperature)
        picks.append(float(success[subset[chosen]]))
    return float(np.mean(picks))


def selection_curve(tasks: Sequence[tuple[Sequence[float | None], Sequence[str | None], Sequence[float]]],
                    mode: str, ns: Sequence[int], **kwargs) -> dict[int, tuple[float | None, float | None]]:
    """Mean (± stderr) over tasks of :func:`expected_selection` for each n."""
    return {n: mean_and_stderr([expected_selection(s, a, y, mode, n, **kwargs) for s, a, y in tasks]) for n in ns}
