"""`ttsearch bench prefix-cache`: the embedded engine's radix prefix cache vs recomputing, side by side.

    ttsearch bench prefix-cache --json               # the full run (~3 min on a loaded 2-core box)
    ttsearch bench prefix-cache --quick --json       # tiny models, short episodes (a smoke run)

What is run and reported: ``ttsearch.benchmarks.perf.prefix_cache``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from ttsearch.benchmarks.perf.prefix_cache import QUICK, BenchConfig, measure
from ttsearch.envs.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quick", action="store_true", help="a small, fast configuration (smoke run)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine more threads only wait for each other)",
    )
    parser.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="cache budget per engine in the beam episodes (default 12)",
    )
    parser.add_argument(
        "--no-generate", action="store_true", help="skip the naive model.generate baseline"
    )
    parser.add_argument(
        "--mlp",
        type=int,
        default=None,
        help="MLP width of the models (default 3072; hidden is 256)",
    )


def main(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    cfg = QUICK if args.quick else BenchConfig()
    if args.budget_mb is not None:
        if args.budget_mb <= 0:
            raise ConfigError(f"--budget-mb must be > 0, got {args.budget_mb}")
        cfg = replace(cfg, budget_mb=args.budget_mb)
    if args.mlp is not None:
        if args.mlp < 1:
            raise ConfigError(f"--mlp must be >= 1, got {args.mlp}")
        cfg = replace(cfg, mlp=args.mlp)
    result = measure(cfg, threads=args.threads, generate=not args.no_generate)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"scoring (cached vs full recompute per candidate), load {result['machine']['load_before']}"
    )
    for r in result["scoring"]:
        print(
            f"  prefix {r['prefix_len']:5d}  K={r['k']:2d}  cached {r['cached_s']:.4f}s  uncached "
            f"{r['uncached_s']:.3f}s  ratio {r['ratio']:.4f}  ideal {r['ideal_ratio']:.4f}"
        )
    b = result["beam"]
    print(
        f"beam: {b['speedup_vs_uncached']:.2f}x vs uncached, {b['speedup_vs_generate'] or float('nan'):.2f}x vs "
        f"generate, overhead {b['overhead_frac']:.1%}, same results: {b['same_results']}"
    )
    print(f"targets: {result['targets']}")
    return 0
