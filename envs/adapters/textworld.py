"""TextWorld games generated offline from a seed, cached on disk, branched with ``env.copy()``.

    env = make("textworld", challenge="tw-coin_collector", settings={"level": 5})
    obs = env.reset(seed=3)            # seed 3 = the game tw-make would build with --seed 3
    env.step("go north")
    snap = env.snapshot(); ...; env.restore(snap)      # TextWorld's own copy() of the z-machine
    env.gold_actions()                 # the game's walkthrough

Games come from TextWorld's own challenge generators (the ones behind ``tw-make``):
``tw-coin_collector`` (settings: level), ``tw-treasure_hunter`` (level), ``tw-simple`` (rewards,
goal, test) and ``tw-cooking`` (recipe, take, go, open, cook, cut, drop, recipe_seed, split).
``settings`` are the challenge's ``tw-make`` options (underscores for dashes); missing ones take
the challenge's defaults. A game is compiled once (Inform 7, ~5 s) into
``$TTSEARCH_CACHE/textworld`` (default ``~/.cache/ttsearch/textworld``) and reused.

Reward: the game's score gain divided by its max score, so the episode's total reward is
``score / max_score`` and reaches 1 exactly when all points are earned (TextWorld's *won*;
``info["won"]``, ``info["lost"]`` say how it ended). ``terminated`` = the game ended (won or lost).
``info["invalid_action"]`` = the command is not one of TextWorld's admissible commands for the
state it was typed in (the game still answers it with its own text).
The observation is the game's feedback without the ASCII-art banner and the trailing
``>`` prompt/status line.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ttsearch.envs.adapters.base import AdapterEnv, Outcome, cache_root, normalize_command
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError, unknown_choice

_BANNER_CHARS = set("_|$\\/<> ")

# A few ready-made families for the task lister (settings as tw-make options).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "coin": ("tw-coin_collector", {"level": 5}),
    "coin-hard": ("tw-coin_collector", {"level": 25}),
    "treasure": ("tw-treasure_hunter", {"level": 5}),
    "simple": ("tw-simple", {"rewards": "dense", "goal": "detailed"}),
    "cooking": ("tw-cooking", {"recipe": 2, "take": 1, "go": 6, "open": True, "cook": True, "cut": True}),
}


def _challenges() -> Mapping[str, Any]:
    # optional benchmark dependency (make benchmarks): imported when the adapter is used
    import textworld.challenges

    return textworld.challenges.CHALLENGES


def resolve_settings(challenge: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The challenge's full settings: ``settings`` over its ``tw-make`` defaults (validated)."""
    challenges = _challenges()
    if challenge not in challenges:
        raise ConfigError(unknown_choice("TextWorld challenge", challenge, challenges))
    _, _, add_arguments = challenges[challenge]
    parser = argparse.ArgumentParser(prog=f"tw-make {challenge}", add_help=False, exit_on_error=False)
    add_arguments(parser)
    argv: list[str] = []
    for key, value in (settings or {}).items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        else:
            argv += [flag, str(value)]
    try:
        args, unknown = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit) as err:
        raise ConfigError(f"bad settings {dict(settings or {})} for {challenge}: {err}; "
                          f"see `tw-make {challenge} --help`") from None
    if unknown:
        raise ConfigError(f"unknown settings {unknown} for {challenge}; see `tw-make {challenge} --help`")
    return vars(args)


