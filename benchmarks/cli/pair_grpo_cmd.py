"""Post-train SmolLM2-135M-Instruct with GRPO (LoRA, KL to the reference) into a checkpoint pair.

    ttsearch pair import-gguf                                  # once: the float32 reference
    ttsearch pair grpo --out runs/smollm2-chain-sum-pair       # train, then evaluate held-out
    ttsearch pair grpo --out /tmp/p --quick --eval-tasks 8     # bounded run (CI)
    ttsearch pair grpo --out DIR --eval-only --eval-tasks 200  # re-measure an existing pair
    ttsearch pair grpo --preset maze --out runs/smollm2-maze-pair --eval-tasks 200   # the maze pair

Writes DIR/reference (symlink to the imported model), DIR/policy (LoRA adapter + tokenizer)
and DIR/ttsearch_pair.json (recipe, training log, held-out evaluation). Needs peft.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ttsearch.agents import ModelPair, PairManifest
from ttsearch.agents.checkpoints.model_spec import default_dir
from ttsearch.benchmarks.cli.options import add_set_option, build_recipe
from ttsearch.envs.errors import ConfigError
from ttsearch.training.gguf_import import import_smollm2
from ttsearch.training.grpo_eval import evaluate_pair
from ttsearch.training.grpo_recipe import (
    PRESET_DEFAULTS,
    PRESETS,
    TASK_SPLITS,
    GrpoConfig,
    train_grpo_pair,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="pair folder to write")
    parser.add_argument("--reference", default=None,
                        help="reference model folder (default: the `ttsearch pair import-gguf` folder)")
    parser.add_argument("--preset", default="chain_sum", choices=sorted(PRESETS),
                        help="task and its recipe defaults (default chain_sum; --set overrides them)")
    parser.add_argument("--quick", action="store_true", help="2 iterations of 2 tasks x 4 episodes (CI)")
    add_set_option(parser, example="iterations=20")
    parser.add_argument("--eval-tasks", type=int, default=100, help="held-out tasks per model (0: skip)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the pair in --out without training")


def main(args: argparse.Namespace) -> int:
    if args.eval_tasks < 0:
        raise ConfigError("--eval-tasks must be >= 0")
    config = build_recipe(GrpoConfig, args.set, quick=args.quick, **PRESET_DEFAULTS[args.preset])
    out = Path(args.out)
    if not args.eval_only:

        reference = Path(args.reference) if args.reference else default_dir()
        if args.reference is None:
            import_smollm2(reference)  # no-op when the import is already there
        report = train_grpo_pair(config, reference, out, log=lambda line: print(line, flush=True))
        print(json.dumps({"train_seconds": report["train_seconds"]}))
    if args.eval_tasks:

        pair = ModelPair.load_dir(out)
        manifest = PairManifest.read(out)
        preset = PRESETS[manifest.extra.get("recipe", {}).get("preset", config.preset)]
        if preset.listed_tasks:
            result = evaluate_pair(pair, preset, n_tasks=args.eval_tasks, seed=config.seed)
        else:
            seeds = range(TASK_SPLITS["test"], TASK_SPLITS["test"] + args.eval_tasks)
            result = evaluate_pair(pair, preset, seeds, seed=config.seed)
        manifest = dataclasses.replace(manifest, extra={**manifest.extra, "heldout_eval": result})
        manifest.write(out)
        print(json.dumps(result, indent=2))
    return 0
