"""ttsearch.scorers: step and trajectory scores from the engines' token data.

    from ttsearch.scorers import make_scorer, decisive_step
    pa = make_scorer("progress_advantage")            # β·(mean lp_θ − mean lp_ref) per step
    best = max(rollouts, key=lambda t: pa.score_trajectory(t.steps))
    blamed = decisive_step(pa.step_scores(failed.steps))
"""

from ttsearch.scorers.aggregation import (
    STEP_AGGREGATIONS,
    TOKEN_AGGREGATIONS,
    aggregate_steps,
    aggregate_tokens,
    bottom_fraction,
)
from ttsearch.scorers.base import (
    TOKEN_FIELDS,
    Scorer,
    StepAggregatingScorer,
    TokenData,
    token_fields,
)
from ttsearch.scorers.baselines import (
    SIGNS,
    DeepConfBottom10,
    DeepConfTail,
    Entropy,
    PolicyLogProb,
    Random,
    ReferenceLogProb,
    SelfCertainty,
    token_entropy_topk,
    token_self_certainty,
)
from ttsearch.scorers.progress_advantage import (
    DECISIVE_METHODS,
    PA_MODES,
    PA_SPANS,
    ProgressAdvantage,
    ProgressAdvantageCentered,
    cumulative,
    decisive_step,
)
from ttsearch.scorers.registry import SCORERS, make_scorer, scorer_options
from ttsearch.scorers.reward_model import RewardModel

__all__ = [
    "STEP_AGGREGATIONS", "TOKEN_AGGREGATIONS", "aggregate_steps", "aggregate_tokens",
    "bottom_fraction", "Scorer", "StepAggregatingScorer", "TokenData", "TOKEN_FIELDS", "token_fields",
    "SIGNS", "DeepConfBottom10",
    "DeepConfTail", "Entropy", "PolicyLogProb", "Random", "ReferenceLogProb", "SelfCertainty",
    "token_entropy_topk", "token_self_certainty", "DECISIVE_METHODS", "PA_MODES",
    "PA_SPANS", "ProgressAdvantage", "ProgressAdvantageCentered", "cumulative", "decisive_step", "SCORERS", "make_scorer", "scorer_options",
    "RewardModel",
]
