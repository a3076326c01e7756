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
import dataclasses
import json
from pathlib import Path

from ttsearch.benchmarks.cli.pair_train_cmd import parse_overrides
from ttsearch.envs.errors import ConfigError, unknown_choice

RECIPES = ("maze", "reasoning_gym")
METHODS = ("finetune", "probe")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help=f"environment recipe: {', '.join(RECIPES)}")
    parser.add_argument("--out", required=True, help="output folder for the reward model")
    parser.add_argument("--pair", default=None, help="pair folder whose policy is rolled out (default: shipped)")
    parser.add_argument("--method", default="finetune", choices=METHODS,
                        help="finetune the reference as a classifier (default) or fit a linear probe on it")
    parser.add_argument("--quick", action="store_true", help="tiny run (well under a minute) to prove it trains")
    parser.add_argument("--eval-layouts", type=int, default=100,
                        help="held-out test-split layouts for the AUROC comparison (default 100; 0 skips)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field (repeatable), e.g. --set epochs=3")


def evaluate_on_test(out: Path, pair_dir: Path | None, *, layouts: int, rollouts: int, seed: int,
                     env: str = "maze", max_steps: int = 20) -> dict:
    """Trajectory-level AUROC of the saved RM, progress advantage and policy log-prob on the same
    held-out episodes (the UQ application, DESIGN §1)."""
    import torch

    from ttsearch.agents.checkpoints.shipped import default_pair_dir
    from ttsearch.envs import list_tasks
    from ttsearch.scorers import make_scorer  # a top-level command may use the layers above agents
    from ttsearch.training.reward_model_training import RM_ENVS, auroc, load_agent, roll_out

    rm_env = RM_ENVS[env]
    pair_dir = pair_dir or default_pair_dir(env)
    agent, pair, env_kwargs = load_agent(pair_dir)
    tasks = list_tasks(env, split="test", limit=layouts, **rm_env.task_kwargs(layouts, seed), **env_kwargs)
    with torch.inference_mode():
        episodes = roll_out(agent, tasks, rollouts=rollouts, seed=seed + 7, max_steps=max_steps,
                            score_reference=True, reset_seed=rm_env.reset_seed)
    labels = [float(t.success) for t in episodes]
    scorers = {"reward_model": make_scorer("reward_model", path=str(out)),
               "reward_model_process_min": make_scorer("reward_model", path=str(out), kind="process"),
               "progress_advantage": make_scorer("progress_advantage", beta=pair.beta),
               "policy_logprob": make_scorer("policy_logprob")}
    result = {"layouts": len(tasks), "episodes": len(episodes), "success_rate": sum(labels) / len(labels)}
    for label, scorer in scorers.items():
        result[f"auroc_{label}"] = auroc(labels, [scorer.score_trajectory(t.steps) for t in episodes])
    return result


def main(args: argparse.Namespace) -> int:
    if args.env not in RECIPES:
        raise ConfigError(unknown_choice("reward-model recipe", args.env, RECIPES))
    if args.eval_layouts < 0:
        raise ConfigError("--eval-layouts must be >= 0 (0 skips the held-out evaluation)")
    from ttsearch.training.reward_model_training import RM_MANIFEST, RMRecipe, train_reward_model

    overrides = parse_overrides(args.set, {f.name: f for f in dataclasses.fields(RMRecipe)})
    try:
        base = {"env": args.env, "method": args.method, **overrides}
        recipe = RMRecipe.quick(**base) if args.quick else RMRecipe(**base)
    except TypeError as err:
        raise ConfigError(f"bad recipe override: {err}") from err
    pair_dir = Path(args.pair) if args.pair else None
    manifest = train_reward_model(recipe, args.out, pair_dir=pair_dir)
    if args.eval_layouts:
        manifest["test_eval"] = evaluate_on_test(Path(args.out), pair_dir, layouts=args.eval_layouts,
                                                 rollouts=recipe.rollouts_per_layout, seed=recipe.seed + 1,
                                                 env=recipe.env, max_steps=recipe.max_steps)
        (Path(args.out) / RM_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    keys = ("data", "best_epoch", "probe", "val_prefix_auroc", "val_trajectory_auroc", "train_seconds", "cpu_seconds",
            "test_eval")
    print(json.dumps({k: manifest[k] for k in keys if k in manifest}, indent=2))
    return 0
