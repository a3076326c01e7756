"""BFCL v4 multi-turn as a ttsearch environment, offline, scored by BFCL's own checker.

    env = make("bfcl", task="multi_turn_base_0")
    obs = env.reset(seed=0)                   # the first user turn; env.system_prompt lists the functions
    env.step('<tool_call>{"name": "cd", "arguments": {"folder": "document"}}</tool_call>')  # results
    env.step("Done.")                         # no tool call: this user turn is over -> next user turn

Tasks are ``Task(env="bfcl", id="multi_turn_<category>_<N>")`` for the categories ``base``,
``miss_func``, ``miss_param`` and ``long_context`` (200 entries each).

It follows BFCL's multi-turn inference loop (``BaseHandler.inference_multi_turn_prompting``
with the Qwen FC handler's format): the function docs go into the system prompt as given; each
user turn is one observation; within a turn every message with tool calls is executed by BFCL's
own executor (``execute_multi_turn_func_call``) on API instances this env creates and owns (the
executor keeps state in module globals: the instances are lent to it under a per-env name for
the call and taken back); a message without a decodable tool call ends the user turn -- as in
BFCL, an unreadable call also ends it (``info["invalid_action"]``). More than 20 tool-call steps
in one turn force-quits the entry (BFCL's ``MAXIMUM_STEP_LIMIT``): truncated, reward 0. In
``miss_func`` the held-out functions arrive with the turn BFCL adds them at. After the last
turn, reward = 1.0 if ``multi_turn_checker`` accepts the whole conversation (state and
execution-result checks after every turn), else 0.0 (``info["checker"]`` says why).

Safety (stricter than BFCL, same score for real calls): BFCL ``eval``s call strings, so only
public methods of the involved API classes with identifier argument names are executed and
scored; anything else is answered with a Python-style error and never evaluated.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import keyword
import re
import uuid
from ast import Call, Name, literal_eval, parse
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

from bfcl_eval.constants.default_prompts import (
    DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC,
    MAXIMUM_STEP_LIMIT,
)
from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES
from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry

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

CATEGORIES: tuple[str, ...] = ("base", "miss_func", "miss_param", "long_context")
DONE_TEXT = "[The conversation is over.]"
_ID = re.compile(r"^multi_turn_(base|miss_func|miss_param|long_context)_(\d+)$")


@cache
def _category(category: str) -> dict[str, tuple[dict, list]]:
    """id -> (dataset entry, ground truth per turn); loaded once, never mutated (copies go out)."""
    entries = load_dataset_entry(f"multi_turn_{category}")
    truths = {g["id"]: g["ground_truth"] for g in load_ground_truth_entry(f"multi_turn_{category}")}
    return {e["id"]: (e, truths[e["id"]]) for e in entries}


def _to_call_string(call: ToolCall) -> str:
    """BFCL's ``convert_to_function_call`` for one call: ``name(k=repr(v),...)``."""
    return f"{call.name}({','.join(f'{k}={v!r}' for k, v in call.arguments.items())})"


