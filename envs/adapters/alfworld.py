"""ALFWorld (TextWorld engine) for users who have its game files.

    env = make("alfworld", data_dir="/data/alfworld/json_2.1.1/valid_unseen")
    obs = env.reset(seed=0)          # seed = index into the sorted list of playable games
    env.step("go to countertop 1")
    env.gold_actions()               # the game file's walkthrough, else the PDDL planner's plan

ALFWorld's game files come from its own download script (not a package registry), so this
adapter reads a folder laid out like ALFWorld's data: one folder per trial holding
``traj_data.json`` and ``game.tw-pddl`` (JSON with ``pddl_domain``, ``grammar``,
``pddl_problem``, ``solvable``[, ``walkthrough``]). A trial with only ``initial_state.pddl``
and ``traj_data.json`` is turned into a game the way ``alfworld-play-tw`` does it: the domain
and grammar shipped in the ``alfworld`` package, with the task text (the first template of
ALFWorld's goal library for the trial's task type) put into the grammar. Games are kept as
ALFWorld keeps them: trials under ``movable``/``Sliced`` folders, of other task types than
``task_types``, or marked unsolvable are skipped.

The game runs in TextWorld's PDDL engine (``textworld[pddl]``: the ``fast-downward-textworld``
package) with ALFWorld's ``AlfredDemangler`` (object names like "apple 1"), as ALFWorld does.
Reward: 1 when the goal holds (TextWorld's ``won``), which ends the episode (``terminated``).
``info["invalid_action"]`` = not an admissible command (the game answers "Nothing happens.").
Branching: replay (``deterministic = True``; the PDDL engine has no copy).
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ttsearch.envs.adapters.base import AdapterEnv, Outcome, cache_root, normalize_command
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError

TASK_TYPES = ("pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
              "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place")
_WELCOME = "-= Welcome to TextWorld, ALFRED! =-"


def list_games(data_dir: str | Path, task_types: Sequence[str] = TASK_TYPES) -> list[Path]:
    """Playable trial folders under ``data_dir``, sorted (ALFWorld's filtering rules)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise EnvError(f"ALFWorld data folder {root} does not exist; point data_dir at e.g. json_2.1.1/valid_seen")
    games = []
    for traj in sorted(root.rglob("traj_data.json")):
        folder = traj.parent
        if "movable" in str(folder) or "Sliced" in str(folder):
            continue
        if json.loads(traj.read_text()).get("task_type") not in task_types:
            continue
        game = folder / "game.tw-pddl"
        if game.exists():
            if not json.loads(game.read_text()).get("solvable", False):
                continue
        elif not (folder / "initial_state.pddl").exists():
            continue
        games.append(folder)
    return games


def build_game_file(folder: Path, out_dir: Path) -> Path:
    """``game.tw-pddl`` for a trial that only has ``initial_state.pddl`` + ``traj_data.json``."""

    # optional benchmark dependency (make benchmarks): imported when the adapter is used
    import alfworld.gen.goal_library as glib

    traj = json.loads((folder / "traj_data.json").read_text())
    params = traj["pddl_params"]
    goal_key = traj["task_type"] + ("_slice" if params.get("object_sliced") else "")
    template = glib.gdict[goal_key]["templates"][0]
    task = template.format(obj=params["object_target"].lower(), recep=params["parent_target"].lower(),
                           toggle=params.get("toggle_target", "").lower(), mrecep=params.get("mrecep_target", "").lower())
    data = importlib.resources.files("alfworld") / "data"
    game = {"pddl_domain": (data / "alfred.pddl").read_text(),
            "grammar": (data / "alfred.twl2").read_text().replace("UNKNOWN GOAL", task),
            "pddl_problem": (folder / "initial_state.pddl").read_text(), "solvable": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "game.tw-pddl"
    tmp = out_dir / f".game.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(game))
    os.replace(tmp, path)
    return path


class ALFWorldEnv(AdapterEnv):
    """ALFWorld text games from a data folder; ``reset(seed=k)`` plays game k."""

    def __init__(self, *, data_dir: str, task_types: Sequence[str] = TASK_TYPES, cache_dir: str | None = None,
                 max_steps: int = 50, step_timeout_s: float | None = 60.0):
        super().__init__(max_steps=max_steps, step_timeout_s=step_timeout_s)
        bad = sorted(set(task_types) - set(TASK_TYPES))
        if bad:
            raise ConfigError(f"unknown ALFWorld task types {bad}; choose from: {', '.join(TASK_TYPES)}")
        self.data_dir = Path(data_dir)
        self.games = list_games(self.data_dir, task_types)
        if not self.games:
            raise EnvError(f"no playable ALFWorld games under {self.data_dir}")

        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "alfworld"
        self._env: Any = None
        self._loaded: Path | None = None
        self._state: Any = None
        self._gold: list[str] | None = None
        self.game_folder: Path | None = None
        self.system_prompt = ("You are in a household (ALFWorld). Complete the task in the first message. "
                              "Reply with exactly one admissible command per turn, e.g. 'go to countertop 1', "
                              "'take apple 1 from countertop 1', 'open fridge 1', 'move apple 1 to fridge 1'.")

    def _game_file(self, folder: Path) -> Path:
        game = folder / "game.tw-pddl"
        if game.exists():
            return game
        rel = folder.relative_to(self.data_dir)
        cached = self.cache_dir / rel / "game.tw-pddl"
        return cached if cached.exists() else build_game_file(folder, self.cache_dir / rel)

    def _prepare(self, seed: int) -> None:
        if seed >= len(self.games):
            raise EnvError(f"ALFWorld has {len(self.games)} games under {self.data_dir}; seed {seed} is out of range")
        self.game_folder = self.games[seed]
        self._path = self._game_file(self.game_folder)

    def _start(self, seed: int) -> Outcome:
        try:
            # optional benchmark dependency (make benchmarks): imported when the adapter is used
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        except ModuleNotFoundError as err:
            raise EnvError(f"{err}; install it with: pip install 'ttsearch[benchmarks]'") from err
        # Only the walkthrough (planned once at reset); policy_commands would re-plan every step.
        infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["walkthrough"])
        if self._env is None or self._loaded != self._path:  # parsing domain + grammar costs ~0.5 s
            if self._env is not None:
                self._env.close()
            try:
                self._env = textworld.start(str(self._path), request_infos=infos, wrappers=[AlfredDemangler()])
            except ImportError as err:  # PddlEnv raises this when fast_downward is missing
                raise EnvError(f"{err}; ALFWorld needs textworld[pddl] (pip install fast-downward-textworld)") from err
            self._loaded = self._path
        state = self._env.reset()
        self._state = state
        walkthrough = state.get("extra.walkthrough")
        self._gold = list(walkthrough) if walkthrough else None
        return Outcome(self._clean(state.feedback), admissible=tuple(state.admissible_commands),
                       info={"game": str(self.game_folder), "won": False})

    @staticmethod
    def _clean(text: str) -> str:
        return text.replace(_WELCOME, "").strip()

    def _act(self, action: str) -> Outcome:
        valid = {normalize_command(c) for c in self._state.admissible_commands}
        state, _, done = self._env.step(action)
        self._state = state
        won = bool(state.won)
        return Outcome(self._clean(state.feedback), reward=1.0 if won else 0.0, terminated=bool(done),
                       invalid=normalize_command(action) not in valid,
                       admissible=tuple(state.admissible_commands), info={"won": won})

    def _kill(self) -> None:
        self._env, self._loaded = None, None

    def gold_actions(self) -> Sequence[str] | None:
        return None if self._gold is None else list(self._gold)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env, self._loaded = None, None
        super().close()


def alfworld_tasks(*, split: str = "test", data_dir: str, n: int | None = None, **env_kwargs: Any) -> Iterator[Task]:
    """One task per playable game under ``data_dir`` (point it at the split's folder)."""
    games = list_games(data_dir, env_kwargs.get("task_types", TASK_TYPES))
    for seed, folder in enumerate(games[: n if n is not None else None]):
        rel = folder.relative_to(Path(data_dir)).as_posix()
        yield Task(env="alfworld", id=f"alfworld/{rel}", seed=seed, kwargs={"data_dir": str(data_dir), **env_kwargs},
                   split=split)
