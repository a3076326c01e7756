"""An arm as run: a controller with every option filled in, the scorer guiding it, its budget.

    arm = resolve_arm(config.arms[0], config, horizon=20)
    controller = arm.make_controller(seed=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ttsearch.benchmarks.run.config import ArmSpec, RunConfig
from ttsearch.search import Controller, make_controller
from ttsearch.search.registry import controller_options


@dataclass(frozen=True, slots=True)
class ResolvedArm:
    """An arm as run: its controller with every option filled in (the horizon too), the label
    of the scorer that guides it, and its per-episode budget."""

    name: str
    controller: str
    controller_kwargs: Mapping[str, Any]
    search_scorer: str | None
    budget: Mapping[str, Any]

    def make_controller(self, seed: int) -> Controller:
        return make_controller(self.controller, seed=seed, **self.controller_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record of the arm (``run.json`` ``arms``)."""
        return {"name": self.name, "controller": self.controller, "controller_kwargs": dict(self.controller_kwargs),
                "search_scorer": self.search_scorer, "budget": dict(self.budget)}


def resolve_arm(arm: ArmSpec, config: RunConfig, horizon: int | None) -> ResolvedArm:
    """The arm as run: controller kwargs with the horizon filled in, its budget and scorer label."""
    kwargs = dict(arm.kwargs)
    if horizon is not None and "horizon" in controller_options(arm.controller):
        kwargs.setdefault("horizon", horizon)
    return ResolvedArm(arm.name, arm.controller, kwargs, arm.scorer, config.arm_budget(arm))
