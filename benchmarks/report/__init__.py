"""``ttsearch report``: the paper's three applications computed from a run folder alone.

- ``tables.py``: load ``run.json`` + ``episodes.jsonl`` and build every table.
- ``metrics_tts.py`` / ``metrics_uq.py`` / ``metrics_fa.py``: test-time scaling, uncertainty
  quantification and failure-attribution metrics.
- ``budget_tuning.py``: the compute-optimal arm per task difficulty.
- ``plots.py``: the PNG figures.
- ``whowhen_attribution.py``: failure attribution on Who&When-format logs (``ttsearch attribute``).
"""
