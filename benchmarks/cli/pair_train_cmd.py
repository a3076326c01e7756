"""Train a (reference, policy) checkpoint pair from scratch: SFT, then KL-regularised RL.

    ttsearch pair train --env maze --out runs/maze-pair            # the full recipe (minutes)
    ttsearch pair train --env maze --out /tmp/p --quick            # a shortened run (CI)
    ttsearch pair train --env maze --out DIR --set beta=0.2 --set rl_iterations=300
    ttsearch pair train --env maze --out DIR2 --reference DIR/reference   # RL only, on an earlier SFT

Writes DIR/reference and DIR/policy (save_pretrained folders that transformers and SGLang load)
and DIR/ttsearch_pair.json (the recipe and what training measured).
"""

from __future__ import annotations

import argparse
import json

from ttsearch.benchmarks.cli.options import add_set_option, build_recipe
from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.training.maze_recipe import MazeRecipeConfig, train_maze_pair

RECIPES = ("maze",)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help=f"environment recipe: {', '.join(RECIPES)}")
    parser.add_argument("--out", required=True, help="output folder for the pair")
    parser.add_argument("--quick", action="store_true", help="shortened run (about a minute) to prove it trains")
    add_set_option(parser, example="beta=0.2")
    parser.add_argument("--reference", default=None, metavar="DIR",
                        help="skip tokenizer training and SFT: use this reference folder (an earlier run's)")
    parser.add_argument("--policy", default=None, metavar="DIR",
                        help="continue RL from this policy folder instead of the reference (needs --reference)")


def main(args: argparse.Namespace) -> int:
    if args.env not in RECIPES:
        raise ConfigError(unknown_choice("pair recipe", args.env, RECIPES))
    if args.policy and not args.reference:
        raise ConfigError("--policy needs --reference (the reference the policy was trained against)")
    config = build_recipe(MazeRecipeConfig, args.set, quick=args.quick)
    report = train_maze_pair(config, args.out, reference_dir=args.reference, policy_dir=args.policy)
    print(json.dumps({k: report[k] for k in ("sft_final_loss", "rl_final", "train_seconds")}, indent=2))
    return 0
