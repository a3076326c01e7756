"""The individual checks of :func:`~ttsearch.envs.check_env.check_env`, one method each.

:class:`EnvChecker` runs one check per method against an environment (and, for the determinism
check, a second one from the same factory); a method raises :class:`CheckFailed` to fail its
check with a message. Every env call goes through a :class:`CallClock`, which times it and lets
``check_env``'s watchdog see a call that hangs.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from ttsearch.envs.base import SUCCESS_REWARD, Env, Observation, StepResult
from ttsearch.envs.errors import EnvError
from ttsearch.envs.validation import observation_problem, step_result_problem

GARBAGE_ACTIONS: tuple[str, ...] = (
    "", "   ", "xyzzy plugh", "🙃 ünïcödé ☃", "north\nsouth\n", "{\"tool\": null}", "a" * 5000,
)
FALLBACK_ACTIONS: tuple[str, ...] = ("look", "north", "south", "east", "west", "inventory", "help")
MAX_STEPS_TO_DONE = 500


class CheckFailed(Exception):
    """Raised inside a check to fail it with a message."""


def describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _short(text: Any, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_observation(obs: Any, where: str) -> Observation:
    """The same boundary check as ``ttsearch run`` (``envs.validation``), as a failed check."""
    problem = observation_problem(obs)
    if problem is not None:
        raise CheckFailed(f"{where}: {problem}")
    return obs


def _check_result(result: Any, where: str) -> StepResult:
    problem = step_result_problem(result)
    if problem is not None:
        raise CheckFailed(f"{where}: {problem}")
    return result


class CallClock:
    """Times every env call; the watchdog of :func:`check_env` reads ``current`` to spot a hang."""

    def __init__(self) -> None:
        self.timings: dict[str, list[float]] = {}
        self.current: tuple[str, float] | None = None

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        self.current = (name, start)
        try:
            return fn(*args)
        finally:
            self.current = None
            self.timings.setdefault(name, []).append(time.perf_counter() - start)


def _key(result: StepResult) -> tuple:
    """What must be identical between two reproductions of a step (info is not compared)."""
    obs = result.observation
    return (obs.text, obs.admissible_actions, result.reward, result.terminated, result.truncated)


class EnvChecker:
    def __init__(self, factory: Callable[[], Env], first: Env, *, seed: int, n_random_steps: int,
                 fresh_envs: bool, clock: CallClock):
        self.factory, self.env, self.seed, self.clock = factory, first, seed, clock
        self.n_random_steps, self.fresh_envs = n_random_steps, fresh_envs
        self.extra_envs: list[Env] = []
        self.gold: list[str] | None = None

    # -- helpers --
    def reset(self, env: Env, seed: int) -> Any:
        return self.clock.call("reset", lambda: env.reset(seed=seed))

    def step(self, env: Env, action: str) -> Any:
        return self.clock.call("step", env.step, action)

    def choose(self, rng: random.Random, obs: Observation) -> str:
        pool = list(obs.admissible_actions or ()) or list(self.gold or ()) or list(FALLBACK_ACTIONS)
        return pool[rng.randrange(len(pool))]

    def rollout(self, env: Env, obs: Observation, rng: random.Random, n: int,
                actions: list[str] | None = None) -> tuple[list[str], list[StepResult]]:
        """From ``obs``, play ``actions`` (or ``n`` drawn from ``rng``) until done."""
        played: list[str] = []
        results: list[StepResult] = []
        for i in range(n if actions is None else len(actions)):
            action = self.choose(rng, obs) if actions is None else actions[i]
            result = _check_result(self.step(env, action), f"step({_short(action, 30)}) #{i + 1}")
            played.append(action)
            results.append(result)
            obs = result.observation
            if result.done:
                break
        return played, results

    def second_env(self) -> Env:
        if not self.fresh_envs:
            return self.env
        env = self.clock.call("construct", self.factory)
        self.extra_envs.append(env)
        return env

    # -- checks --
    def check_reset(self) -> str:
        first = _check_observation(self.reset(self.env, self.seed), f"reset(seed={self.seed})")
        again = _check_observation(self.reset(self.env, self.seed), f"reset(seed={self.seed}) again")
        if (first.text, first.admissible_actions) != (again.text, again.admissible_actions):
            raise CheckFailed(f"reset(seed={self.seed}) twice gave different first observations: "
                               f"{_short(first.text)} vs {_short(again.text)}")
        n = "no" if first.admissible_actions is None else len(first.admissible_actions)
        return f"text of {len(first.text)} chars, {n} admissible actions"

    def check_step_types(self) -> str:
        rng = random.Random(self.seed)
        steps = episodes = 0
        obs = self.reset(self.env, self.seed)
        while steps < self.n_random_steps:
            action = self.choose(rng, obs)
            result = _check_result(self.step(self.env, action), f"step({_short(action, 30)}) #{steps + 1}")
            steps += 1
            obs = result.observation
            if result.done:
                episodes += 1
                obs = self.reset(self.env, self.seed + episodes)
        return f"{steps} random steps, {episodes} episode(s) ended"

    def check_garbage(self) -> str:
        flagged = 0
        for action in GARBAGE_ACTIONS:
            self.reset(self.env, self.seed)
            try:
                result = _check_result(self.step(self.env, action), f"step({_short(action, 20)})")
            except CheckFailed:
                raise
            except Exception as err:
                raise CheckFailed(f"step({_short(action, 20)}) raised {describe_error(err)}; "
                                   "answer invalid actions with feedback instead") from err
            flagged += bool(result.info.get("invalid_action"))
        return (f"{len(GARBAGE_ACTIONS)} garbage actions answered; "
                f"{flagged} flagged info['invalid_action']")

    def check_step_after_done(self) -> tuple[bool, str]:
        obs = self.reset(self.env, self.seed)
        how = "random actions"
        if self.gold:
            _, results = self.rollout(self.env, obs, random.Random(self.seed), 0, actions=self.gold)
            how = "the gold path"
        else:
            _, results = self.rollout(self.env, obs, random.Random(self.seed), MAX_STEPS_TO_DONE)
        if not results or not results[-1].done:
            return False, f"episode did not end within {len(results)} steps of {how}; not checked"
        try:
            after = self.step(self.env, self.choose(random.Random(self.seed), results[-1].observation))
        except EnvError as err:
            return True, f"raises EnvError after done ({err})"
        except Exception as err:
            raise CheckFailed(f"step after done raised {describe_error(err)}; raise EnvError "
                               "or return a done StepResult") from err
        after = _check_result(after, "step after done")
        if not after.done:
            raise CheckFailed("step after done returned a StepResult that is not done")
        return True, "returns a done StepResult after done"

    def check_determinism(self) -> str:
        """Lockstep episodes (seeds seed, seed+1, ...) until n_random_steps steps were compared."""
        other = self.second_env()
        rng = random.Random(self.seed + 1)
        steps = episodes = 0
        while steps < self.n_random_steps and episodes < self.n_random_steps:
            seed = self.seed + episodes
            # Sequential, not interleaved: with an instance, ``other`` is the same env.
            a_obs = self.reset(self.env, seed)
            played, a_results = self.rollout(self.env, a_obs, rng, self.n_random_steps - steps)
            b_obs = self.reset(other, seed)
            if (a_obs.text, a_obs.admissible_actions) != (b_obs.text, b_obs.admissible_actions):
                raise CheckFailed(f"first observations differ for seed {seed}")
            _, b_results = self.rollout(other, b_obs, rng, 0, actions=played)
            for i, (a, b) in enumerate(zip(a_results, b_results, strict=False)):
                if _key(a) != _key(b):
                    raise CheckFailed(f"seed {seed}, step {i + 1} ({_short(played[i], 30)}) differs: "
                                       f"{_short(_key(a))} vs {_short(_key(b))}")
            if len(a_results) != len(b_results):
                raise CheckFailed(f"seed {seed}: one episode ended earlier than the other")
            steps += len(a_results)
            episodes += 1
        where = "two envs" if self.fresh_envs else "one env, episodes replayed"
        return f"{steps} steps in {episodes} episode(s) identical ({where})"

    def check_snapshot(self, k: int = 8, rounds: int = 3) -> str:
        """Snapshot after a prefix of 0, 1, 2... random steps; replay k steps twice from it."""
        env, replayed = self.env, 0
        for prefix_len in range(rounds):
            rng = random.Random(self.seed + 2 + prefix_len)
            obs = self.reset(env, self.seed)
            _, prefix = self.rollout(env, obs, rng, prefix_len)
            if prefix and prefix[-1].done:
                continue  # the episode already ended: nothing to branch from
            obs = prefix[-1].observation if prefix else obs
            snap = self.clock.call("snapshot", env.snapshot)
            played, first = self.rollout(env, obs, rng, k)
            replayed += len(first)
            for label in ("first", "second"):
                self.clock.call("restore", env.restore, snap)
                _, replay = self.rollout(env, obs, rng, 0, actions=played)
                for i, (a, b) in enumerate(zip(first, replay, strict=False)):
                    if _key(a) != _key(b):
                        raise CheckFailed(
                            f"after the {label} restore (snapshot after {prefix_len} steps), replayed "
                            f"step {i + 1} ({_short(played[i], 30)}) differs: {_short(_key(a))} vs "
                            f"{_short(_key(b))}; the snapshot must hold the whole state, random "
                            "generator included")
                if len(first) != len(replay):
                    raise CheckFailed(f"after the {label} restore the replay ended at a different step")
        return f"{replayed} steps replayed exactly after restore (twice each, {rounds} snapshots)"

    def check_gold(self) -> tuple[bool | None, str]:
        obs = self.reset(self.env, self.seed)
        gold = self.clock.call("gold_actions", self.env.gold_actions)
        if gold is None:
            return None, "env has no gold_actions()"
        gold = list(gold)
        if not all(isinstance(a, str) for a in gold):
            raise CheckFailed("gold_actions() must be a sequence of str")
        self.gold = gold
        _, results = self.rollout(self.env, obs, random.Random(self.seed), 0, actions=gold)
        total = math.fsum(r.reward for r in results)
        success = total >= SUCCESS_REWARD
        return success, (f"{len(results)}/{len(gold)} gold actions played, total reward {total:g}"
                         + ("" if success else f" < {SUCCESS_REWARD:g}: the gold path fails"))
