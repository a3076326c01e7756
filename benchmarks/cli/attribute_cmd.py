"""``ttsearch attribute``: failure attribution on Who&When-format logs with a checkpoint pair.

    ttsearch attribute DATA_DIR --pair PAIR_DIR --json           # DATA_DIR holds Hand-Crafted/, Algorithm-Generated/
    ttsearch attribute DATA_DIR --pair PAIR_DIR --out runs/ww.jsonl --limit 20

Every message of every log is scored by both models (``benchmarks/report/whowhen_attribution.py``);
the decisive step is predicted by min-cumulative, sharpest drop and sharpest absolute drop over
the step scores of progress advantage and the token-level baselines, and compared with the
annotated mistake step and agent. With ``--out`` each scored log is appended as one JSON line
as it finishes and a rerun skips logs already there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from ttsearch.agents import ModelPair
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.report.whowhen_attribution import attribution_summary, score_log
from ttsearch.benchmarks.run.jsonl_log import JsonlWriter, read_rows
from ttsearch.envs.errors import ConfigError
from ttsearch.envs.whowhen import load_whowhen
from ttsearch.scorers import make_scorer

SCORER_NAMES = ("progress_advantage", "policy_logprob", "reference_logprob", "self_certainty",
                "deepconf_tail", "entropy")
"""Token-level scorers whose step scores are used for attribution (one pass per model feeds all)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Who&When folder (holding Hand-Crafted/ and/or Algorithm-Generated/)")
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair, "
                        "which only checks the mechanics: it reads no English)")
    parser.add_argument("--subset", default=None, help="Hand-Crafted or Algorithm-Generated (default both)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N logs")
    parser.add_argument("--max-message-tokens", type=int, default=256,
                        help="score at most this many leading tokens of each message (default 256)")
    parser.add_argument("--out", default=None, help="JSONL of per-log step scores (appended; resumable)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def main(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")

    logs = load_whowhen(args.data, subset=args.subset)[: args.limit]
    pair = ModelPair.load_dir(Path(args.pair) if args.pair else default_pair_dir("maze"))
    scorers = {name: make_scorer(name, beta=pair.beta) if name == "progress_advantage" else make_scorer(name)
               for name in SCORER_NAMES}
    out = Path(args.out) if args.out else None
    done = {row["log"]: row for row in read_rows(out)} if out is not None else {}
    console = Console(stderr=True)
    sink = JsonlWriter(out) if out is not None else None
    try:
        for log in track([log for log in logs if log.id not in done], description="scoring logs",
                         console=console):
            scored = score_log(pair, log, max_message_tokens=args.max_message_tokens)
            done[log.id] = {"log": log.id, "mistake_step": log.mistake_step, "mistake_agent": log.mistake_agent,
                            "steps": {label: list(scored.step_scores(s)) for label, s in scorers.items()}}
            if sink is not None:
                sink.append(done[log.id])
    finally:
        if sink is not None:
            sink.close()
    summary = attribution_summary(logs, [done[log.id]["steps"] for log in logs])
    if args.json:
        print(json.dumps(summary))
        return 0

    table = Table(title=f"Who&When failure attribution: {len(logs)} logs, pair {pair!r}")
    for column in ("scorer", "method", "step acc", "agent acc", "step MAE"):
        table.add_column(column)
    for label, methods in summary["scorers"].items():
        for method, m in methods.items():
            table.add_row(label, method, f"{m['step_accuracy']:.3f}", f"{m['agent_accuracy']:.3f}",
                          f"{m['step_mae']:.2f}")
    Console().print(table)
    base = summary["baselines"]
    console.print(f"chance (uniform step): {base['random_step_expected_accuracy']:.3f}; first step "
                  f"{base['first_step']['step_accuracy']:.3f}; last step {base['last_step']['step_accuracy']:.3f}")
    return 0
