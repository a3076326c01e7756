"""Append-only JSON-lines result files that survive a crash (kill -9 at any moment).

    rows = read_rows(path)                    # every whole row; a torn last line is cut off first
    with JsonlWriter(path) as sink:
        sink.append({"task": "maze-3", "success": True})   # one write, flushed and fsync'ed

Every resumable command (``run``, ``demo``, ``bench search``, ``attribute``) reads and appends
through these two, so a rerun after a crash neither loses nor duplicates a finished row and
never glues a new row onto a half-written one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ttsearch.envs.errors import ConfigError


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of ``path`` ([] when absent). A trailing partial line (a crash mid-write) is
    truncated from the file; a damaged line elsewhere raises ConfigError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with path.open("r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    rows = []
    for number, line in enumerate(data[:keep].splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise ConfigError(f"{path} line {number} is not a JSON row; move the file away and rerun, "
                              "or use a new output folder")
        rows.append(row)
    return rows


class JsonlWriter:
    """Appends one row per call as a single write, flushed and fsync'ed before returning."""

    def __init__(self, path: str | Path, *, split_pause_s: float = 0.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("ab")
        self._split_pause_s = split_pause_s
        """Crash-test hook: write each row in two halves this many seconds apart (0: one write)."""

    def append(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, separators=(",", ":")) + "\n").encode()
        if self._split_pause_s > 0:
            half = len(data) // 2
            self._write(data[:half])
            time.sleep(self._split_pause_s)
            data = data[half:]
        self._write(data)

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
