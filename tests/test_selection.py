"""Best-of-N selection modes on hand-made rollouts: best, weighted, majority, weighted majority."""

from __future__ import annotations

import math

import pytest

from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import Budget, TrajectoryBestOfN, select
from ttsearch.search.testing import Choice, FakeProposer

SCORES = [0.9, 0.1, 0.2, 0.3]
ANSWERS = ["7", "5", "5", None]


def test_best_is_the_top_score():
    assert select(SCORES, ANSWERS, "best") == 0


def test_majority_counts_answers_and_returns_the_best_scored_voter():
    assert select(SCORES, ANSWERS, "majority") == 2  # "5" twice, "7" once; 0.2 > 0.1 among the fives
    # a 2-2 tie goes to the answer given first ("a"), then to its best-scored rollout (index 3)
    assert select([0.0, 0.0, 0.0, 1.0], ["a", "b", "b", "a"], "majority") == 3
    assert select([0.5, 0.9], [None, None], "majority") == 1  # nobody voted: best


def test_weighted_majority_sums_min_max_scores():
    # weights (s − 0.1)/0.8 = [1, 0, 0.125, 0.25]; "7": 1 > "5": 0.125 (rollout 3 does not vote)
    assert select(SCORES, ANSWERS, "weighted_majority") == 0
    # all scores equal: weights all 1, a plain vote
    assert select([0.4] * 3, ["x", "y", "y"], "weighted_majority") == 1


def test_weighted_best_of_n_sums_softmax_weights():
    # τ = 1: "7" gets 1; "5" gets e^-0.8 + e^-0.7 = 0.946 -> "7"
    assert math.exp(-0.8) + math.exp(-0.7) < 1.0
    assert select(SCORES, ANSWERS, "weighted", temperature=1.0) == 0
    # τ = 10: "5" gets e^-0.08 + e^-0.07 = 1.855 > 1 -> "5", its best voter (index 2)
    assert select(SCORES, ANSWERS, "weighted", temperature=10.0) == 2
    # default τ = the scores' std (0.3082 here): "7" 1 vs "5" e^(-0.7/τ)+e^(-0.8/τ) = 0.178
    assert select(SCORES, ANSWERS, "weighted") == 0


def test_missing_scores_rank_last_and_weigh_nothing():
    assert select([None, 0.1, float("nan")], ["a", "b", "a"], "best") == 1
    assert select([None, 0.1, float("nan")], ["a", "b", "a"], "weighted_majority") == 1
    assert select([None, 0.1, float("nan")], ["a", "b", "a"], "majority") == 0  # votes ignore scores


def test_bad_modes_and_temperatures_are_one_line_errors():
    with pytest.raises(ConfigError, match="selection 'vote'; choose one of: best, majority, weighted, weighted_majority"):
        select(SCORES, ANSWERS, "vote")
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        select(SCORES, ANSWERS, "weighted", temperature=0.0)


class Quiz(Env):
    """One turn: any answer ends the episode; "5" is right."""

    deterministic = True
    has_final_answer = True

    def reset(self, *, seed=None):
        return Observation("2 + 3 = ?", ("5", "6", "7"))

    def step(self, action):
        return StepResult(Observation("done"), float(action == "5"), True, False)


def _table(state):
    # the policy favours the wrong "7" but says "5" more often in total; PA prefers "7"
    return [Choice("7", logprob=math.log(0.4), advantage=1.0), Choice("5", logprob=math.log(0.35), advantage=0.2),
            Choice("5", logprob=math.log(0.25), advantage=0.1)]


@pytest.mark.parametrize("selection, success", [("best", False), ("majority", True), ("weighted_majority", False)])
def test_the_controller_votes_on_final_answers(selection, success):
    task = Task("quiz", "q0")
    controller = TrajectoryBestOfN(n=8, selection=selection)
    result = controller.run(task, Quiz, FakeProposer(_table), make_scorer("progress_advantage"), Budget())
    assert result.success is success
    assert len(result.rollouts) == 8


def test_voting_needs_an_env_with_final_answers():
    class NoAnswers(Quiz):
        has_final_answer = False

    with pytest.raises(ConfigError, match="has none \\(Env.has_final_answer\\)"):
        TrajectoryBestOfN(n=2, selection="majority").run(Task("quiz", "q0"), NoAnswers, FakeProposer(_table),
                                                        make_scorer("progress_advantage"), Budget())
