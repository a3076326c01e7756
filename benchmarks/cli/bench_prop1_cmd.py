"""`ttsearch bench prop1`: Proposition 1 measured, progress advantage vs the exact soft advantage.

    ttsearch bench prop1 --json                     # the shipped default pair, 50 held-out layouts
    ttsearch bench prop1 --pair runs/maze-pair --layouts 100
    ttsearch bench prop1 --rollouts 16 --json       # + sampled turns: log-ratios of parseable vs
                                                    #   unparseable turns, KL per token and per turn
    ttsearch bench prop1 --pair default:smollm2-maze --json   # a real LM pair (LoRA over SmolLM2)

What is measured: ``ttsearch.benchmarks.perf.prop1`` (tiny from-scratch pairs, whole turns),
``ttsearch.benchmarks.perf.prop1_turns`` (their sampled turns) and
``ttsearch.benchmarks.perf.prop1_lm`` (any other maze pair: its chat template and move turns).
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import resolve_pair_dir
from ttsearch.benchmarks.perf.prop1 import measure
from ttsearch.benchmarks.perf.prop1_lm import is_tiny_recipe_pair, measure_pair
from ttsearch.benchmarks.perf.prop1_turns import sampled_turns
from ttsearch.envs.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", default=None,
                        help="pair folder or default:NAME of a shipped pair (default: the shipped maze pair)")
    parser.add_argument("--layouts", type=int, default=50, help="held-out layouts to use (default 50)")
    parser.add_argument("--split", default="test", choices=("test", "train"),
                        help="layouts to measure on (default: held-out 'test')")
    parser.add_argument("--rollouts", type=int, default=0,
                        help="also sample this many episodes per layout and report the log-ratios of "
                             "parseable vs unparseable turns (default 0: off)")
    parser.add_argument("--max-new-tokens", type=int, default=4,
                        help="turn length limit of the rollouts (default 4, as the demo)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the rollouts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    if args.layouts < 1:
        raise ConfigError(f"--layouts must be >= 1, got {args.layouts}")
    if args.rollouts < 0 or args.max_new_tokens < 1:
        raise ConfigError("--rollouts must be >= 0 and --max-new-tokens >= 1")
    pair = args.pair or "default:maze"
    pair_dir = resolve_pair_dir(pair)
    tiny = is_tiny_recipe_pair(PairManifest.read(pair_dir))
    if args.rollouts and not tiny:
        raise ConfigError("--rollouts (sampled turns) needs a tiny-recipe maze pair; "
                          f"{pair} is measured by its move classes only")
    result = (measure if tiny else measure_pair)(pair_dir, layouts=args.layouts, split=args.split)
    if args.rollouts:
        result["sampled_turns"] = sampled_turns(pair_dir, layouts=args.layouts, rollouts=args.rollouts,
                                                split=args.split, max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console = Console()
    table = Table(title=f"Proposition 1 on {result['n_states']} {result['split']}-split states "
                        f"({result['n_pairs']} state-move pairs, whole turns)")
    for column in ("score", "spearman", "pearson", "argmax = argmax A*", "argmax hard-optimal"):
        table.add_column(column)
    for name in ("pa", "policy_logprob", "pa_action_span"):
        m = result[name]
        table.add_row(name, f"{m['spearman']:.3f}", f"{m['pearson']:.3f}", f"{m['argmax_agreement']:.3f}",
                      f"{m['hard_optimal_agreement']:.3f}")
    console.print(table)
    if "sampled_turns" in result:
        console.print(_sampled_table(result["sampled_turns"]))
    return 0


def _sampled_table(turns: dict) -> Table:
    table = Table(title=f"Per-step PA of sampled turns ({turns['turns']} turns, {turns['episodes']} episodes; "
                        f"KL/turn {turns['kl_per_turn']:.3f}, KL/token {turns['kl_per_token']:.4f})")
    for column in ("turns", "n", "mean", "p10", "median", "p90", "max"):
        table.add_column(column)
    for name in ("parseable", "unparseable"):
        d = turns[name]["pa_whole_turn"]
        if d["n"]:
            table.add_row(name, str(d["n"]), *(f"{d[k]:.3f}" for k in ("mean", "p10", "median", "p90", "max")))
        else:
            table.add_row(name, "0", "", "", "", "", "")
    return table
