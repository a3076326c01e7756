"""Scorer registry: names to classes, with errors that list the valid options.

    scorer = make_scorer("progress_advantage", beta=0.5, token_agg="min", mode="per_token_ratio")
    scorer = make_scorer("self_certainty", k=20, sign="paper")
    scorer = make_scorer("progress_advantage_centered", beta=0.1)   # needs token_kl
    sorted(SCORERS)   # every registered name
"""

from __future__ import annotations

import inspect
from typing import Any

from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers.base import Scorer
from ttsearch.scorers.baselines import (
    DeepConfBottom10,
    DeepConfTail,
    Entropy,
    PolicyLogProb,
    Random,
    ReferenceLogProb,
    SelfCertainty,
)
from ttsearch.scorers.progress_advantage import ProgressAdvantage, ProgressAdvantageCentered
from ttsearch.scorers.reward_model import RewardModel

SCORERS: dict[str, type] = {
    "progress_advantage": ProgressAdvantage,
    "progress_advantage_centered": ProgressAdvantageCentered,
    "policy_logprob": PolicyLogProb,
    "reference_logprob": ReferenceLogProb,
    "self_certainty": SelfCertainty,
    "deepconf_tail": DeepConfTail,
    "deepconf_bottom10": DeepConfBottom10,
    "entropy": Entropy,
    "random": Random,
    "reward_model": RewardModel,
}
"""Scorer name -> class (each class's ``name`` attribute equals its key)."""


def scorer_options(name: str) -> tuple[str, ...]:
    """The keyword arguments the scorer ``name`` accepts."""
    if name not in SCORERS:
        raise ConfigError(unknown_choice("scorer", name, SCORERS))
    params = inspect.signature(SCORERS[name].__init__).parameters
    return tuple(p for p in params if p != "self" and params[p].kind is inspect.Parameter.KEYWORD_ONLY)


def make_scorer(name: str, **kwargs: Any) -> Scorer:
    """Build a registered scorer; unknown names or keyword arguments raise ConfigError."""
    options = scorer_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        valid = ", ".join(options) if options else "(none)"
        raise ConfigError(f"scorer {name!r} got unknown option(s) {', '.join(unknown)}; "
                          f"valid options: {valid}")
    return SCORERS[name](**kwargs)
