"""Environment registry: names to factories, explicit and lazy.

    env = make("maze", layout_seed=3)                 # a registered name
    env = make("my_pkg.my_env:MyEnv", level=2)        # any importable "module:Class" (or factory)
    tasks = list_tasks("maze", split="test", limit=200)

Built-in adapters are listed in :data:`REGISTRY` as ``"module:attr"`` strings and imported only
when used, so a missing optional dependency affects only its own adapter. ``register`` adds
user environments at run time. A registered entry may also name a task lister
(``tasks=``) returning :class:`Task` objects for a split.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ttsearch.envs.base import Env, Task
from ttsearch.envs.errors import EnvError, unknown_choice


@dataclass(frozen=True, slots=True)
class EnvEntry:
    """A registered environment: its factory and (optionally) its task lister."""

    factory: str
    tasks: str | None = None
    description: str = ""
    extra: str | None = None
    """The pip extra that provides its dependencies, for the error message when missing."""


REGISTRY: dict[str, EnvEntry] = {
    "maze": EnvEntry(
        "ttsearch.envs.maze.env:SlipperyMaze",
        tasks="ttsearch.envs.maze.env:maze_tasks",
        description="built-in slippery grid maze with pits; exact soft-Q solver",
    ),
    "agentdojo": EnvEntry(
        "ttsearch.envs.adapters.agentdojo:AgentDojoEnv", tasks="ttsearch.envs.adapters.agentdojo:agentdojo_tasks",
        description="AgentDojo v1.2.2: 4 suites, 97 user tasks (+ injection tasks); utility check",
        extra="benchmarks",
    ),
    "bfcl": EnvEntry(
        "ttsearch.envs.adapters.bfcl:BFCLEnv", tasks="ttsearch.envs.adapters.bfcl:bfcl_tasks",
        description="BFCL v4 multi-turn: base/miss_func/miss_param/long_context; multi_turn_checker",
        extra="benchmarks",
    ),
    "tau2": EnvEntry(
        "ttsearch.envs.adapters.tau2:Tau2Env", tasks="ttsearch.envs.adapters.tau2:tau2_tasks",
        description="tau2-bench airline (50) and retail (114) with a scripted or local-model user",
        extra="benchmarks",
    ),
    "sokoban": EnvEntry(
        "ttsearch.envs.adapters.sokoban:SokobanEnv", tasks="ttsearch.envs.adapters.sokoban:sokoban_tasks",
        description="TextArena Sokoban-v0 (6x6, 3 boxes) / -medium (8x8); BFS gold path",
        extra="benchmarks",
    ),
    "textworld": EnvEntry(
        "ttsearch.envs.adapters.textworld:TextWorldEnv", tasks="ttsearch.envs.adapters.textworld:textworld_tasks",
        description="TextWorld challenges (coin collector, treasure hunter, simple, cooking) made offline per seed",
        extra="benchmarks",
    ),
    "textworld_express": EnvEntry(
        "ttsearch.envs.adapters.textworld_express:TextWorldExpressEnv",
        tasks="ttsearch.envs.adapters.textworld_express:textworld_express_tasks",
        description="TextWorldExpress games (coin, cookingworld, twc, mapreader, ...); needs Java >= 11",
        extra="benchmarks",
    ),
    "scienceworld": EnvEntry(
        "ttsearch.envs.adapters.scienceworld:ScienceWorldEnv", tasks="ttsearch.envs.adapters.scienceworld:scienceworld_tasks",
        description="ScienceWorld's 30 tasks x variations; needs Java >= 11",
        extra="benchmarks",
    ),
    "minigrid": EnvEntry(
        "ttsearch.envs.adapters.minigrid:MiniGridEnv", tasks="ttsearch.envs.adapters.minigrid:minigrid_tasks",
        description="MiniGrid/BabyAI with a text rendering of the agent's partial view; bot/BFS gold",
        extra="benchmarks",
    ),
    "reasoning_gym": EnvEntry(
        "ttsearch.envs.adapters.reasoning_gym:ReasoningGymEnv", tasks="ttsearch.envs.adapters.reasoning_gym:reasoning_gym_tasks",
        description="reasoning-gym countdown / maze / gsm_symbolic as multi-step tasks; score_answer reward",
        extra="benchmarks",
    ),
    "textcraft": EnvEntry(
        "ttsearch.envs.adapters.textcraft:TextCraftEnv", tasks="ttsearch.envs.adapters.textcraft:textcraft_tasks",
        description="TextCraft Minecraft crafting (textcraft package recipes), deterministic tasks per seed",
        extra="benchmarks",
    ),
    "webshop": EnvEntry(
        "ttsearch.envs.adapters.webshop:WebShopEnv", tasks="ttsearch.envs.adapters.webshop:webshop_tasks",
        description="WebShop text mode over a local copy of its data files (data_dir=...)",
        extra="benchmarks",
    ),
    "alfworld": EnvEntry(
        "ttsearch.envs.adapters.alfworld:ALFWorldEnv", tasks="ttsearch.envs.adapters.alfworld:alfworld_tasks",
        description="ALFWorld text games from its game files (data_dir=...); TextWorld PDDL engine",
        extra="benchmarks",
    ),
}


def register(name: str, factory: str | Callable[..., Env], *, tasks: str | None = None,
             description: str = "", overwrite: bool = False) -> None:
    """Register a user environment under ``name`` (factory: callable or ``"module:attr"``)."""
    if name in REGISTRY and not overwrite:
        raise EnvError(f"environment {name!r} is already registered; pass overwrite=True to replace it")
    if callable(factory):
        factory = f"{factory.__module__}:{factory.__qualname__}"
    REGISTRY[name] = EnvEntry(factory, tasks=tasks, description=description)


def load_attr(spec: str, *, what: str = "object", extra: str | None = None) -> Any:
    """Import ``"module:attr"`` with errors that say what to fix."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EnvError(f"{what} spec {spec!r} must look like 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        hint = f"; install it with: pip install 'ttsearch[{extra}]'" if extra else ""
        raise EnvError(f"cannot import {module_name!r} for {what} {spec!r}: {err}{hint}") from err
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise EnvError(f"module {module_name!r} has no attribute {attr!r} (from {what} spec {spec!r})") from None
    return target


