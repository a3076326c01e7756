"""`ttsearch run`: an experiment from a YAML config, resumable, one JSON line per episode.

    ttsearch run benchmarks/configs/smoke-maze.yaml --out runs/smoke
    ttsearch run benchmarks/configs/paper-maze.yaml --out runs/paper-maze --resume
    ttsearch run benchmarks/configs/paper-maze.yaml --out runs/quick --limit 5   # first 5 tasks only

Runs tasks x arms x seeds (see ``ttsearch.benchmarks.run.config`` for the config fields) with a
progress bar. ``OUT/run.json`` is the manifest; ``OUT/episodes.jsonl`` gets one row per finished
episode, fsync'ed as it finishes, with the searched trajectory (and every best-of-N rollout)
scored by every evaluation scorer. After a crash or Ctrl-C, rerun with ``--resume``: finished
episodes are kept and skipped; a resume with a different config is refused.
"""

from __future__ import annotations

import argparse
import json

from ttsearch.benchmarks.run.config import load_config
from ttsearch.benchmarks.run.runner import run_experiment
from ttsearch.envs.errors import ConfigError

INTERRUPTED = "finished episodes are kept in OUT/episodes.jsonl; rerun the same command with --resume to continue"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML run config (e.g. benchmarks/configs/paper-maze.yaml)")
    parser.add_argument("--out", required=True, help="run folder (run.json, episodes.jsonl, trees/)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished episodes")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N tasks of the config")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="episodes in flight at once (default: the config's, 'auto' = 16)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="with --resume: rerun the episodes an env fault ended (their new rows supersede)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="shard episodes over Ray actors (a local cluster, or the cluster at ADDRESS)")


def main(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {args.concurrency}")
    if args.retry_errors and not args.resume:
        raise ConfigError("--retry-errors reruns the error rows of an earlier run: add --resume")
    config = load_config(args.config)
    summary = run_experiment(config, args.out, resume=args.resume, limit=args.limit, progress=not args.quiet,
                             concurrency=args.concurrency, retry_errors=args.retry_errors,
                             ray_address=args.ray)
    print(json.dumps(summary))
    return 0
