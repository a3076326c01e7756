"""Tool calls in model text, for the agent side: render tool schemas, parse replies.

    from ttsearch.agents.tool_calls import ToolCall, parse_turn, render_tools, format_tool_calls
    system = render_tools(schemas, system="You are a helpful assistant.")
    turn = parse_turn(reply)          # ParsedTurn(content, tool_calls, thought); ParseError if unreadable

The implementation lives in :mod:`ttsearch.envs.tool_calls`: tool-calling environments parse
their own actions and ``envs`` may not import ``agents`` (dependencies point envs <- agents).
This module is the agent-facing name for the same objects, so prompts the agent renders and
actions the environment parses can never drift apart.
"""

from ttsearch.envs.tool_calls import (
    EXPECTED,
    FINAL_ANSWER_HINT,
    TOOLS_FOOTER,
    TOOLS_HEADER,
    ParsedTurn,
    ToolCall,
    format_final_answer,
    format_tool_calls,
    format_tool_results,
    loads_lenient,
    parse_tool_calls,
    parse_turn,
    render_tools,
)

__all__ = [
    "EXPECTED", "FINAL_ANSWER_HINT", "TOOLS_FOOTER", "TOOLS_HEADER", "ParsedTurn", "ToolCall",
    "format_final_answer", "format_tool_calls", "format_tool_results", "loads_lenient",
    "parse_tool_calls", "parse_turn", "render_tools",
]
