"""`ttsearch bench engines`: SGLang vs the embedded transformers engine, same workloads, side by side.

    ttsearch bench engines --json                      # launches 2 CPU SGLang servers (~1 min)
    ttsearch bench engines --episodes 3 --json
    ttsearch bench engines --url-policy http://127.0.0.1:30000 --url-reference http://127.0.0.1:30001

What is run and reported: ``ttsearch.benchmarks.perf.engines``. Exit status 0 when every
log-prob agrees within the float32 tolerance (``logprob_agreement``), whether or not every
replayed beam kept the recorded path (near-ties may swap: ``same_path_fraction``,
``divergences``); 1 when the log-probs themselves disagree.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ttsearch.benchmarks.perf.engines import EnginesBenchSettings, run


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", default=None, help="pair folder (default: the shipped maze pair)")
    parser.add_argument("--episodes", type=int, default=20, help="held-out layouts (default 20)")
    parser.add_argument("--width", type=int, default=3, help="beam width (default 3)")
    parser.add_argument("--expand", type=int, default=3, help="candidates per beam per depth (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=2, help="sampling cap per turn (maze: 1 move + stop)")
    parser.add_argument("--walk-steps", type=int, default=6, help="random-walk states per layout to score (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url-policy", default=None, help="a running SGLang server for the policy")
    parser.add_argument("--url-reference", default=None, help="a running SGLang server for the reference")
    parser.add_argument("--run-dir", default="runs/bench-engines", help="server logs (default runs/bench-engines)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    settings = EnginesBenchSettings(
        pair=args.pair, episodes=args.episodes, width=args.width, expand=args.expand,
        max_new_tokens=args.max_new_tokens, walk_steps=args.walk_steps, seed=args.seed,
        url_policy=args.url_policy, url_reference=args.url_reference, run_dir=args.run_dir)
    result = run(settings, quiet=args.json)
    status = 0 if result["logprob_agreement"] else 1
    if args.json:
        print(json.dumps(result, indent=2))
        return status

    table = Table(title=f"SGLang vs transformers on {result['episodes']} held-out mazes")
    for column in ("figure", "value"):
        table.add_column(column)
    beam = result["beam"]
    for name, value in (
        ("max |lp_sglang - lp_transformers|", f"{result['max_abs_logprob_diff']:.2e}"),
        ("float32 tolerance (agreement)", f"{result['logprob_tolerance']:.2e} ({result['logprob_agreement']})"),
        ("SGLang prefix-cache hit fraction (beam)", f"{result['prefix_cache_hit_frac']:.3f}"),
        ("SGLang wall s (scoring + beam)", f"{result['sglang_s']:.2f}"),
        ("transformers wall s (scoring + beam)", f"{result['transformers_s']:.2f}"),
        ("replay reproduced the SGLang beam path", f"{result['same_path_fraction']:.3f}"),
        ("beam success sglang / transformers",
         f"{beam['success_rate']['sglang']:.2f} / {beam['success_rate']['transformers']:.2f}"),
    ):
        table.add_row(name, value)
    console = Console()
    console.print(table)
    for d in result["divergences"]:
        gap = d["closest_gap_recorded"]
        console.print(f"{d['task']}: replay left the recorded beam at call {d['call']} ({d['reason']})"
                      + ("" if gap is None else f"; closest swapped pair: score gap {gap:.2e} on SGLang, "
                                                f"{d['closest_gap_replayed']:.2e} replayed"))
    if status:
        console.print(f"log-probs disagree beyond the float32 tolerance ({result['max_abs_logprob_diff']:.2e} > "
                      f"{result['logprob_tolerance']:.2e}): the two engines do not compute the same model")
    return status