class BFCLEnv(ToolCallingEnv):
    """One BFCL multi-turn entry."""

    metadata = {"benchmark": "bfcl_v4_multi_turn"}

    def __init__(self, task: str = "multi_turn_base_0", *, max_turns: int | None = None,
                 step_timeout_s: float | None = 30.0, max_steps_per_turn: int = MAXIMUM_STEP_LIMIT):
        super().__init__(max_turns=max_turns, step_timeout_s=step_timeout_s)
        task = task.removeprefix("bfcl:")
        match = _ID.match(task)
        if not match:
            raise ConfigError(f"BFCL task {task!r} must look like 'multi_turn_<category>_<N>', "
                              f"category one of {', '.join(CATEGORIES)}")
        self.category = match.group(1)
        entries = _category(self.category)
        if task not in entries:
            raise EnvError(f"unknown BFCL entry {task!r}; {self.category} has ids "
                           f"multi_turn_{self.category}_0..{len(entries) - 1}")
        entry, truth = entries[task]
        self.entry, self.ground_truth = copy.deepcopy(entry), copy.deepcopy(truth)
        self.task_id = task
        self.max_steps_per_turn = max_steps_per_turn
        self._long_context = "long_context" in self.category
        self._holdout: dict[str, list[dict]] = self.entry.get("missed_function", {})
        self.system_prompt = render_tools(self.entry["function"])
        self._name = f"ttsearch_{uuid.uuid4().hex}"  # this env's key in the executor's globals
        self._instances: dict[str, Any] = {}
        self._results: list[list[list[str]]] = []
        self._turn_index = 0
        self._steps_in_turn = 0

    # -- episode --
    def reset(self, *, seed: int | None = None) -> Observation:
        self._instances = {}
        for class_name in self.entry["involved_classes"]:
            module = importlib.import_module(CLASS_FILE_PATH_MAPPING[class_name])
            instance = getattr(module, class_name)()
            if class_name not in STATELESS_CLASSES:
                config = copy.deepcopy(self.entry["initial_config"].get(class_name, {}))
                instance._load_scenario(config, long_context=self._long_context)
            self._instances[class_name] = instance
        self._results, self._turn_index, self._steps_in_turn = [[]], 0, 0
        self._start_episode()
        return Observation(self._user_turn_text(0), info={"task": self.task_id, "user_turn": 0, "seed": seed})

    def _user_turn_text(self, index: int) -> str:
        if str(index) in self._holdout:  # BFCL adds the held-out functions with this turn
            tools = "".join(f"\n{json.dumps(doc, ensure_ascii=False)}" for doc in self._holdout[str(index)])
            return f"<tools>{tools}\n</tools>\n{DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC}"
        return "\n\n".join(m["content"] for m in self.entry["question"][index])

    def step(self, action: str) -> StepResult:
        turn = self._begin_turn(action)
        if isinstance(turn, str) or turn.is_final:  # the user turn is over (BFCL: nothing decoded)
            info = {"invalid_action": True, "parse_error": turn} if isinstance(turn, str) else {}
            return self._end_user_turn(info)
        calls = [_to_call_string(c) if self._executable(c) else None for c in turn.tool_calls]
        try:
            outputs = self._call(lambda: self._execute(turn.tool_calls, calls), what="BFCL function calls")
        except ToolTimeout as err:
            return self._timed_out(err)
        self._results[-1].append([c for c in calls if c is not None])
        self._steps_in_turn += 1
        info = {"user_turn": self._turn_index, "step_in_turn": self._steps_in_turn}
        if self._steps_in_turn > self.max_steps_per_turn:
            info["reason"] = f"force-quit: more than {self.max_steps_per_turn} steps in user turn {self._turn_index}"
            self._done = True
            return StepResult(Observation(DONE_TEXT), 0.0, False, True, info)
        return self._result(Observation(format_tool_results(outputs)), 0.0, info=info)

    def _executable(self, call: ToolCall) -> bool:
        methods = {name for inst in self._instances.values() for name, _ in
                   inspect.getmembers(inst, inspect.ismethod) if not name.startswith("_")}
        return call.name in methods and all(k.isidentifier() and not keyword.iskeyword(k) for k in call.arguments)

    def _execute(self, calls: Sequence[ToolCall], strings: list[str | None]) -> list[str]:
        """BFCL's executor on our instances (lent to its globals for the call), in call order."""
        runnable = [s for s in strings if s is not None]
        results: list[str] = []
        if runnable:
            namespace = vars(multi_turn_utils)
            keys = {c: re.sub(r"[-./:]", "_", f"{self._name}_{self.task_id}_{c}_instance") for c in self._instances}
            try:
                for class_name, key in keys.items():
                    namespace[key] = self._instances[class_name]
                results, _ = multi_turn_utils.execute_multi_turn_func_call(
                    runnable, self.entry["initial_config"], self.entry["involved_classes"], self._name,
                    self.task_id, long_context=self._long_context, is_evaL_run=False)
            finally:
                for key in keys.values():
                    namespace.pop(key, None)
        done = iter(results)
        return [next(done) if s is not None else _refusal(c) for c, s in zip(calls, strings, strict=True)]

    def _end_user_turn(self, info: dict[str, Any]) -> StepResult:
        last = len(self.entry["question"]) - 1
        if self._turn_index >= last:
            reward, info["checker"] = self._check()
            return self._result(Observation(DONE_TEXT), reward, terminated=True, info=info)
        self._turn_index += 1
        self._steps_in_turn = 0
        self._results.append([])
        info["user_turn"] = self._turn_index
        return self._result(Observation(self._user_turn_text(self._turn_index)), 0.0, info=info)

    def _check(self) -> tuple[float, dict[str, Any]]:
        """BFCL's ``multi_turn_checker`` on the whole conversation (it re-executes from scratch)."""
        name = f"{self._name}_check"
        try:
            verdict = self._call(lambda: multi_turn_checker(
                copy.deepcopy(self._results), self.ground_truth, self.entry,
                f"multi_turn_{self.category}", name), what="BFCL checker")
        except ToolTimeout as err:
            verdict = {"valid": False, "error_message": str(err)}
        except Exception as err:  # a checker crash on odd input is a failed entry
            verdict = {"valid": False, "error_message": f"{type(err).__name__}: {err}"}
        finally:
            namespace = vars(multi_turn_utils)
            for key in [k for k in namespace if k.startswith(name)]:
                namespace.pop(key, None)
        summary = {k: verdict[k] for k in ("valid", "error_type", "error_message") if k in verdict}
        return (1.0 if verdict.get("valid") else 0.0), summary

    # -- branching --
    def snapshot(self) -> Any:
        return copy.deepcopy((self._instances, self._results, self._turn_index, self._steps_in_turn,
                              self._turns, self._done, self._started))

    def restore(self, snapshot: Any) -> None:
        (self._instances, self._results, self._turn_index, self._steps_in_turn,
         self._turns, self._done, self._started) = copy.deepcopy(snapshot)

    # -- gold --
    def gold_actions(self) -> Sequence[str] | None:
        """Per user turn: the ground-truth calls in one message, then a plain answer ending it."""
        instances = self._instances or self._fresh_instances()
        actions: list[str] = []
        for turn in self.ground_truth:
            if turn:
                actions.append(format_tool_calls([_parse_call(s, instances) for s in turn]))
            actions.append(format_final_answer("Done."))
        return actions

    def _fresh_instances(self) -> dict[str, Any]:
        return {c: getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[c]), c)()
                for c in self.entry["involved_classes"]}


