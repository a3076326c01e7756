"""Performance and correctness benchmarks (``ttsearch bench ...``): they measure and print ratios
side by side in one run; tests never assert on wall time.

- ``prop1.py``: Proposition 1 — PA against the exact soft advantage of the maze.
- ``search.py``: controllers x scorers at equal token budget.
- ``prefix_cache.py`` (+ ``prefix_cache_beam.py``, ``naive_generate.py``): the radix prefix cache.
- ``engines.py`` (+ ``engine_replay.py``, ``engine_stats.py``): SGLang against the embedded engine.
"""
