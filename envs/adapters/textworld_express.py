"""TextWorldExpress (Java simulator over py4j): coin, cookingworld, twc, mapreader, arithmetic,
sorting, simonsays, peckingorder.

The first observation is TWX's task description followed by its first observation.

    env = make("textworld_express", game="coin", game_params="numLocations=5,includeDoors=1")
    obs = env.reset(seed=12)         # a TWX seed of the fold (list them with textworld_express_tasks)
    env.step("move north")
    env.gold_actions()               # TWX's getGoldActionSequence for this game

Needs Java >= 11 on PATH (Debian: ``openjdk-17-jre-headless``); the jar ships in the wheel.
One JVM per env instance (~0.3 s to start), reused across resets; ``close()`` stops it.

Reward: the gain in TWX's normalized score (``info["score"]``, 1.0 = task solved), summed
exactly, so the episode total is the final normalized score. ``terminated`` = TWX's done
conditions (task success, task failure, or score >= 1); ``info["success"]`` /
``info["failure"]`` are TWX's ``tasksuccess`` / ``taskfailure``. The step limit is ours
(``max_steps``), reported as truncation. Branching: replay (``deterministic = True``; TWX
has no state copy — its own ``clone()`` replays too). ``info["invalid_action"]`` = the command
is not among TWX's ``validActions`` for the state it was typed in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ttsearch.envs.adapters.base import AdapterEnv, Outcome, normalize_command
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError, unknown_choice

GAMES = ("cookingworld", "coin", "twc", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")
FOLDS = {"train": "train", "valid": "dev", "dev": "dev", "test": "test"}


class TextWorldExpressEnv(AdapterEnv):
    """One TWX game with fixed generation parameters; ``reset(seed=k)`` plays TWX seed k."""

    def __init__(self, *, game: str = "coin", game_params: str = "", fold: str = "train",
                 max_steps: int = 100, step_timeout_s: float | None = 60.0):
        super().__init__(max_steps=max_steps, step_timeout_s=step_timeout_s)
        if game not in GAMES:
            raise ConfigError(unknown_choice("TextWorldExpress game", game, GAMES))
        if fold not in FOLDS:
            raise ConfigError(unknown_choice("TextWorldExpress fold", fold, FOLDS))
        self.game, self.game_params, self.fold = game, game_params, FOLDS[fold]
        self._twx: Any = None
        self._valid: set[str] = set()
        self._gold: list[str] | None = None
        self.task_description = ""
        self.system_prompt = (
            f"You are playing the TextWorldExpress game '{game}'. Complete the task described in "
            "the first message. Reply with exactly one command per turn; the valid commands are "
            "listed after each observation."
        )

    def _backend(self) -> Any:
        if self._twx is None:
            try:
                # optional benchmark dependency (make benchmarks): imported when the adapter is used
                from textworld_express import TextWorldExpressEnv as Twx
            except ModuleNotFoundError as err:
                raise EnvError(f"{err}; install it with: pip install 'ttsearch[benchmarks]'") from err
            try:
                # Our own max_steps ends episodes; keep TWX's limit out of the way.
                self._twx = Twx(envStepLimit=10**9)
            except Exception as err:  # py4j raises bare Exceptions when java is missing
                raise EnvError(f"cannot start TextWorldExpress's JVM ({err}); it needs Java >= 11 "
                               "on PATH (Debian: apt-get install openjdk-17-jre-headless)") from err
        return self._twx

    def _start(self, seed: int) -> Outcome:
        twx = self._backend()
        obs, infos = twx.reset(seed=seed, gameFold=self.fold, gameName=self.game,
                               gameParams=self.game_params, generateGoldPath=True)
        gold = list(twx.getGoldActionSequence())
        self._gold = gold if gold and not gold[0].startswith("ERROR") else None
        self.task_description = str(infos.get("taskDescription", ""))
        first = self._outcome(obs, infos, terminated=False, invalid=False)
        # The first observation carries the task (TWX shows it only on 'help'), as TWX agents do.
        text = f"{self.task_description}\n\n{first.text}" if self.task_description else first.text
        return Outcome(text, admissible=first.admissible, info=first.info)

    def _act(self, action: str) -> Outcome:
        invalid = normalize_command(action) not in self._valid
        obs, _, done, infos = self._twx.step(action)
        return self._outcome(obs, infos, terminated=bool(done), invalid=invalid)

    def _outcome(self, obs: str, infos: dict[str, Any], *, terminated: bool, invalid: bool) -> Outcome:
        valid = tuple(sorted(infos.get("validActions", ())))
        self._valid = {normalize_command(a) for a in valid}
        info = {"score": float(infos["score"]), "score_raw": infos.get("scoreRaw"),
                "success": bool(infos["tasksuccess"]), "failure": bool(infos["taskfailure"]),
                "task_description": str(infos.get("taskDescription", "")), "moves": infos.get("numMoves")}
        return Outcome(str(obs), total=float(infos["score"]), terminated=terminated,
                       invalid=invalid, admissible=valid, info=info)

    def _kill(self) -> None:
        twx, self._twx = self._twx, None
        proc = getattr(getattr(twx, "_gateway", None), "java_process", None)
        if proc is not None:
            proc.kill()

    def gold_actions(self) -> Sequence[str] | None:
        return None if self._gold is None else list(self._gold)

    def valid_seeds(self) -> list[int]:
        """TWX's seeds for this env's fold."""
        twx = self._backend()
        twx.load(self.game, self.game_params)
        getter = {"train": twx.getValidSeedsTrain, "dev": twx.getValidSeedsDev, "test": twx.getValidSeedsTest}
        return [int(s) for s in getter[self.fold]()]

    def close(self) -> None:
        if self._twx is not None:
            try:
                self._twx.close()
            finally:
                self._twx = None
        super().close()


def textworld_express_tasks(*, split: str = "test", game: str = "coin", game_params: str = "",
                            n: int = 20, **env_kwargs: Any) -> Iterator[Task]:
    """The first ``n`` TWX seeds of the fold matching ``split`` (train / valid=dev / test)."""
    if split not in FOLDS:
        raise ConfigError(unknown_choice("split", split, FOLDS))
    env = TextWorldExpressEnv(game=game, game_params=game_params, fold=split)
    try:
        seeds = env.valid_seeds()[:n]
    finally:
        env.close()
    kwargs = {"game": game, "game_params": game_params, "fold": split, **env_kwargs}
    tag = game_params.replace(",", "-").replace("=", "") or "default"
    for seed in seeds:
        yield Task(env="textworld_express", id=f"{game}/{tag}/{FOLDS[split]}/seed{seed}", seed=seed,
                   kwargs=kwargs, split=split)
