"""AgentDojo (all four suites) as a ttsearch environment, offline, scored by its own checks.

    env = make("agentdojo", task="workspace/user_task_0")         # utility run
    env = make("agentdojo", task="banking/user_task_3", injection_task="injection_task_1")  # security run
    obs = env.reset(seed=0)                   # the user prompt; env.system_prompt lists the tools
    env.step('<tool_call>{"name": "get_current_day", "arguments": {}}</tool_call>')  # tool results
    env.step("Your next meeting is at 10:00.")                    # final answer -> utility

Tasks are ``Task(env="agentdojo", id="<suite>/<user_task_N>")`` (``agentdojo:workspace/user_task_0``
in full) for the 97 user tasks of benchmark ``v1.2.2`` (workspace 40, travel 20, banking 16,
slack 21); ``list_tasks("agentdojo", injections=True)`` adds every (user task, injection task)
pair as ``<suite>/<user_task_N>+<injection_task_M>``.

It follows AgentDojo's own tool loop (``ToolsExecutor`` + ``ToolsExecutionLoop``): the system
prompt is its default system message plus the suite's tool schemas (as its OpenAI pipeline
sends them), a tool result is the YAML dump (``tool_output_format="json"`` for JSON) or the error
string, and the episode ends when the model answers without a tool call, or after
``max_turns`` = 16 model turns (1 + the loop's 15 iterations). Reward is the task's own utility
check (``utility_from_traces``, else ``utility``) on the environment state and the final text,
1.0 or 0.0 -- also at the turn limit, where AgentDojo still scores the state reached. With an
injection task the environment carries the attack's injections and ``info["security"]`` is
True when the injection task succeeded (the attack won). Branching deep-copies the state.
"""

from __future__ import annotations

import copy
import json
from ast import literal_eval
from collections.abc import Iterator, Sequence
from functools import cache, lru_cache
from typing import Any

from agentdojo.agent_pipeline.agent_pipeline import load_system_message
from agentdojo.agent_pipeline.tool_execution import is_string_list, tool_result_to_str
from agentdojo.attacks.attack_registry import load_attack
from agentdojo.attacks.base_attacks import DEFAULT_MODEL_NAME
from agentdojo.functions_runtime import FunctionCall, FunctionsRuntime
from agentdojo.models import MODEL_NAMES
from agentdojo.task_suite.load_suites import get_suites
from agentdojo.types import text_content_block_from_string

from ttsearch.envs.adapters.tool_calls import (
    ToolCall,
    format_final_answer,
    format_tool_calls,
    format_tool_results,
    render_tools,
)
from ttsearch.envs.adapters.tool_env import ToolCallingEnv, ToolTimeout
from ttsearch.envs.base import Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError, EnvError, unknown_choice

DEFAULT_VERSION = "v1.2.2"
SUITES: tuple[str, ...] = ("workspace", "travel", "banking", "slack")
MAX_TURNS = 16
"""AgentDojo's pipeline: one model call, then ToolsExecutionLoop(max_iters=15) more."""
DEFAULT_ATTACK = "important_instructions_no_model_name"
DONE_TEXT = "[The conversation is over.]"


@cache
def _suites(version: str) -> dict[str, Any]:
    try:
        return get_suites(version)
    except KeyError:
        raise ConfigError(f"unknown AgentDojo benchmark version {version!r}; try {DEFAULT_VERSION!r}") from None


def _suite(name: str, version: str) -> Any:
    suites = _suites(version)
    if name not in suites:
        raise EnvError(unknown_choice("AgentDojo suite", name, suites))
    return suites[name]


@lru_cache(maxsize=64)
def _loaded_env(suite_name: str, version: str, injections: tuple[tuple[str, str], ...]) -> Any:
    """The parsed suite environment (YAML parsing costs up to 0.35 s): copied, never mutated."""
    return _suite(suite_name, version).load_and_inject_default_environment(dict(injections))


class _AttackTarget:
    """Stands in for the attacked pipeline: attacks only read its ``name`` (the model name)."""

    def __init__(self, name: str | None):
        self.name = name


def tool_schemas(suite: Any) -> list[dict[str, Any]]:
    """The suite's tools as OpenAI function schemas (what AgentDojo's OpenAI pipeline sends)."""
    return [{"type": "function", "function": {
        "name": f.name, "description": f.description, "parameters": f.parameters.model_json_schema()}}
        for f in suite.tools]


