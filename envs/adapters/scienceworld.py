"""ScienceWorld (Java simulator over py4j): 30 elementary-science tasks, many variations each.

    env = make("scienceworld", task="boil", simplifications="easy")
    obs = env.reset(seed=3)              # seed = the task's variation index
    env.step("open door to kitchen")
    env.admissible_actions()             # computed on demand (~0.05-0.4 s), cached for the state
    env.gold_actions()                   # ScienceWorld's gold action sequence for the variation

Needs Java >= 11 on PATH (Debian: ``openjdk-17-jre-headless``); the jar ships in the wheel.
Determinism: the simulator lists objects in an order that changes every time a task is loaded
again in the same JVM (object ids keep counting up), so observations and the numbering of
ambiguity prompts differ between two resets of one process. The first load in a fresh JVM is
reproducible (across processes too) in every run but one seen so far — a CI check on a 2-core
machine under full load got two different first observations from two fresh JVMs; upstream
keeps objects in hash sets and reports stochastic outcomes too (allenai/ScienceWorld#33) — so by
default every ``reset`` starts a fresh JVM (~1-2 s; ``deterministic = True``, replay branching
is exact up to that rare case). ``fresh_jvm=False`` reuses one JVM
(faster resets; the env then declares ``deterministic = False``).

Hot path: the package's ``env.step`` builds the full list of valid action/object combinations
(thousands of strings, ~0.05-1 s) plus look/inventory on *every* step. This adapter calls the
simulator's ``step`` directly and computes the valid actions only when asked
(``admissible_actions()``, or ``with_admissible=True`` to put them in every observation).

Reward: ScienceWorld's score gain / 100 (its score is 0..100, -100 on a failed task), summed
exactly, so the episode total is score / 100 and success (score 100) is total 1.
``terminated`` = the simulator's completed flag or a negative score (ScienceWorld's own
rules); the step limit is ours (``max_steps``, default 300: some gold paths are longer than
the package's default limit of 100, e.g. boil variation 22 takes 174 steps). ``info["invalid_action"]`` = the parser did
not recognise the input. Branching: replay (``deterministic = True``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ttsearch.envs.adapters.base import AdapterEnv, Outcome
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError, unknown_choice

INVALID_PREFIXES = ("No known action matches that input.",)
SPLITS = ("train", "dev", "test")


class ScienceWorldEnv(AdapterEnv):
    """One ScienceWorld task; ``reset(seed=k)`` plays variation k."""

    def __init__(self, *, task: str = "boil", simplifications: str = "", with_admissible: bool = False,
                 fresh_jvm: bool = True, max_steps: int = 300, step_timeout_s: float | None = 60.0):
        super().__init__(max_steps=max_steps, step_timeout_s=step_timeout_s)
        self.fresh_jvm = fresh_jvm
        if not fresh_jvm:
            self.deterministic = False  # see the module docstring
        self.task, self.simplifications = task, simplifications
        self.with_admissible = with_admissible
        self._sw: Any = None
        self._loaded: tuple[str, int] | None = None
        self._gold: dict[int, list[str] | None] = {}
        self._admissible: tuple[int, tuple[str, ...]] | None = None
        self._score = 0
        self.task_description = ""
        self.system_prompt = (
            "You are an agent in ScienceWorld, a text simulation of elementary science experiments. "
            "Complete the task in the first message. Reply with exactly one action per turn, e.g. "
            "'open door to kitchen', 'go to kitchen', 'pick up thermometer', 'focus on water', "
            "'look around', 'wait1'."
        )

    # ---- backend -----------------------------------------------------------------------
    def _backend(self) -> Any:
        if self._sw is None:
            try:
                # optional benchmark dependency (make benchmarks): imported when the adapter is used
                from scienceworld import ScienceWorldEnv as Sw
            except ModuleNotFoundError as err:
                raise EnvError(f"{err}; install it with: pip install 'ttsearch[benchmarks]'") from err
            try:
                self._sw = Sw("", envStepLimit=10**9)
            except Exception as err:  # py4j raises bare Exceptions when java is missing
                raise EnvError(f"cannot start ScienceWorld's JVM ({err}); it needs Java >= 11 on PATH "
                               "(Debian: apt-get install openjdk-17-jre-headless)") from err
            names = list(self._sw.get_task_names())
            if self.task not in names:
                self._stop_jvm()
                raise ConfigError(unknown_choice("ScienceWorld task", self.task, names))
            self._loaded = None
        return self._sw

    def _load(self, variation: int, *, gold: bool) -> None:
        sw = self._backend()
        limit = sw.get_max_variations(self.task)
        if variation >= limit:
            raise EnvError(f"ScienceWorld task {self.task!r} has variations 0..{limit - 1}; got seed {variation}")
        try:
            sw.load(self.task, variation, self.simplifications, generateGoldPath=gold)
        except ValueError as err:  # bad simplification string
            raise ConfigError(f"ScienceWorld: {err}") from err
        self._loaded = (self.task, variation)

    def _start(self, seed: int) -> Outcome:
        if self.fresh_jvm and self._sw is not None:
            self._stop_jvm()
        if self._loaded != (self.task, seed):
            self._load(seed, gold=False)
        sw = self._sw
        sw.server.reset()
        # The package's reset() does the same: reset, then a first "look around" as observation.
        obs = sw.server.step("look around")
        self._score = 0
        self._admissible = None
        self.task_description = str(sw.get_task_description())
        info = {"score": 0, "task_description": self.task_description, "variation": seed}
        text = f"{self.task_description}\n\n{obs}"
        return Outcome(text, admissible=self._maybe_admissible(), info=info)

    def _act(self, action: str) -> Outcome:
        sw = self._sw
        obs = str(sw.server.step(action))
        score = int(round(100 * sw.server.getScore()))  # as ScienceWorld's own step() rounds it
        done = bool(sw.server.getCompleted()) or score < 0
        self._score = score
        self._admissible = None
        info = {"score": score, "moves": int(sw.server.getNumMoves()), "success": score >= 100,
                "failure": score < 0}
        invalid = obs.strip().startswith(INVALID_PREFIXES)
        return Outcome(obs, total=score / 100.0, terminated=done, invalid=invalid,
                       admissible=self._maybe_admissible(), info=info)

    def _maybe_admissible(self) -> tuple[str, ...] | None:
        return self._valid_now() if self.with_admissible else None

    def _valid_now(self) -> tuple[str, ...]:
        key = len(self._actions)
        if self._admissible is None or self._admissible[0] != key:
            self._admissible = (key, tuple(sorted(self._sw.get_valid_action_object_combinations())))
        return self._admissible[1]

    def _kill(self) -> None:
        sw, self._sw = self._sw, None
        self._loaded = None
        proc = getattr(getattr(sw, "_gateway", None), "java_process", None)
        if proc is not None:
            proc.kill()

    # ---- extras --------------------------------------------------------------------------
    def admissible_actions(self) -> tuple[str, ...]:
        """ScienceWorld's valid action/object combinations for the current state (cached)."""
        if not self._started:
            raise EnvError("ScienceWorldEnv.admissible_actions() needs reset() first")
        return self._runner.call(self._valid_now, self.step_timeout_s)

    def gold_actions(self) -> Sequence[str] | None:
        """The simulator's gold path for this variation (generated once, then the episode is replayed)."""
        seed = self._seed
        if seed not in self._gold:
            done_actions = list(self._actions)
            self._load(seed, gold=True)
            gold = [str(a) for a in self._sw.get_gold_action_sequence()]
            self._gold[seed] = None if not gold or gold[0].startswith("ERROR") else gold
            if self._started:  # put the episode back where it was
                self.reset(seed=seed)
                for action in done_actions:
                    self.step(action)
        gold_path = self._gold[seed]
        return None if gold_path is None else list(gold_path)

    def variations(self, split: str) -> list[int]:
        """The task's variation indices in ScienceWorld's train / dev / test split."""
        if split not in SPLITS:
            raise ConfigError(unknown_choice("ScienceWorld split", split, SPLITS))
        sw = self._backend()
        if self._loaded is None or self._loaded[0] != self.task:
            self._load(0, gold=False)
        getter = {"train": sw.get_variations_train, "dev": sw.get_variations_dev, "test": sw.get_variations_test}
        return [int(v) for v in getter[split]()]

    def _stop_jvm(self) -> None:
        sw, self._sw, self._loaded = self._sw, None, None
        if sw is not None:
            try:
                sw.close()
            finally:
                proc = getattr(getattr(sw, "_gateway", None), "java_process", None)
                if proc is not None and proc.poll() is None:
                    proc.kill()

    def close(self) -> None:
        self._stop_jvm()
        super().close()


def scienceworld_tasks(*, split: str = "test", task: str = "boil", n: int = 20, simplifications: str = "",
                       **env_kwargs: Any) -> Iterator[Task]:
    """The first ``n`` variations of ``task`` in ScienceWorld's split (valid = dev)."""
    sw_split = {"valid": "dev"}.get(split, split)
    env = ScienceWorldEnv(task=task, simplifications=simplifications)
    try:
        variations = env.variations(sw_split)[:n]
    finally:
        env.close()
    kwargs = {"task": task, "simplifications": simplifications, **env_kwargs}
    for var in variations:
        yield Task(env="scienceworld", id=f"{task}/{simplifications or 'default'}/var{var}", seed=var,
                   kwargs=kwargs, split=split)
