"""`ttsearch report`: the three applications' metrics and budget tuning of a finished (or running) run.

    ttsearch report runs/exp1                     # writes runs/exp1/report/report.md and *.png
    ttsearch report runs/exp1 --json              # also prints one JSON object
    ttsearch report runs/exp1 --out-dir /tmp/r --tolerance 0.02

Reads only ``DIR/episodes.jsonl`` and ``DIR/run.json`` (docs/run_schema.md); a trailing partial line
is ignored, so it can run while the experiment is still writing. ``--json`` prints
``{"tts": {scorer: {"success_rate"}}, "uq": {scorer: {"auroc", ...}}, "fa": {scorer:
{"accuracy", "mae", "methods"}}, "tts_arms", "best_of_n", "selection", "diagnostics", "alpha_sweep",
"tuned", "scorer_specs", "budget", "available", "run", "notes", "files"}``; undefined metrics are null. The markdown and the plots leave out the sections
without data (best-of-n without rollouts, failure attribution without an env's truth, budget
tuning per difficulty without difficulties) and the notes say why and how an environment
provides them. Every arm has one colour, and every scorer one, in every plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ttsearch.benchmarks.report.markdown import (
    alpha_md,
    diagnostics_md,
    scorers_md,
    selection_md,
    table,
    tuned_md,
)
from ttsearch.benchmarks.report.plots import write_plots
from ttsearch.benchmarks.report.tables import build_report, load_run


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="run folder (the --out of `ttsearch run`)")
    parser.add_argument("--out-dir", default=None, help="where report.md and the plots go (default DIR/report)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="budget tuning: absolute success gap to the best arm (default: 1 stderr of the best)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def to_markdown(summary: dict[str, Any], plots: dict[str, Path]) -> str:
    """The report as markdown tables (``n/a`` marks an undefined metric; the notes say why)."""
    run = summary["run"]
    out = [f"# ttsearch report: {run['dir']}", "",
           f"{run['episodes']} episodes; arms: {', '.join(run['arms'])}; scorers: {', '.join(run['scorers'])}; "
           f"UQ/FA pool: {run['pool_trajectories']} trajectories of {', '.join(run['uq_fa_arms'])}.", ""]
    out += scorers_md(summary)
    out += ["## Test-time scaling: arms", ""]
    out += table(["arm", "controller", "search scorer", "episodes", "success", "± stderr", "mean tokens",
                   "mean generated"],
                  [[arm, a["controller"], a["search_scorer"], a["n"], a["success_rate"], a["stderr"],
                    a["mean_tokens"], a["mean_generated_tokens"]] for arm, a in summary["tts_arms"].items()])
    for arm, entry in summary["best_of_n"].items():
        ns = entry["ns"]
        out += [f"## Best-of-n re-ranking: {arm} ({entry['rows']} tasks, N = {entry['n_max']})", "",
                "Exact expected success over all size-n subsets of the N rollouts; ties go to the earliest "
                "rollout.", ""]
        rows = [[label] + [curve[str(n)]["mean"] for n in ns] for label, curve in entry["scorers"].items()]
        rows.append(["pass@1 (mean rollout)"] + [entry["pass_at_1"]] * len(ns))
        rows.append(["oracle pass@n"] + [entry["oracle_pass_at_n"][str(n)] for n in ns])
        out += table(["scorer"] + [f"n={n}" for n in ns], rows)
    out += selection_md(summary)
    out += ["## Uncertainty quantification", "",
            "Trajectory score vs success over the pool. ECE over 10 equal-width bins after the mapping shown "
            "(identity: scores already in [0, 1]; minmax: (s − min)/(max − min) over the pool).", ""]
    out += table(["scorer", "n", "successes", "AUROC", "AUPRC", "Spearman ρ", "ECE", "mapping"],
                  [[label, m["n"], m["n_success"], m["auroc"], m["auprc"], m["spearman"], m["ece"], m["mapping"]]
                   for label, m in summary["uq"].items()])
    out += [f"- {label}: {note}" for label, m in summary["uq"].items() for note in m["notes"]]
    out += diagnostics_md(summary)
    if summary["available"]["fa"]:
        out += ["", "## Failure attribution", "",
                "Failed pool trajectories with a true decisive step; exact-step accuracy / MAE (steps).", ""]
        fa_rows = []
        for label, m in summary["fa"].items():
            for method, r in m["methods"].items():
                fa_rows.append([label, method, r["n"], r["accuracy"], r["mae"], r["within_one"]])
        out += table(["scorer", "method", "n", "accuracy", "MAE", "within ±1"], fa_rows)
        out += ["Score-free references on the same failures:", ""]
        out += table(["baseline", "n", "accuracy", "MAE"],
                      [[name, b["n"], b["accuracy"], b["mae"]] for name, b in summary["fa_baselines"].items()])
        out += [f"- {label}: {note}" for label, m in summary["fa"].items() for note in m["notes"]]
    out += alpha_md(summary) + tuned_md(summary)
    out += ["", "## Budget tuning", "",
            "Compute-optimal arm (chosen) = the cheapest arm whose success is at least the best arm's minus "
            f"a tolerance of {summary['budget']['tolerance_rule']}, per difficulty.", ""]
    budget_rows = []
    for difficulty, d in summary["budget"]["difficulties"].items():
        for a in d["arms"]:
            mark = ", ".join(m for m, arm in (("best", d["best"]), ("chosen", d["choice"])) if a["arm"] == arm)
            budget_rows.append([difficulty, a["arm"], a["n"], a["success_rate"], a["stderr"], a["mean_tokens"], mark])
    out += table(["difficulty", "arm", "episodes", "success", "± stderr", "mean tokens", ""], budget_rows)
    if summary["notes"]:
        out += ["## Notes", ""] + [f"- {note}" for note in summary["notes"]] + [""]
    out += ["## Plots", ""] + [f"![{name}]({path.name})" for name, path in plots.items()] + [""]
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    run = load_run(args.dir)
    report = build_report(run, tolerance=args.tolerance)
    out_dir = Path(args.out_dir) if args.out_dir else run.directory / "report"
    plots = write_plots(report, out_dir)
    markdown = out_dir / "report.md"
    markdown.write_text(to_markdown(report.summary, plots))
    files = {"markdown": str(markdown), **{name: str(path) for name, path in plots.items()}}
    if args.json:
        print(json.dumps({**report.summary, "files": files}))
    else:
        print(f"wrote {markdown} and {len(plots)} plots to {out_dir}")
    return 0
