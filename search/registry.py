"""Controller registry: names to classes, with errors that list the valid options.

    controller = make_controller("beam", width=4, expand=4, seed=0)
    controller = make_controller("step_best_of_n", k=8, early_stop="gate")
    controller_options("mcts")   # ('simulations', 'expand', 'batch', 'c_puct', ...)
"""

from __future__ import annotations

import inspect
from typing import Any

from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.search.base import Controller
from ttsearch.search.beam import Beam
from ttsearch.search.best_first import BestFirst
from ttsearch.search.greedy import Greedy
from ttsearch.search.mcts import MCTS
from ttsearch.search.step_bon import StepBestOfN
from ttsearch.search.trajectory_bon import TrajectoryBestOfN

CONTROLLERS: dict[str, type[Controller]] = {
    "greedy": Greedy,
    "trajectory_best_of_n": TrajectoryBestOfN,
    "step_best_of_n": StepBestOfN,
    "beam": Beam,
    "best_first": BestFirst,
    "mcts": MCTS,
}
"""Controller name -> class (each class's ``name`` equals its key)."""


def controller_options(name: str) -> tuple[str, ...]:
    """The keyword arguments the controller ``name`` accepts."""
    if name not in CONTROLLERS:
        raise ConfigError(unknown_choice("controller", name, CONTROLLERS))
    params = inspect.signature(CONTROLLERS[name].__init__).parameters
    return tuple(p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY)


def make_controller(name: str, **kwargs: Any) -> Controller:
    """Build a registered controller; unknown names or options raise a one-line ConfigError."""
    options = controller_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ConfigError(f"controller {name!r} got unknown option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(options)}")
    return CONTROLLERS[name](**kwargs)