class AgentDojoEnv(ToolCallingEnv):
    """One AgentDojo user task (optionally under one injection task's attack)."""

    metadata = {"benchmark": "agentdojo"}

    def __init__(self, task: str = "workspace/user_task_0", *, version: str = DEFAULT_VERSION,
                 injection_task: str | None = None, attack: str = DEFAULT_ATTACK,
                 attack_model: str | None = None, max_turns: int | None = MAX_TURNS,
                 step_timeout_s: float | None = 30.0, tool_output_format: str = "yaml",
                 system_message: str | None = None):
        super().__init__(max_turns=max_turns, step_timeout_s=step_timeout_s)
        task = task.removeprefix("agentdojo:")
        suite_name, sep, task_id = task.partition("/")
        if "+" in task_id and injection_task is None:
            task_id, _, injection_task = task_id.partition("+")
        if not sep or not task_id:
            raise ConfigError(f"AgentDojo task {task!r} must look like '<suite>/user_task_<N>', "
                              f"suite one of {', '.join(SUITES)}")
        if tool_output_format not in ("yaml", "json"):
            raise ConfigError(f"tool_output_format must be 'yaml' or 'json', got {tool_output_format!r}")
        self.suite = _suite(suite_name, version)
        if task_id not in self.suite.user_tasks:
            raise EnvError(unknown_choice(f"AgentDojo {suite_name} user task", task_id, self.suite.user_tasks))
        self.task_id = f"{suite_name}/{task_id}"
        self.user_task = self.suite.user_tasks[task_id]
        self.injection_task = None
        injections: dict[str, str] = {}
        if injection_task is not None:
            if injection_task not in self.suite.injection_tasks:
                raise EnvError(unknown_choice(f"AgentDojo {suite_name} injection task", injection_task,
                                              self.suite.injection_tasks))
            self.injection_task = self.suite.injection_tasks[injection_task]
            # Attacks read the model's name from the pipeline's; a stand-in name satisfies the
            # lookup, and attacks that then really address the model by name need attack_model.
            target = _AttackTarget(attack_model or next(iter(MODEL_NAMES)))
            try:
                attacker = load_attack(attack, self.suite, target)
                injections = attacker.attack(self.user_task, self.injection_task)
            except (KeyError, ValueError) as err:
                raise ConfigError(f"AgentDojo attack {attack!r} failed: {err}") from err
            if attack_model is None and getattr(attacker, "model_name", DEFAULT_MODEL_NAME) not in (
                    DEFAULT_MODEL_NAME, None) and attack != "important_instructions_wrong_model_name":
                raise ConfigError(f"AgentDojo attack {attack!r} addresses the model by name: pass "
                                  f"attack_model=<one of {sorted(MODEL_NAMES)[:3]}...>, or use "
                                  f"attack={DEFAULT_ATTACK!r}")
        self._injections = tuple(sorted(injections.items()))
        self._version = version
        self._format = tool_output_format
        self._runtime = FunctionsRuntime(self.suite.tools)
        self.system_prompt = render_tools(tool_schemas(self.suite), system=system_message or load_system_message(None))
        self._pre_env: Any = None
        self._env: Any = None
        self._trace: list[FunctionCall] = []
        self._last_text = ""

    # -- episode --
    def reset(self, *, seed: int | None = None) -> Observation:
        base = _loaded_env(self.suite.name, self._version, self._injections)
        self._env = self.user_task.init_environment(base.model_copy(deep=True))
        self._pre_env = self._env.model_copy(deep=True)
        self._trace, self._last_text = [], ""
        self._start_episode()
        return Observation(self.user_task.PROMPT, info={"task": self.task_id, "seed": seed})

    def step(self, action: str) -> StepResult:
        turn = self._begin_turn(action)
        if isinstance(turn, str):
            return self._invalid(turn, on_truncate=self._score_now)
        self._last_text = turn.content
        if turn.is_final:
            utility, info = self._score(turn.content)
            return self._result(Observation(DONE_TEXT), float(utility), terminated=True, info=info)
        outputs = []
        errors = 0
        for index, call in enumerate(turn.tool_calls):
            try:
                text, error = self._execute(call, index)
            except ToolTimeout as err:
                return self._timed_out(err)
            errors += error is not None
            outputs.append(error if error is not None else text)
        return self._result(Observation(format_tool_results(outputs)), 0.0,
                            info={"tool_errors": errors, "tool_calls": len(turn.tool_calls)},
                            on_truncate=self._score_now)

    def _execute(self, call: ToolCall, index: int) -> tuple[str, str | None]:
        """AgentDojo's ToolsExecutor for one call: (formatted result, error or None)."""
        args = dict(call.arguments)
        function_call = FunctionCall(function=call.name, args=args, id=f"call_{len(self._trace)}")
        self._trace.append(function_call)
        if call.name not in self._runtime.functions:
            return "", f"Invalid tool {call.name} provided."
        for key, value in args.items():  # the executor's own fix-up of list-valued strings
            if isinstance(value, str) and is_string_list(value):
                args[key] = literal_eval(value)
        result, error = self._call(lambda: self._runtime.run_function(self._env, call.name, args),
                                   what=f"tool {call.name}")
        if self._format == "json":
            return tool_result_to_str(result, dump_fn=json.dumps), error
        return tool_result_to_str(result), error

    def _score(self, final_text: str) -> tuple[bool, dict[str, Any]]:
        output = [text_content_block_from_string(final_text)]
        info: dict[str, Any] = {"task": self.task_id}
        try:
            utility = bool(self.suite._check_task_result(self.user_task, output, self._pre_env,
                                                          self._env, self._trace))
        except Exception as err:  # a check that chokes on odd state/output counts as failure
            utility, info["utility_error"] = False, f"{type(err).__name__}: {err}"
        info["utility"] = utility
        if self.injection_task is not None:
            try:
                info["security"] = bool(self.suite._check_task_result(
                    self.injection_task, output, self._pre_env, self._env, self._trace))
            except Exception as err:
                info["security"], info["security_error"] = False, f"{type(err).__name__}: {err}"
        return utility, info

    def _score_now(self) -> float:
        """At the turn limit AgentDojo still scores the state with the last message's text."""
        return float(self._score(self._last_text)[0])

    # -- branching --
    def snapshot(self) -> Any:
        return (self._env.model_copy(deep=True), copy.deepcopy(self._trace), self._turns,
                self._done, self._started, self._last_text)

    def restore(self, snapshot: Any) -> None:
        env, trace, self._turns, self._done, self._started, self._last_text = snapshot
        self._env, self._trace = env.model_copy(deep=True), copy.deepcopy(trace)

    # -- gold --
    def gold_actions(self) -> Sequence[str] | None:
        """The task's ``ground_truth`` calls, then its ground-truth answer.

        One call per turn, as AgentDojo's ground-truth pipeline issues them; when that would not
        fit in ``max_turns`` (travel/user_task_19 has 18 calls) consecutive calls share a turn,
        which the tool executor runs in order, so the state reached is the same.
        """
        env = self.user_task.init_environment(
            _loaded_env(self.suite.name, self._version, self._injections).model_copy(deep=True))
        calls = [ToolCall(c.function, dict(c.args)) for c in self.user_task.ground_truth(env)]
        room = len(calls) if self.max_turns is None else max(1, self.max_turns - 1)
        per_turn = -(-len(calls) // room) if calls else 1
        actions = [format_tool_calls(calls[i:i + per_turn]) for i in range(0, len(calls), per_turn)]
        return [*actions, format_final_answer(self.user_task.GROUND_TRUTH_OUTPUT)]


def agentdojo_tasks(*, split: str = "test", version: str = DEFAULT_VERSION, suites: Sequence[str] = SUITES,
                    injections: bool = False, **kwargs: Any) -> Iterator[Task]:
    """Every user task of ``suites`` (``injections``: every user x injection task pair)."""
    if split != "test":
        raise EnvError(unknown_choice("AgentDojo split", split, ["test"]))
    for suite_name in suites:
        suite = _suite(suite_name, version)
        for user_id in sorted(suite.user_tasks, key=_task_number):
            if not injections:
                yield Task(env="agentdojo", id=f"{suite_name}/{user_id}",
                           kwargs={"task": f"{suite_name}/{user_id}", "version": version, **kwargs})
                continue
            for inj_id in sorted(suite.injection_tasks, key=_task_number):
                yield Task(env="agentdojo", id=f"{suite_name}/{user_id}+{inj_id}",
                           kwargs={"task": f"{suite_name}/{user_id}", "injection_task": inj_id,
                                   "version": version, **kwargs})


def _task_number(task_id: str) -> int:
    return int(task_id.rsplit("_", 1)[1])
