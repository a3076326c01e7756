"""The run folder: ``OUT/run.json`` (the manifest, once) and ``OUT/episodes.jsonl`` (one row per
finished episode), crash-safe and resumable.

    store = RunStore(out, manifest, resume=True)       # refuses a changed config
    store.done, store.errored                          # keys finished cleanly / ended by an env fault
    store.append(row)                                  # one whole line, fsync'ed; one writer per run
    rows = latest_rows(read_rows(out / "episodes.jsonl"))   # what a reader should use

A key appears once, except that a later row may supersede an *error* row of the same key
(``ttsearch run --resume --retry-errors`` reruns errored episodes and appends their new rows):
readers keep the last row of each key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.envs.errors import ConfigError

SPLIT_WRITE_ENV = "TTSEARCH_RUN_SPLIT_WRITE_S"
"""Test hook: seconds to pause between the two halves of a row's write (0: one write). The crash
test sets it to SIGKILL the runner mid-line and prove the resume repairs the file."""


def episode_key(arm: str, task_id: str, seed: int) -> str:
    return f"{arm}|{task_id}|{seed}"


def key_hash(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last row of each key, in first-appearance order (a retried error row is replaced)."""
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        last[row["key"]] = row
    return list(last.values())


class RunStore:
    """``OUT/run.json`` + ``OUT/episodes.jsonl`` (see the module docstring)."""

    def __init__(self, out: str | Path, manifest: dict[str, Any], *, resume: bool):
        self.out = Path(out)
        self.episodes = self.out / "episodes.jsonl"
        self.manifest_path = self.out / "run.json"
        old = self.check(self.out, manifest["config_hash"], resume=resume)
        if old is not None:
            self.manifest = old
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            self.manifest = manifest
            tmp = self.manifest_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(manifest, indent=1) + "\n")
            os.replace(tmp, self.manifest_path)  # atomic: run.json is whole or absent
        self.done, self.errored = self._load()
        self._sink = JsonlWriter(self.episodes, split_pause_s=float(os.environ.get(SPLIT_WRITE_ENV, "0") or 0))

    @staticmethod
    def check(out: Path, config_hash: str, *, resume: bool) -> dict[str, Any] | None:
        """The existing manifest in ``out`` (None if none); refuse a clash before any work."""
        path = Path(out) / "run.json"
        if not path.exists():
            return None
        old = json.loads(path.read_text())
        if not resume:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose a new --out")
        if old.get("config_hash") != config_hash:
            raise ConfigError(f"--resume: {out} was run with another config (hash {old.get('config_hash')} != "
                              f"{config_hash}); use a new --out, or resume with the same config")
        return old

    def _load(self) -> tuple[set[str], set[str]]:
        """(finished keys, errored keys) of the rows on disk; a torn last line is cut off."""
        done: set[str] = set()
        errored: set[str] = set()
        for number, row in enumerate(read_rows(self.episodes), 1):
            key = row.get("key")
            if key is None:
                raise ConfigError(f"{self.episodes} line {number} is not an episode row; "
                                  "move the file away and rerun, or use a new --out")
            if key in done:
                raise ConfigError(f"{self.episodes} holds key {key!r} twice (line {number}); it was not "
                                  "written by `ttsearch run`; use a new --out")
            errored.discard(key)
            (errored if row.get("error") else done).add(key)
        return done, errored

    def append(self, row: dict[str, Any]) -> None:
        """Write one finished episode (the only writer: rows are whole lines in finishing order)."""
        self._sink.append(row)
        if row.get("error"):
            self.errored.add(row["key"])
        else:
            self.errored.discard(row["key"])
            self.done.add(row["key"])

    def close(self) -> None:
        self._sink.close()
