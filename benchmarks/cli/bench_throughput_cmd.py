"""`ttsearch bench throughput`: episodes/s at several episodes-in-flight, every workload side by side.

    ttsearch bench throughput --json                     # maze, SmolLM2 embedded and on SGLang, scoring
    ttsearch bench throughput --maze-episodes 32 --no-sglang --json

What is run and reported: ``ttsearch.benchmarks.perf.throughput``. Needs the SmolLM2 pair
(``make smollm2`` and ``ttsearch pair import-gguf``); SGLang's CPU runtime for ``sglang_smollm2``.
"""

from __future__ import annotations

import argparse
import json
import sys

from ttsearch.benchmarks.perf.throughput import ThroughputSettings, measure


def _levels(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--maze-episodes", type=int, default=64, help="held-out mazes per level (default 64)")
    parser.add_argument("--maze-levels", type=_levels, default=(1, 4, 16, 64), help="default 1,4,16,64")
    parser.add_argument("--smollm2-episodes", type=int, default=32, help="held-out chain_sum items (default 32)")
    parser.add_argument("--smollm2-levels", type=_levels, default=(1, 4, 16), help="default 1,4,16")
    parser.add_argument("--sglang-levels", type=_levels, default=(1, 16), help="default 1,16")
    parser.add_argument("--no-sglang", action="store_true", help="skip the SGLang workload")
    parser.add_argument("--no-scoring", action="store_true", help="skip the prefix-cache scoring ratios")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    settings = ThroughputSettings(maze_episodes=args.maze_episodes, maze_levels=args.maze_levels,
                                  smollm2_episodes=args.smollm2_episodes, smollm2_levels=args.smollm2_levels,
                                  sglang_levels=args.sglang_levels, sglang=not args.no_sglang,
                                  scoring=not args.no_scoring)
    out = measure(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for name, figures in out.items():
        print(name, json.dumps({k: v for k, v in figures.items() if k != "differing_episodes"}))
    return 0
