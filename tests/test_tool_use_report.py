"""The tool-use table of a run folder (issue 16): counts against a hand-built run, contexts against
the tokenizer's chat template over the recorded messages."""

from __future__ import annotations

import json

import pytest

from ttsearch.benchmarks.report.tool_use import classify, markdown, tool_use_table, turn_contexts
from ttsearch.envs.errors import ConfigError
from ttsearch.training.tiny_model import train_tokenizer

from tolerances import EXACT

CALL = '<tool_call>\n{"name": "ls", "arguments": {}}\n</tool_call>'
BROKEN = '<tool_call>\n{"name": "ls", "arguments": {"a": 1\n</tool_call>extra }}'
SYSTEM = "You have tools."


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([CALL, BROKEN, SYSTEM, "list the files please", "a.txt b.txt"] * 20, vocab_size=300)


def _row(arm: str, task: str, actions: list[str], reward: float, error=None) -> dict:
    steps = [{"observation": f"obs {i}", "action_text": a} for i, a in enumerate(actions)]
    return {"key": f"{arm}|{task}|0", "arm": arm, "task": {"id": task, "role": "test"}, "error": error,
            "n_steps": len(actions), "reward": reward, "success": reward == 1.0, "trajectory": {"steps": steps}}


def _run(tmp_path, rows, system=SYSTEM):
    (tmp_path / "run.json").write_text(json.dumps({"prompt": {"system_prompt": system},
                                                   "config": {"sampling": {"max_new_tokens": 8}}}))
    (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_classify_reads_messages_as_the_env_does():
    assert classify(CALL) == "call"
    assert classify("Here are your files.") == "text"
    assert classify('<tool_call>{"arguments": {}}</tool_call>') == "error"  # no function name


def test_the_table_counts_calls_errors_turns_and_rewards(tmp_path, tok):
    rows = [_row("greedy", "t0", [CALL, CALL, "done"], 1.0), _row("greedy", "t1", ["hello"], 0.0),
            _row("greedy", "t2", [CALL], 0.0, error={"kind": "raised"}),  # error rows are left out
            _row("bo4", "t0", ['<tool_call>{"arguments": {}}</tool_call>', CALL], 0.0)]
    table = {r["arm"]: r for r in tool_use_table(_run(tmp_path, rows), tok, max_positions=10_000)}
    g, b = table["greedy"], table["bo4"]
    assert (g["episodes"], g["call_rate"], g["text_rate"], g["parse_error_rate"]) == (2, 2 / 4, 2 / 4, 0.0)
    assert g["turns"] == pytest.approx(2.0, abs=EXACT) and g["reward"] == g["success"] == 0.5
    assert (b["call_rate"], b["parse_error_rate"], b["over"]) == (0.5, 0.5, 0)
    assert "| greedy | 2 |" in markdown(list(table.values()))


def test_contexts_are_the_chat_template_over_the_history(tmp_path, tok):
    row = _row("greedy", "t0", [CALL, "done"], 1.0)
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "obs 0"}]
    second = [*first, {"role": "assistant", "content": CALL}, {"role": "user", "content": "obs 1"}]
    want = [len(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True)["input_ids"])
            for m in (first, second)]
    assert turn_contexts(row, SYSTEM, tok) == want
    table = tool_use_table(_run(tmp_path, [row]), tok, max_positions=want[1] + 8 - 1)
    assert (table[0]["context_max"], table[0]["over"]) == (want[1], 1)  # the second prompt + 8 is 1 over


def test_a_run_without_a_recorded_system_prompt_is_refused(tmp_path, tok):
    with pytest.raises(ConfigError, match="records no system prompt"):
        tool_use_table(_run(tmp_path, [_row("greedy", "t0", ["x"], 0.0)], system=None), tok)
