"""``python -m ttsearch.benchmarks.cli ARGS`` runs the ``ttsearch`` command line."""

from ttsearch.benchmarks.cli import main

raise SystemExit(main())
