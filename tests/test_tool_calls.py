"""The shared tool-call format: rendering matches the Qwen chat template, parsing is robust."""

from __future__ import annotations

import json

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttsearch.envs.adapters import tool_calls as tc
from ttsearch.envs.errors import ParseError

# The tools part of the official Qwen2.5/Qwen3 chat template (verbatim), rendered by jinja2 with
# the `tojson` filter transformers installs (json.dumps, no HTML escaping): the independent truth.
QWEN_TOOLS_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}"
    "{%- for tool in tools %}{{- \"\\n\" }}{{- tool | tojson }}{%- endfor %}"
    "{{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": "
    "<function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}"
    "{%- endif %}"
)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city, in °C.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SEND = {"name": "send_email", "description": "Send <mail> & more",
        "parameters": {"type": "object", "properties": {"to": {"type": "array"}}}}


def qwen_render(system: str, tools: list[dict]) -> str:
    env = jinja2.Environment()
    env.filters["tojson"] = lambda x: json.dumps(x, ensure_ascii=False)
    return env.from_string(QWEN_TOOLS_TEMPLATE).render(
        messages=[{"role": "system", "content": system}], tools=tools)


def test_render_tools_matches_the_qwen_chat_template():
    system = "You are a helpful assistant."
    ours = tc.render_tools([WEATHER, SEND], system=system, final_answer_hint=False)
    expected = qwen_render(system, [WEATHER, SEND])
    assert "<|im_start|>system\n" + ours + "<|im_end|>\n" == expected
    with_hint = tc.render_tools([WEATHER], system=system)
    assert with_hint.endswith(tc.FINAL_ANSWER_HINT) and "<tool_call>" in with_hint
    assert tc.render_tools([], system=system) == system


def test_round_trip_of_canonical_calls():
    calls = [tc.ToolCall("get_weather", {"city": "Paris"}), tc.ToolCall("noop", {})]
    text = tc.format_tool_calls(calls, content="Let me check.")
    turn = tc.parse_turn(text)
    assert list(turn.tool_calls) == calls and turn.content == "Let me check." and not turn.is_final


@pytest.mark.parametrize("text, expected", [
    # two blocks, the second without its closing tag
    ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>{"name": "b", "arguments": {}}',
     [("a", {"x": 1}), ("b", {})]),
    # a missing close between two blocks
    ('<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b", "arguments": {"y": [1, 2]}}</tool_call>',
     [("a", {}), ("b", {"y": [1, 2]})]),
    # a code fence inside the tag
    ('<tool_call>\n```json\n{"name": "a", "arguments": {"q": "hi"}}\n```\n</tool_call>', [("a", {"q": "hi"})]),
    # single quotes, Python literals, trailing commas
    ("<tool_call>{'name': 'a', 'arguments': {'flag': True, 'none': None, 'n': -2,},}</tool_call>",
     [("a", {"flag": True, "none": None, "n": -2})]),
    # JSON literals and a trailing comma together
    ('<tool_call>{"name": "a", "arguments": {"ok": true, "v": null,}}</tool_call>', [("a", {"ok": True, "v": None})]),
    # generation cut before the closing braces
    ('<tool_call>{"name": "a", "arguments": {"city": "Paris"', [("a", {"city": "Paris"})]),
    # OpenAI style with the arguments as a JSON string, and "parameters" for "arguments"
    ('<tool_call>{"type": "function", "function": {"name": "a", "arguments": "{\\"k\\": 3}"}}</tool_call>',
     [("a", {"k": 3})]),
    ('<tool_call>{"name": "a", "parameters": {"k": "v"}}</tool_call>', [("a", {"k": "v"})]),
    # a list of calls in one block; no arguments at all
    ('<tool_call>[{"name": "a", "arguments": {}}, {"name": "b"}]</tool_call>', [("a", {}), ("b", {})]),
    # trailing text after the object inside the block
    ('<tool_call>{"name": "a", "arguments": {}} and then</tool_call>', [("a", {})]),
    # a bare JSON call object as the whole message, fenced or not
    ('{"name": "a", "arguments": {"x": "1"}}', [("a", {"x": "1"})]),
    ('```json\n[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"z": 0}}]\n```', [("a", {}), ("b", {"z": 0})]),
    # a call on its own line after some text
    ('I will look it up.\n{"name": "search", "arguments": {"q": "x"}}\nDone.', [("search", {"q": "x"})]),
])
def test_lenient_parsing(text, expected):
    calls = tc.parse_tool_calls(text)
    assert [(c.name, dict(c.arguments)) for c in calls] == expected


def test_thinking_is_dropped_and_kept_apart():
    text = '<think>maybe <tool_call>{"name": "wrong", "arguments": {}}</tool_call></think>\n' \
           '<tool_call>{"name": "right", "arguments": {}}</tool_call>'
    turn = tc.parse_turn(text)
    assert [c.name for c in turn.tool_calls] == ["right"] and "maybe" in turn.thought
    # Qwen3 opens <think> in the prompt: the reply only closes it
    turn = tc.parse_turn("reasoning here</think>\n\nThe answer is 4.")
    assert turn.is_final and turn.content == "The answer is 4." and turn.thought == "reasoning here"
    # cut off while thinking: no action
    turn = tc.parse_turn('<think>let me call {"name": "a", "arguments": {}}')
    assert turn.is_final and turn.content == ""


@pytest.mark.parametrize("text", [
    "The weather in Paris is sunny.",
    '{"answer": "Paris", "context": "capital"}',          # JSON, but not a call
    '{"name": "Emma", "age": 3}',                          # has "name" but no arguments: an answer
    "Use the format {name: x} if you like.",
    "",
])
def test_plain_text_is_a_final_answer(text):
    turn = tc.parse_turn(text)
    assert turn.is_final and turn.content == text.strip()


@pytest.mark.parametrize("text, fragment", [
    ("<tool_call>not json at all</tool_call>", "block 1"),
    ("<tool_call></tool_call>", "empty"),
    ('<tool_call>{"arguments": {}}</tool_call>', "no function name"),
    ('<tool_call>{"name": "a", "arguments": [1, 2]}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "a", "arguments": "not json"}</tool_call>', "arguments string is not JSON"),
    ('<tool_call>{"name": "ok", "arguments": {}}</tool_call><tool_call>"str"</tool_call>', "block 2"),
    ('{"name": "a", "arguments": {"x": }', "could not read"),
])
def test_unreadable_calls_raise_parse_error_naming_the_problem(text, fragment):
    with pytest.raises(ParseError) as info:
        tc.parse_turn(text)
    assert fragment in str(info.value) and "tool_call" in str(info.value)


def test_format_helpers():
    assert tc.format_tool_results(["a", "b"]) == "<tool_response>\na\n</tool_response>\n<tool_response>\nb\n</tool_response>"
    assert tc.format_final_answer("  done ") == "done"
    with pytest.raises(ParseError):
        tc.format_final_answer("<tool_call>{}</tool_call>")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,12}", fullmatch=True),
                          st.dictionaries(st.text(max_size=6), json_values, max_size=4)),
                min_size=1, max_size=3),
       st.text(alphabet=st.characters(blacklist_characters="<{[`"), max_size=20))
def test_round_trip_property(calls, content):
    calls = [tc.ToolCall(name, args) for name, args in calls]
    turn = tc.parse_turn(tc.format_tool_calls(calls, content=content))
    assert list(turn.tool_calls) == calls and turn.content == content.strip()
