"""``ttsearch run``: experiments from a typed YAML config, one kill-safe JSON line per episode.

- ``config.py``: :class:`RunConfig` (pydantic; every error one line naming field and fix).
- ``runner.py``: builds the pair, tasks, scorers and arms; plays tasks x arms x seeds.
- ``episode_record.py``: an episode's row (trajectory, every scorer's scores, usage).
- ``jsonl_log.py``: the crash-safe JSONL reader and writer every resumable command uses.

The row format is documented in ``docs/run_schema.md``.
"""
