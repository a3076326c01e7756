"""Train the task-specific reward model (a Monte-Carlo value model) for a shipped pair.

    ttsearch rm train --env maze --out runs/maze-rm                   # the default recipe (minutes)
    ttsearch rm train --env maze --out /tmp/rm --quick                # a tiny run that proves it trains
    ttsearch rm train --env maze --out DIR --set epochs=3 --eval-layouts 0
    ttsearch rm train --env reasoning_gym --pair runs/smollm2-chain-sum-pair --method probe \
        --out runs/smollm2-chain-sum-rm                               # a linear probe (minutes)

Rolls out the pair's policy on training-split layouts, labels every prefix with its episode's
success, fine-tunes a sequence-classification model from the reference weights (``--method
probe``: fits a logistic-regression head on the frozen reference's features) and writes a
``save_pretrained`` folder plus ``ttsearch_rm.json`` (recipe, data sizes, validation AUROC).
With ``--eval-layouts N`` (default 100; 0 skips) it then rolls out N held-out TEST-split layouts
and adds, under ``test_eval``, the trajectory-level AUROC of the trained RM (loaded back through
the ``reward_model`` scorer) next to progress advantage and policy log-prob on the same episodes.
Use it with ``make_scorer("reward_model", path=DIR)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ttsearch.agents.checkpoints.shipped import resolve_pair_dir
from ttsearch.benchmarks.cli.options import add_set_option, build_recipe
from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.training.reward_model_training import (
    METHODS,
    RM_ENVS,
    RM_MANIFEST,
    RMRecipe,
    evaluate_reward_model,
    train_reward_model,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help=f"environment recipe: {', '.join(RM_ENVS)}")
    parser.add_argument("--out", required=True, help="output folder for the reward model")
    parser.add_argument("--pair", default=None, help="pair folder or default:NAME whose policy is rolled out (default: the shipped maze pair)")
    parser.add_argument("--method", default="finetune", choices=METHODS,
                        help="finetune the reference as a classifier (default) or fit a linear probe on it")
    parser.add_argument("--quick", action="store_true", help="tiny run (well under a minute) to prove it trains")
    parser.add_argument("--eval-layouts", type=int, default=100,
                        help="held-out test-split layouts for the AUROC comparison (default 100; 0 skips)")
    add_set_option(parser, example="epochs=3")


def main(args: argparse.Namespace) -> int:
    if args.env not in RM_ENVS:
        raise ConfigError(unknown_choice("reward-model recipe", args.env, RM_ENVS))
    if args.eval_layouts < 0:
        raise ConfigError("--eval-layouts must be >= 0 (0 skips the held-out evaluation)")
    recipe = build_recipe(RMRecipe, args.set, quick=args.quick, env=args.env, method=args.method)
    pair_dir = resolve_pair_dir(args.pair) if args.pair else None
    manifest = train_reward_model(recipe, args.out, pair_dir=pair_dir)
    if args.eval_layouts:
        manifest["test_eval"] = evaluate_reward_model(args.out, pair_dir, layouts=args.eval_layouts,
                                                      rollouts=recipe.rollouts_per_layout, seed=recipe.seed + 1,
                                                      env=recipe.env, max_steps=recipe.max_steps)
        (Path(args.out) / RM_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    keys = ("data", "best_epoch", "probe", "val_prefix_auroc", "val_trajectory_auroc", "train_seconds", "cpu_seconds",
            "test_eval")
    print(json.dumps({k: manifest[k] for k in keys if k in manifest}, indent=2))
    return 0
