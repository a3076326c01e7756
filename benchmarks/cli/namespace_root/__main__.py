"""``python -m ttsearch ARGS``: the ``ttsearch`` command line.

This folder is the namespace root ``ttsearch`` itself (``pyproject.toml`` maps it there): it holds
only this file, so ``ttsearch`` stays a namespace package whose subpackages are the top-level
folders of the repository.
"""

from ttsearch.benchmarks.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