def _parse_call(text: str, instances: dict[str, Any]) -> ToolCall:
    """A ground-truth call string (``f(a, k=v)``) as a ToolCall, positionals named by signature."""
    node = parse(text.strip(), mode="eval").body
    if not isinstance(node, Call) or not isinstance(node.func, Name):
        raise EnvError(f"unexpected BFCL ground-truth call {text!r}")
    name = node.func.id
    method = next(getattr(i, name) for i in instances.values() if callable(getattr(i, name, None)))
    args = [literal_eval(a) for a in node.args]
    kwargs = {k.arg: literal_eval(k.value) for k in node.keywords}
    bound = inspect.signature(method).bind_partial(*args, **kwargs)
    return ToolCall(name, dict(bound.arguments))


def _refusal(call: ToolCall) -> str:
    if not all(k.isidentifier() and not keyword.iskeyword(k) for k in call.arguments):
        return "Error during execution: invalid argument name"
    return f"Error during execution: name '{call.name}' is not defined"


def bfcl_tasks(*, split: str = "test", categories: Sequence[str] = CATEGORIES, **kwargs: Any) -> Iterator[Task]:
    """Every entry of ``categories`` in id order: ``Task(env="bfcl", id="multi_turn_base_0")``."""
    if split != "test":
        raise EnvError(unknown_choice("BFCL split", split, ["test"]))
    for category in categories:
        if category not in CATEGORIES:
            raise EnvError(unknown_choice("BFCL multi-turn category", category, CATEGORIES))
        for entry_id in sorted(_category(category), key=lambda i: int(i.rsplit("_", 1)[1])):
            yield Task(env="bfcl", id=entry_id, kwargs={"task": entry_id, **kwargs})
