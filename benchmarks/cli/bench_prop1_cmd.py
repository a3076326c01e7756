"""`ttsearch bench prop1`: Proposition 1 measured, progress advantage vs the exact soft advantage.

    ttsearch bench prop1 --json                     # the shipped default pair, 50 held-out layouts
    ttsearch bench prop1 --pair runs/maze-pair --layouts 100
    ttsearch bench prop1 --pair default:smollm2-maze --json   # a real LM pair (LoRA over SmolLM2)

What is measured: ``ttsearch.benchmarks.perf.prop1`` (tiny from-scratch pairs) and
``ttsearch.benchmarks.perf.prop1_lm`` (any other maze pair: its chat template and move turns).
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.perf.prop1 import measure
from ttsearch.benchmarks.perf.prop1_lm import is_tiny_recipe_pair, measure_pair
from ttsearch.envs.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", default=None,
                        help="pair folder or default:NAME of a shipped pair (default: the shipped maze pair)")
    parser.add_argument("--layouts", type=int, default=50, help="held-out layouts to use (default 50)")
    parser.add_argument("--split", default="test", choices=("test", "train"),
                        help="layouts to measure on (default: held-out 'test')")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    if args.layouts < 1:
        raise ConfigError(f"--layouts must be >= 1, got {args.layouts}")
    pair = args.pair or "default:maze"
    pair_dir = default_pair_dir(pair.removeprefix("default:")) if pair.startswith("default:") else pair
    run = measure if is_tiny_recipe_pair(PairManifest.read(pair_dir)) else measure_pair
    result = run(pair_dir, layouts=args.layouts, split=args.split)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    table = Table(title=f"Proposition 1 on {result['n_states']} {result['split']}-split states ({result['n_pairs']} state-action pairs)")
    for column in ("score", "spearman", "pearson", "argmax = argmax A*", "argmax hard-optimal"):
        table.add_column(column)
    for name in ("pa", "pa_whole_turn", "policy_logprob"):
        m = result[name]
        table.add_row(name, f"{m['spearman']:.3f}", f"{m['pearson']:.3f}", f"{m['argmax_agreement']:.3f}",
                      f"{m['hard_optimal_agreement']:.3f}")
    Console().print(table)
    return 0
