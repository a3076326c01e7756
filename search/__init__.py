"""ttsearch.search: controllers over agent turns, a compute budget, early stopping, search trees.

    from ttsearch.search import Budget, make_controller
    controller = make_controller("beam", width=4, expand=4)
    result = controller.run(task, task.make, agent, make_scorer("progress_advantage"),
                            Budget(generated_tokens=512))
    result.trajectory.success, result.usage, result.stop_reason
    result.tree.write_graphml("tree.graphml"); result.tree.draw("tree.png")

Controllers: greedy, trajectory_best_of_n, step_best_of_n, beam, best_first, mcts (see
:data:`CONTROLLERS`). Early stopping: :class:`AdaptiveN`, :class:`DeepConf`,
:class:`ConfidenceGate`. Best-of-N selection modes (best, weighted, majority votes):
:mod:`ttsearch.search.selection`. Budget sweeps: :mod:`ttsearch.search.sweep`.
"""

from ttsearch.search.base import Controller, SearchContext, SearchResult, derive_seed
from ttsearch.search.beam import Beam
from ttsearch.search.best_first import BestFirst
from ttsearch.search.branching import Brancher
from ttsearch.search.budget import LIMITS, Allowance, Budget, Ledger, Usage
from ttsearch.search.early_stopping import (
    EARLY_STOPS,
    AdaptiveN,
    ConfidenceGate,
    DeepConf,
    EarlyStopReport,
    calibrate_threshold,
    make_early_stop,
)
from ttsearch.search.greedy import Greedy
from ttsearch.search.mcts import MCTS
from ttsearch.search.registry import CONTROLLERS, controller_options, make_controller
from ttsearch.search.selection import SELECTIONS, final_answer, select
from ttsearch.search.step_bon import StepBestOfN
from ttsearch.search.trajectory_bon import TrajectoryBestOfN
from ttsearch.search.tree import SearchTree

__all__ = [
    "Controller", "SearchContext", "SearchResult", "derive_seed", "Beam", "BestFirst", "Brancher",
    "LIMITS", "Allowance", "Budget", "Ledger", "Usage", "EARLY_STOPS", "AdaptiveN", "ConfidenceGate",
    "DeepConf", "EarlyStopReport", "calibrate_threshold", "make_early_stop", "Greedy", "MCTS",
    "CONTROLLERS", "controller_options", "make_controller", "StepBestOfN", "TrajectoryBestOfN",
    "SearchTree", "SELECTIONS", "final_answer", "select",
]
