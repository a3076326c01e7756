"""Crash-safe JSON-lines files: a torn last line is cut, never glued onto the next row."""

from __future__ import annotations

import json

import pytest

from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.envs.errors import ConfigError


def test_torn_last_line_is_cut_and_the_next_append_starts_clean(tmp_path):
    path = tmp_path / "rows.jsonl"
    with JsonlWriter(path) as sink:
        sink.append({"task": "a"})
        sink.append({"task": "b"})
    path.write_bytes(path.read_bytes() + b'{"task": "c", "succ')  # a crash mid-write
    assert read_rows(path) == [{"task": "a"}, {"task": "b"}]
    with JsonlWriter(path) as sink:
        sink.append({"task": "c"})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"task": "a"}, {"task": "b"}, {"task": "c"}]
    assert read_rows(tmp_path / "absent.jsonl") == []


def test_damaged_line_inside_the_file_is_a_clear_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"task": "a"}\nnot json\n{"task": "b"}\n')
    with pytest.raises(ConfigError, match="line 2 is not a JSON row"):
        read_rows(path)


def test_split_write_hook_writes_one_row_in_two_halves(tmp_path):
    path = tmp_path / "rows.jsonl"
    with JsonlWriter(path, split_pause_s=0.01) as sink:
        sink.append({"task": "a", "n": 1})
    assert read_rows(path) == [{"task": "a", "n": 1}]
