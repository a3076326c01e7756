"""ttsearch.benchmarks: the experiment runner, reports, benchmarks and the ``ttsearch`` CLI.

- ``run/``: ``ttsearch run`` (configs, the episode loop, kill-safe JSONL).
- ``report/``: ``ttsearch report`` (the three applications, plots, budget tuning).
- ``perf/``: ``ttsearch bench ...`` (Proposition 1, search at equal budget, engines, caches).
- ``cli/``: one thin module per command (``configure`` + ``main``).
- ``configs/``: run configs shipped as package data.
"""
