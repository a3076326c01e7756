"""Environment registry: names to factories, explicit and lazy.

    env = make("maze", layout_seed=3)                 # a registered name
    env = make("my_pkg.my_env:MyEnv", level=2)        # any importable "module:Class" (or factory)
    tasks = list_tasks("maze", split="test", limit=200)

Built-in adapters are listed in :data:`REGISTRY` as ``"module:attr"`` strings and imported only
when used, so a missing optional dependency affects only its own adapter. User environments
come in three ways, all explicit:

- ``register("keydoor", KeyDoor, tasks="keydoor_env:keydoor_tasks")`` in a module that the
  command line imports (``ttsearch --import keydoor_env ...`` or ``imports: [keydoor_env]`` in a
  run config; :func:`import_modules`);
- a ``"module:Class"`` spec wherever an env name goes (no task list: a run config then lists
  its tasks inline);
- a Python entry point in the group ``ttsearch.envs`` (:data:`ENTRY_POINT_GROUP`), the way
  Gymnasium finds third-party envs, declared by an installed package::

      [project.entry-points."ttsearch.envs"]
      keydoor = "keydoor_env:register_envs"     # a function that calls register("keydoor", ...)
      corridor = "corridor_env:Corridor"        # or an Env subclass (registered with no task list)

  Entry points are read only when a name is not in the registry (and when listing): nothing
  is imported at start-up. A function entry point is called once with no arguments and must
  register the entry point's name (it may register more).

A task lister is ``lister(*, split, **kwargs) -> Iterable[Task]``: ``split`` is the config's
``tasks.split`` and ``kwargs`` its ``tasks.kwargs``; ``list_tasks`` keeps the first ``limit``.
An entry may also name an attribution module (``attribution=``) that gives ``ttsearch
report`` task difficulty and failure-attribution truth (see :class:`EnvEntry`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ttsearch.envs.base import Env, Task
from ttsearch.envs.errors import EnvError, TtsearchError, unknown_choice

ENTRY_POINT_GROUP = "ttsearch.envs"
"""The entry-point group installed packages declare their environments in."""


@dataclass(frozen=True, slots=True)
class EnvEntry:
    """A registered environment: its factory and (optionally) its task lister."""

    factory: str
    tasks: str | None = None
    """``"module:lister"``: ``lister(*, split, **kwargs) -> Iterable[Task]``."""
    description: str = ""
    extra: str | None = None
    """The pip extra that provides its dependencies, for the error message when missing."""
    attribution: str | None = None
    """A module with ``task_info(task) -> {"difficulty": str, ...}`` and
    ``decisive_mistake(trajectory) -> {"decisive_step": int | None, ...}`` (the true decisive
    mistake of a FAILED trajectory, 0-based): ``ttsearch run`` records both in every row, and
    ``ttsearch report`` then fills its difficulty and failure-attribution sections."""


REGISTRY: dict[str, EnvEntry] = {
    "maze": EnvEntry(
        "ttsearch.envs.maze.env:SlipperyMaze",
        tasks="ttsearch.envs.maze.env:maze_tasks",
        description="built-in slippery grid maze with pits; exact soft-Q solver",
        attribution="ttsearch.envs.maze.attribution",
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
             description: str = "", attribution: str | None = None, overwrite: bool = False) -> None:
    """Register a user environment under ``name`` (factory: callable or ``"module:attr"``;
    ``tasks``: a ``"module:lister"`` spec; ``attribution``: see :class:`EnvEntry`).

    Registering the same entry again is a no-op (a module imported twice, by ``--import`` and
    by an entry point, registers twice); a different entry under a taken name needs ``overwrite``.
    """
    if callable(factory):
        factory = f"{factory.__module__}:{factory.__qualname__}"
    entry = EnvEntry(factory, tasks=tasks, description=description, attribution=attribution)
    if name in REGISTRY and REGISTRY[name] != entry and not overwrite:
        raise EnvError(f"environment {name!r} is already registered (factory {REGISTRY[name].factory}); "
                       "pass overwrite=True to replace it, or choose another name")
    REGISTRY[name] = entry


def _import_hint(module_name: str, err: ModuleNotFoundError, extra: str | None) -> str:
    """How to fix a missing module: the module itself, or something it imports."""
    missing = err.name or module_name
    if module_name != missing and not module_name.startswith(missing + "."):
        return f"; {module_name!r} imports {missing!r}, which is not installed: pip install it"
    if extra:
        return f"; install it with: pip install 'ttsearch[{extra}]'"
    top = module_name.split(".")[0]
    return (f"; run ttsearch from the folder that holds {top}.py (or the {top}/ package), add that folder "
            "to PYTHONPATH, or pip install the package that provides it")


def import_module(module_name: str, *, what: str, extra: str | None = None) -> Any:
    """``importlib.import_module`` with one-line :class:`EnvError` messages that name the fix."""
    if not module_name or "/" in module_name or "\\" in module_name or module_name.endswith(".py"):
        stem = module_name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
        raise EnvError(f"{what}: {module_name!r} is a file path; give a module name such as {stem!r} and run "
                       "from its folder (or add the folder to PYTHONPATH)")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise EnvError(f"cannot import {module_name!r} for {what}: {err}{_import_hint(module_name, err, extra)}") from err
    except Exception as err:  # the module exists but raised while importing: say so, on one line
        raise EnvError(f"importing {module_name!r} for {what} raised {type(err).__name__}: {err}") from err


def import_modules(names: Iterable[str], *, source: str = "--import") -> None:
    """Import user modules that register environments (``--import M`` / ``imports: [M]``)."""
    for name in names:
        import_module(name, what=f"{source} {name}")


def load_attr(spec: str, *, what: str = "object", extra: str | None = None) -> Any:
    """Import ``"module:attr"`` with errors that say what to fix."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EnvError(f"{what} spec {spec!r} must look like 'package.module:Name'")
    module = import_module(module_name, what=f"{what} {spec!r}", extra=extra)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise EnvError(f"module {module_name!r} has no attribute {attr!r} (from {what} spec {spec!r})") from None
    return target


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed ``ttsearch.envs`` entry points by name (read now; nothing is imported)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # the first on sys.path wins, as for imports
    return found