def game_path(challenge: str, settings: Mapping[str, Any], seed: int, cache_dir: Path) -> Path:
    key = json.dumps({"challenge": challenge, "settings": settings, "seed": seed}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return cache_dir / f"{challenge}-s{seed}-{digest}.z8"


def ensure_game(challenge: str, settings: Mapping[str, Any], seed: int, cache_dir: Path | None = None) -> Path:
    """Generate (once) and return the compiled ``.z8`` game; its ``.json`` sits beside it."""
    # optional benchmark dependency (make benchmarks): imported when the adapter is used
    import textworld
    import textworld.generator

    cache_dir = Path(cache_dir) if cache_dir else cache_root() / "textworld"
    full = resolve_settings(challenge, settings)
    path = game_path(challenge, full, seed, cache_dir)
    if path.exists() and path.with_suffix(".json").exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one generator at a time; others wait and reuse
        if path.exists() and path.with_suffix(".json").exists():
            return path
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".gen-"))
        try:
            options = textworld.GameOptions()
            options.seeds = seed
            options.path = str(tmp / path.name)
            options.file_ext = ".z8"
            options.force_recompile = True
            _, make_game, _ = _challenges()[challenge]
            try:
                game = make_game(settings=dict(full), options=options)
                compiled = Path(textworld.generator.compile_game(game, options))
            except Exception as err:  # generator errors are many and untyped
                raise EnvError(f"TextWorld could not generate {challenge} seed={seed} "
                               f"settings={full}: {type(err).__name__}: {err}") from err
            # json first, z8 last: a reader that sees the .z8 also sees the .json
            os.replace(compiled.with_suffix(".json"), path.with_suffix(".json"))
            os.replace(compiled, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def clean_feedback(text: str) -> str:
    """Drop the ASCII-art banner and the trailing prompt/status line of a TextWorld message."""
    lines = [ln for ln in text.split("\n")
             if not (ln.strip() and set(ln) <= _BANNER_CHARS and len(ln.strip()) > 3)]
    text = "\n".join(lines).rstrip()
    text = re.sub(r"(^|\n)>[^\n]*$", "", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class TextWorldEnv(AdapterEnv):
    """One TextWorld challenge family; ``reset(seed=k)`` plays its game number k."""

    def __init__(self, *, challenge: str = "tw-coin_collector", settings: Mapping[str, Any] | None = None,
                 game_file: str | None = None, cache_dir: str | None = None, max_steps: int = 100,
                 step_timeout_s: float | None = 60.0):
        super().__init__(max_steps=max_steps, step_timeout_s=step_timeout_s)
        self.challenge = challenge
        self.settings = dict(settings or {})
        self.game_file = game_file  # a ready-made .z8/.ulx (its .json beside it): the seed is ignored
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if game_file is None:
            resolve_settings(challenge, self.settings)  # fail fast on bad settings
        self._env: Any = None
        self._loaded: Path | None = None
        self._path: Path | None = None
        self._state: Any = None
        self._score = 0
        self._gold: list[str] | None = None
        self.system_prompt = (
            "You are playing a TextWorld text adventure. Reach the goal described in the first "
            "message. Reply with exactly one command per turn, e.g. 'go north', 'take key', "
            "'open door', 'inventory'. The admissible commands are listed after each observation."
        )

    # ---- backend -----------------------------------------------------------------------
    def _prepare(self, seed: int) -> None:
        # generation (Inform 7 compile, seconds) is not a step: keep it out of the step timeout
        self._path = Path(self.game_file) if self.game_file else ensure_game(
            self.challenge, self.settings, seed, self.cache_dir)

    def _start(self, seed: int) -> Outcome:
        # optional benchmark dependency (make benchmarks): imported when the adapter is used
        import textworld

        path = self._path
        if path is None or not path.exists():
            raise EnvError(f"TextWorld game file {path} does not exist")
        infos = textworld.EnvInfos(
            admissible_commands=True, intermediate_reward=True, policy_commands=True, won=True,
            lost=True, max_score=True, score=True, moves=True, objective=True, feedback=True,
            extras=["walkthrough"])
        if self._env is None or self._loaded != path:  # same game: the z-machine just restarts
            if self._env is not None:
                self._env.close()
            self._env = textworld.start(str(path), request_infos=infos)
            self._loaded = path
        state = self._env.reset()
        self._state = state
        self._score = int(state.score or 0)
        walkthrough = state.get("extra.walkthrough")
        self._gold = list(walkthrough) if walkthrough else list(state.policy_commands or [])
        return Outcome(clean_feedback(state.feedback), admissible=self._admissible(state),
                       info=self._info(state))

    def _act(self, action: str) -> Outcome:
        before = {normalize_command(c) for c in (self._state.admissible_commands or [])}
        state, score, done = self._env.step(action)
        self._state = state
        max_score = max(int(state.max_score or 0), 1)
        self._score = int(score)
        invalid = normalize_command(action) not in before
        return Outcome(clean_feedback(state.feedback), total=self._score / max_score, terminated=bool(done),
                       invalid=invalid, admissible=self._admissible(state), info=self._info(state))

    def _kill(self) -> None:
        self._env, self._loaded = None, None  # a hung z-machine cannot be stopped; drop it

    @staticmethod
    def _admissible(state: Any) -> tuple[str, ...] | None:
        cmds = state.admissible_commands
        return tuple(cmds) if cmds is not None else None

    @staticmethod
    def _info(state: Any) -> dict[str, Any]:
        return {"score": int(state.score or 0), "max_score": int(state.max_score or 0),
                "won": bool(state.won), "lost": bool(state.lost), "moves": state.moves,
                "objective": state.objective, "intermediate_reward": state.intermediate_reward}

    # ---- branching ---------------------------------------------------------------------
    def snapshot(self) -> Any:
        if self._env is None:
            raise EnvError("TextWorldEnv.snapshot() needs a started episode; call reset() first")
        return (self._env.copy(), self._state, self._score, self._loaded, self._gold, self._bookkeeping())

    def restore(self, snapshot: Any) -> None:
        game, state, score, loaded, gold, book = snapshot
        if self._env is not None and self._env is not game:
            self._env.close()
        self._env = game.copy()  # copy again: the same snapshot can be restored many times
        self._state, self._score, self._loaded, self._path, self._gold = state, score, loaded, loaded, gold
        self._restore_bookkeeping(book)

    def gold_actions(self) -> Sequence[str] | None:
        return None if self._gold is None else list(self._gold)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env, self._loaded = None, None
        super().close()


def textworld_tasks(*, split: str = "test", preset: str = "coin", n: int = 20, first_seed: int | None = None,
                    challenge: str | None = None, settings: Mapping[str, Any] | None = None,
                    **env_kwargs: Any) -> Iterator[Task]:
    """Tasks of a preset family (or an explicit challenge+settings); seeds differ per split."""
    if challenge is None:
        if preset not in PRESETS:
            raise ConfigError(unknown_choice("TextWorld preset", preset, PRESETS))
        challenge, settings = PRESETS[preset]
    base = {"train": 0, "valid": 100_000, "test": 200_000}.get(split)
    if base is None:
        raise ConfigError(unknown_choice("split", split, ["train", "valid", "test"]))
    start = base if first_seed is None else first_seed
    kwargs = {"challenge": challenge, "settings": dict(settings or {}), **env_kwargs}
    for seed in range(start, start + n):
        yield Task(env="textworld", id=f"{challenge}/{_slug(settings)}/seed{seed}", seed=seed,
                   kwargs=kwargs, split=split)


def _slug(settings: Mapping[str, Any] | None) -> str:
    parts = [k if v is True else f"{k}{v}" for k, v in sorted((settings or {}).items()) if v not in (False, None)]
    return "-".join(parts) or "default"
