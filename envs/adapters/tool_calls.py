"""Tool calls in model text: tool schemas into a system prompt, tool calls back out of a reply.

The format is the one Qwen/Hermes chat templates use (and BFCL's Qwen FC handler copies)::

    system   ... "# Tools ... <tools>\\n{schema}\\n{schema}\\n</tools> ... <tool_call>...</tool_call>"
    assistant  optional thought, then one or more <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>
    assistant  text with no tool call = a final answer / a message to the user
    user     <tool_response>\\nresult\\n</tool_response>   (one block per call, in call order)

    system = render_tools(schemas, system="You are a helpful assistant.")
    turn = parse_turn(model_text)            # ParsedTurn(content, tool_calls, thought); raises ParseError
    if turn.is_final: answer = turn.content
    text = format_tool_calls([ToolCall("get_weather", {"city": "Paris"})])   # canonical action text
    obs = format_tool_results(["sunny"])

The parser is lenient where the intent is unambiguous: missing ``</tool_call>``, code fences,
single quotes, Python literals (True/None), trailing commas, unclosed braces at the end, an
OpenAI-style ``{"function": {"name", "arguments": "<json string>"}}``, ``parameters`` for
``arguments``, a bare JSON call object (whole message, or a line starting with ``{"name"``),
and ``<think>...</think>`` reasoning (dropped). A message that *attempts* a call but cannot be
read raises :class:`ParseError` naming what was wrong; plain text is a final answer.

This lives with the adapters (the bottom of the dependency chain) because tool-calling
environments parse their own actions.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttsearch.envs.errors import ParseError

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
FINAL_ANSWER_HINT = (
    "When you need no more function calls, answer the user in plain text without any <tool_call> tag."
)
EXPECTED = '<tool_call>{"name": "<function-name>", "arguments": {<args>}}</tool_call>'

_TOOL_CALL = re.compile(r"<tool_call\s*>(.*?)(?:</tool_call\s*>|(?=<tool_call\s*>)|\Z)",
                        re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ATTEMPT = re.compile(r"""^\s*\[?\s*\{\s*["']?(name|function)["']?\s*:""")
_LINE_CALL = re.compile(r"""^[ \t]*\{\s*["']name["']\s*:""", re.MULTILINE)
_EMPTY_FENCE = re.compile(r"```[\w-]*\s*```")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call: its name and its keyword arguments (a JSON object)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": dict(self.arguments)}, ensure_ascii=False)

    def to_text(self) -> str:
        """The canonical ``<tool_call>`` block (what the chat templates render)."""
        return f"<tool_call>\n{self.to_json()}\n</tool_call>"


@dataclass(frozen=True, slots=True)
class ParsedTurn:
    """An assistant message split into its thought, its text content and its tool calls."""

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    thought: str = ""

    @property
    def is_final(self) -> bool:
        """No tool call: the message is a final answer / a message to the user."""
        return not self.tool_calls


def render_tools(tools: Sequence[Mapping[str, Any]], *, system: str = "",
                 final_answer_hint: bool = True) -> str:
    """The system prompt a Qwen/Hermes chat template builds from ``tools`` (schemas as given).

    Each schema is dumped with ``json.dumps`` on its own line, exactly as the template's
    ``tool | tojson`` does; pass OpenAI-style ``{"type": "function", "function": {...}}``
    entries or bare ``{"name", "description", "parameters"}`` ones, whichever the benchmark uses.
    """
    if not tools:
        return system
    body = "".join("\n" + json.dumps(dict(tool), ensure_ascii=False) for tool in tools)
    prompt = (system + "\n\n" if system else "") + TOOLS_HEADER + body + TOOLS_FOOTER
    return prompt + ("\n\n" + FINAL_ANSWER_HINT if final_answer_hint else "")


def format_tool_calls(calls: Sequence[ToolCall], *, content: str = "") -> str:
    """Action text for ``calls`` (optionally after some text), parseable by :func:`parse_turn`."""
    blocks = "\n".join(call.to_text() for call in calls)
    return f"{content.strip()}\n{blocks}" if content.strip() else blocks


def format_final_answer(text: str) -> str:
    """Action text for a final answer / message to the user (plain text, no tool call)."""
    text = text.strip()
    if "<tool_call" in text.lower():
        raise ParseError("a final answer must not contain a <tool_call> tag")
    return text


def format_tool_results(results: Sequence[str]) -> str:
    """Tool outputs as the chat templates show them to the model: one block per call."""
    return "\n".join(f"<tool_response>\n{result}\n</tool_response>" for result in results)


def loads_lenient(text: str) -> Any:
    """Parse a JSON value, tolerating fences, trailing text, Python literals, unclosed braces."""
    text = _strip_fence(text.strip())
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        first_error = err
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError(f"no JSON object in {text[:60]!r}: {first_error.msg}")
    text = text[start:]
    for candidate in (text, text + _missing_closers(text)):
        try:
            return json.JSONDecoder().raw_decode(candidate)[0]
        except json.JSONDecodeError:
            pass
        try:
            return _python_literal(candidate)
        except (SyntaxError, ValueError):
            pass
    raise ValueError(f"invalid JSON ({first_error.msg} at char {first_error.pos}) in {text[:80]!r}")


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The tool calls in ``text`` ([] for a plain-text answer); raises ParseError if unreadable."""
    return list(parse_turn(text).tool_calls)


def parse_turn(text: str) -> ParsedTurn:
    """Split an assistant message into thought, content and tool calls (see module docstring)."""
    if not isinstance(text, str):
        raise ParseError(f"model output must be a string, got {type(text).__name__}")
    thought, rest = _split_thought(text)
    blocks = list(_TOOL_CALL.finditer(rest))
    if blocks:
        calls: list[ToolCall] = []
        for index, match in enumerate(blocks, 1):
            calls.extend(_calls_from_block(match.group(1), index))
        content = _TOOL_CALL.sub("", rest).strip()
        return ParsedTurn(content, tuple(calls), thought)
    body = _strip_fence(rest.strip())
    if _ATTEMPT.match(body):
        try:
            value = loads_lenient(body)
        except ValueError as err:
            raise ParseError(f"could not read the JSON call object: {err}; expected {EXPECTED}") from None
        if _is_call_shaped(value):  # else it is an answer that happens to be JSON
            return ParsedTurn("", tuple(_calls_from_value(value, 1)), thought)
        return ParsedTurn(rest.strip(), (), thought)
    line = _LINE_CALL.search(rest)
    if line:
        decoded, end = _decode_at(rest, line.start())
        if _is_call_shaped(decoded):
            content = _EMPTY_FENCE.sub("", rest[: line.start()] + rest[end:]).strip()
            return ParsedTurn(content, tuple(_calls_from_value(decoded, 1)), thought)
    return ParsedTurn(rest.strip(), (), thought)


# -- helpers --

def _split_thought(text: str) -> tuple[str, str]:
    thoughts = [m.group(1).strip() for m in _THINK.finditer(text)]
    text = _THINK.sub("", text)
    if "</think>" in text:  # the template opened <think> in the prompt
        head, _, text = text.partition("</think>")
        thoughts.insert(0, head.strip())
    elif "<think>" in text:  # thinking never closed (cut off): nothing after it is an action
        text, _, tail = text.partition("<think>")
        thoughts.append(tail.strip())
    return "\n".join(t for t in thoughts if t), text


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text


def _calls_from_block(body: str, index: int) -> list[ToolCall]:
    where = f"<tool_call> block {index}"
    if not body.strip():
        raise ParseError(f"{where} is empty; expected {EXPECTED}")
    try:
        value = loads_lenient(body)
    except ValueError as err:
        raise ParseError(f"could not read {where}: {err}; expected {EXPECTED}") from None
    return _calls_from_value(value, index, where=where)


def _is_call_shaped(value: Any) -> bool:
    """A bare JSON value that reads as call(s): ``name`` + arguments, or an OpenAI ``function``."""
    if isinstance(value, list):
        return bool(value) and all(_is_call_shaped(v) for v in value)
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("function"), dict):
        return True
    return "name" in value and any(k in value for k in ("arguments", "parameters", "args"))


def _decode_at(text: str, start: int) -> tuple[Any, int]:
    try:
        return json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        pass
    line_end = text.find("\n", start)
    chunk = text[start:] if line_end < 0 else text[start:line_end]
    try:
        return loads_lenient(chunk), start + len(chunk)
    except ValueError as err:
        raise ParseError(f"could not read the JSON call object: {err}; expected {EXPECTED}") from None


def _calls_from_value(value: Any, index: int, *, where: str | None = None) -> list[ToolCall]:
    where = where or f"tool call {index}"
    if isinstance(value, list):
        if not value:
            raise ParseError(f"{where} is an empty list; expected {EXPECTED}")
        return [call for item in value for call in _calls_from_value(item, index, where=where)]
    if not isinstance(value, dict):
        raise ParseError(f"{where} is a JSON {type(value).__name__}, not an object; expected {EXPECTED}")
    if "name" not in value and isinstance(value.get("function"), dict):
        value = value["function"]  # OpenAI style: {"type": "function", "function": {...}}
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ParseError(f"{where} has no function name (a non-empty 'name' string); expected {EXPECTED}")
    args: Any = next((value[k] for k in ("arguments", "parameters", "args") if k in value), {})
    if args is None:
        args = {}
    if isinstance(args, str):
        try:
            args = loads_lenient(args) if args.strip() else {}
        except ValueError as err:
            raise ParseError(f"{where} ({name}): arguments string is not JSON: {err}") from None
    if not isinstance(args, dict):
        raise ParseError(f"{where} ({name}): arguments must be a JSON object, got {type(args).__name__}")
    return [ToolCall(name.strip(), {str(k): v for k, v in args.items()})]


def _missing_closers(text: str) -> str:
    """The brackets that would close what ``text`` left open (outside strings)."""
    stack: list[str] = []
    quote = ""
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack and stack[-1] == ch:
            stack.pop()
    return quote + "".join(reversed(stack))


_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _python_literal(text: str) -> Any:
    """A Python/JSON literal (single quotes, trailing commas, true/null) without ``eval``."""
    node = ast.parse(text.strip(), mode="eval").body

    def convert(n: ast.AST) -> Any:
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name) and n.id in _NAMES:
            return _NAMES[n.id]
        if isinstance(n, ast.Dict):
            if any(k is None for k in n.keys):
                raise ValueError("dict unpacking is not a literal")
            return {convert(k): convert(v) for k, v in zip(n.keys, n.values, strict=True)}
        if isinstance(n, ast.List | ast.Tuple):
            return [convert(e) for e in n.elts]
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
            operand = convert(n.operand)
            if isinstance(operand, int | float):
                return -operand if isinstance(n.op, ast.USub) else operand
        raise ValueError(f"not a literal: {ast.dump(n)[:60]}")

    return convert(node)
