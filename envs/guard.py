"""Env calls guarded: timed, validated, and every fault turned into one :class:`EnvFault`.

    watchdog = Watchdog()                                   # one thread watching a whole run
    env = GuardedEnv.open(task.make, where="maze/maze-7", timeout_s=60, watchdog=watchdog,
                          on_timeout=lambda fault: ...)     # the constructor is guarded too
    obs = env.reset(seed=task.seed)                         # an Env like any other
    try:
        env.step("north")
    except EnvFault as fault:
        fault.to_dict()    # {"kind": "raised" | "timeout" | "malformed", "message", "call", "step"}

Calls run inline, in the caller's thread (an env step costs nothing extra). The watchdog thread
looks at every call in progress; one that runs past ``timeout_s`` is given up: ``on_timeout``
gets the fault at once (the run records the episode and goes on), the env is marked abandoned,
and if the call ever returns, the guard raises the fault in the stuck thread so it unwinds.
A thread stuck for good stays behind, parked: Python cannot stop it, so the run must not wait
for it (the runner's episode threads are daemons).

An env that raises gives ``kind="raised"`` (its exception type and message); a return value that
breaks the contract gives ``kind="malformed"`` (what ``envs/validation.py`` finds wrong). ``step`` counts the
steps since the last reset (the failing call included).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ttsearch.envs.base import Env, Observation, StepResult
from ttsearch.envs.errors import EnvError
from ttsearch.envs.validation import observation_problem, step_result_problem

FAULT_KINDS = ("raised", "timeout", "malformed")


class EnvFault(EnvError):
    """An env call failed: it raised, ran past its timeout, or returned a malformed value."""

    def __init__(self, kind: str, message: str, *, where: str, call: str, step: int):
        self.kind, self.where, self.call, self.step = kind, where, call, step
        self.detail = message
        super().__init__(f"{where}: {call} (step {step}) {kind}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.detail, "call": self.call, "step": self.step}


class Watchdog:
    """One daemon thread that gives up on guarded calls running past their deadline."""

    def __init__(self, *, poll_s: float = 0.05):
        self.poll_s = poll_s
        self._active: dict[int, tuple[float, GuardedEnv, str]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ttsearch-env-watchdog", daemon=True)
        self._thread.start()

    def enter(self, env: GuardedEnv, call: str) -> int:
        token = next(self._ids)
        with self._lock:
            self._active[token] = (time.monotonic() + env.timeout_s, env, call)
        return token

    def leave(self, token: int) -> None:
        with self._lock:
            self._active.pop(token, None)

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(self.poll_s):
            now = time.monotonic()
            with self._lock:
                late = [(token, env, call) for token, (deadline, env, call) in self._active.items() if now > deadline]
                for token, _, _ in late:
                    del self._active[token]
            for _, env, call in late:
                env._give_up(call)


class GuardedEnv(Env):
    """An env whose every call is timed, validated and turned into :class:`EnvFault` on failure."""

    def __init__(self, env: Env, *, where: str, timeout_s: float | None = None, watchdog: Watchdog | None = None,
                 on_timeout: Callable[[EnvFault], None] | None = None):
        if timeout_s is not None and (not timeout_s > 0):
            raise EnvError(f"env timeout must be > 0 seconds (or None), got {timeout_s!r}")
        self.env, self.where, self.timeout_s = env, where, timeout_s
        self.watchdog = watchdog if timeout_s is not None else None
        self.on_timeout = on_timeout
        self.steps = 0
        self.abandoned: EnvFault | None = None
        # what search reads about the env, taken from the env itself
        self.system_prompt = env.system_prompt
        self.deterministic = env.deterministic
        self.max_steps = env.max_steps
        self.metadata = env.metadata

    @classmethod
    def open(cls, factory: Callable[[], Env], *, where: str, timeout_s: float | None = None,
             watchdog: Watchdog | None = None, on_timeout: Callable[[EnvFault], None] | None = None) -> GuardedEnv:
        """Build the env with ``factory`` under the same guard, then wrap it."""
        shell = cls(_Unbuilt(), where=where, timeout_s=timeout_s, watchdog=watchdog, on_timeout=on_timeout)
        env = shell._call("make", factory, _env_problem)
        return cls(env, where=where, timeout_s=timeout_s, watchdog=watchdog, on_timeout=on_timeout)

    @property
    def supports_snapshot(self) -> bool:
        return self.env.supports_snapshot

    def reset(self, *, seed: int | None = None) -> Observation:
        self.steps = 0
        return self._call("reset", lambda: self.env.reset(seed=seed), observation_problem)

    def step(self, action: str) -> StepResult:
        self.steps += 1
        return self._call("step", lambda: self.env.step(action), step_result_problem)

    def snapshot(self) -> Any:
        return self._call("snapshot", self.env.snapshot, None)

    def restore(self, snapshot: Any) -> None:
        self._call("restore", lambda: self.env.restore(snapshot), None)

    def gold_actions(self) -> Sequence[str] | None:
        return self._call("gold_actions", self.env.gold_actions, None)

    def close(self) -> None:
        if self.abandoned is None:  # never block on an env that hangs
            self._call("close", self.env.close, None)

    def _call(self, call: str, fn: Callable[[], Any], problem: Callable[[Any], str | None] | None) -> Any:
        if self.abandoned is not None:
            raise self.abandoned
        token = self.watchdog.enter(self, call) if self.watchdog is not None else None
        try:
            out = fn()
        except EnvFault:
            raise
        except Exception as err:  # the env's own failure, named and kept as data by the run
            raise self._fault("raised", f"{type(err).__name__}: {err}".splitlines()[0], call) from err
        finally:
            if token is not None:
                self.watchdog.leave(token)
        if self.abandoned is not None:  # the watchdog gave up on this call while it ran
            raise self.abandoned
        wrong = problem(out) if problem is not None else None
        if wrong is not None:
            raise self._fault("malformed", wrong, call)
        return out

    def _fault(self, kind: str, message: str, call: str) -> EnvFault:
        return EnvFault(kind, message, where=self.where, call=call, step=self.steps)

    def _give_up(self, call: str) -> None:
        fault = self._fault("timeout", f"no answer within {self.timeout_s:g} s (env_timeout_s); "
                            "the call was abandoned", call)
        self.abandoned = fault
        if self.on_timeout is not None:
            self.on_timeout(fault)


class _Unbuilt(Env):
    """The placeholder a guard holds while its env is being constructed."""

    def reset(self, *, seed: int | None = None) -> Observation:  # pragma: no cover - never called
        raise EnvError("the env is not built yet")

    def step(self, action: str) -> StepResult:  # pragma: no cover - never called
        raise EnvError("the env is not built yet")


def _env_problem(env: Any) -> str | None:
    return None if isinstance(env, Env) else f"built a {type(env).__name__}, not a ttsearch Env"