def _entry(spec: str) -> EnvEntry:
    if spec in REGISTRY:
        return REGISTRY[spec]
    if ":" in spec:
        return EnvEntry(spec)
    raise EnvError(unknown_choice("environment", spec, REGISTRY) + ", or a 'module:Class' spec")


def make(spec: str, **kwargs: Any) -> Env:
    """Build an environment from a registered name or a ``"module:Class"`` spec."""
    entry = _entry(spec)
    factory = load_attr(entry.factory, what="environment", extra=entry.extra)
    try:
        env = factory(**kwargs)
    except TypeError as err:
        raise EnvError(f"bad arguments for environment {spec!r}: {err}") from err
    if not isinstance(env, Env):
        raise EnvError(
            f"{spec!r} built a {type(env).__name__}, not a ttsearch Env; subclass ttsearch.envs.Env "
            "or wrap a Gymnasium text env with ttsearch.envs.GymTextEnv"
        )
    return env


def list_tasks(spec: str, *, split: str = "test", limit: int | None = None, **kwargs: Any) -> list[Task]:
    """The tasks of an environment for a split (``limit`` keeps the first ones)."""
    entry = _entry(spec)
    if entry.tasks is None:
        raise EnvError(f"environment {spec!r} has no task list; build Task(env={spec!r}, id=..., kwargs=...) yourself")
    lister = load_attr(entry.tasks, what="task lister", extra=entry.extra)
    tasks: Iterator[Task] = iter(lister(split=split, **kwargs))
    out = []
    for task in tasks:
        if limit is not None and len(out) >= limit:
            break
        out.append(task)
    return out