def _load_entry_point(name: str, ep: importlib.metadata.EntryPoint) -> EnvEntry:
    where = f"entry point {name} = {ep.value!r} (group {ENTRY_POINT_GROUP})"
    spec = f"{ep.module}:{ep.attr}" if ep.attr else ep.module
    target = load_attr(spec, what=where) if ep.attr else import_module(ep.module, what=where)
    if name in REGISTRY:  # importing the module registered it
        return REGISTRY[name]
    if isinstance(target, type) and issubclass(target, Env):
        register(name, spec)
    elif callable(target):
        try:
            target()
        except Exception as err:
            raise EnvError(f"{where} raised {type(err).__name__}: {err}") from err
        if name not in REGISTRY:
            raise EnvError(f"{where} ran but registered no environment {name!r}; it must call "
                           f"ttsearch.envs.register({name!r}, ...)")
    else:
        raise EnvError(f"{where} is a {type(target).__name__}; point it at an Env subclass or at a function "
                       "that calls ttsearch.envs.register(...)")
    return REGISTRY[name]


def env_names() -> list[str]:
    """Every environment name known here: the registry and the installed entry points."""
    return sorted({*REGISTRY, *entry_points()})


def env_entry(spec: str) -> EnvEntry:
    """The entry of a registered name, an entry-point name (loaded now) or a ``"module:Class"`` spec."""
    if spec in REGISTRY:
        return REGISTRY[spec]
    if ":" in spec:
        return EnvEntry(spec)
    ep = entry_points().get(spec)
    if ep is not None:
        return _load_entry_point(spec, ep)
    raise EnvError(unknown_choice("environment", spec, env_names())
                   + "; or a 'module:Class' spec, or import the module that registers it "
                   "(ttsearch --import MODULE, or imports: [MODULE] in a run config)")


def make(spec: str, **kwargs: Any) -> Env:
    """Build an environment from a registered name or a ``"module:Class"`` spec.

    Anything the constructor raises becomes a one-line :class:`EnvError` (the cause chained).
    """
    entry = env_entry(spec)
    factory = load_attr(entry.factory, what="environment", extra=entry.extra)
    try:
        env = factory(**kwargs)
    except TypeError as err:
        raise EnvError(f"bad arguments for environment {spec!r}: {err}") from err
    except EnvError:
        raise
    except Exception as err:
        shown = f" with {kwargs}" if kwargs else ""
        raise EnvError(f"environment {spec!r} raised {type(err).__name__} while being built{shown}: {err}") from err
    if not isinstance(env, Env):
        raise EnvError(
            f"{spec!r} built a {type(env).__name__}, not a ttsearch Env; subclass ttsearch.envs.Env "
            "or wrap a Gymnasium text env with ttsearch.envs.GymTextEnv"
        )
    return env


def has_task_list(spec: str) -> bool:
    """Whether ``list_tasks(spec)`` can list tasks (the env names a task lister)."""
    return env_entry(spec).tasks is not None


def list_tasks(spec: str, *, split: str = "test", limit: int | None = None, **kwargs: Any) -> list[Task]:
    """The tasks of an environment for a split (``limit`` keeps the first ones)."""
    entry = env_entry(spec)
    if entry.tasks is None:
        raise EnvError(
            f"environment {spec!r} has no task list; register it with tasks='module:lister' "
            "(lister(*, split, **kwargs) -> Iterable[Task]), or list the tasks in the run config: "
            f"tasks: {{env: {spec}, items: [{{id: ..., seed: 0, kwargs: {{...}}}}]}}")
    lister = load_attr(entry.tasks, what="task lister", extra=entry.extra)
    out: list[Task] = []
    try:
        tasks: Iterator[Any] = iter(lister(split=split, **kwargs))
        for task in tasks:
            if limit is not None and len(out) >= limit:
                break
            if not isinstance(task, Task):
                raise EnvError(f"task lister {entry.tasks!r} yielded a {type(task).__name__}, not a ttsearch Task")
            out.append(task)
    except TtsearchError:
        raise
    except TypeError as err:
        raise EnvError(f"bad arguments for task lister {entry.tasks!r} (split={split!r}, {kwargs}): {err}; "
                       "a lister takes (*, split, **kwargs)") from err
    except Exception as err:
        raise EnvError(f"task lister {entry.tasks!r} raised {type(err).__name__}: {err}") from err
    return out
