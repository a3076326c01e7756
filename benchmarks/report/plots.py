"""PNG plots of a run report (matplotlib, Agg backend: no display needed).

    from ttsearch.benchmarks.report.plots import write_plots
    paths = write_plots(report, "runs/exp1/report")   # {"success_vs_compute": Path(...png), ...}

One file per view: success vs compute per arm, best-of-n curves per scorer, ROC curves,
reliability diagram, attribution accuracy, budget tuning, diagnostics (each scorer's step scores
parseable vs unparseable and trajectory scores success vs failure, z-scored). A view without data (no rollouts to
re-rank, one outcome class only, no attribution truth) is left out; the report's notes say why.
Each arm keeps one colour and line style in every plot, and so does each scorer (:func:`styles`,
in run order), so a curve can be followed from one figure to the next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from ttsearch.benchmarks.report.tables import Report
from ttsearch.scorers.progress_advantage import DECISIVE_METHODS

PLOTS = ("success_vs_compute", "best_of_n", "roc", "reliability", "attribution", "budget_tuning", "diagnostics")


def styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """One fixed style per name, in order: runs compare more than the 10 colours of the default
    cycle, so 20 distinct styles (the dark tab20 shades solid, then the light ones dashed)."""
    tab20 = plt.get_cmap("tab20").colors
    palette = list(tab20[0::2]) + list(tab20[1::2])
    return {name: {"color": palette[i % 20], "linestyle": "-" if i % 20 < 10 else "--"}
            for i, name in enumerate(names)}


def _figure(ncols: int = 1):
    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, max(1, ncols), figsize=(7.0 * max(1, ncols), 4.4), squeeze=False)
    return plt, fig, list(axes[0])


def _legend(ax) -> None:
    """Outside the axes, on the right: with a dozen scorers an inside legend hides the data."""
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _success_vs_compute(ax, summary: dict[str, Any], arms: dict[str, dict[str, Any]]) -> None:
    for arm, a in summary["tts_arms"].items():
        ax.errorbar(a["mean_tokens"], a["success_rate"], yerr=a["stderr"], fmt="o", capsize=3, label=arm,
                    color=arms[arm]["color"])
    ax.set_xlabel("mean tokens per episode (generated + scored)")
    ax.set_ylabel("success rate")
    ax.set_title("success vs compute per arm")
    _legend(ax)


def _best_of_n(axes, summary: dict[str, Any], scorers: dict[str, dict[str, Any]]) -> None:
    for ax, (arm, entry) in zip(axes, summary["best_of_n"].items()):
        ns = entry["ns"]
        for label, curve in entry["scorers"].items():
            ax.plot(ns, [curve[str(n)]["mean"] for n in ns], marker="o", label=label, **scorers[label])
        ax.plot(ns, [entry["oracle_pass_at_n"][str(n)] for n in ns], "k--", label="oracle pass@n")
        ax.axhline(entry["pass_at_1"], color="grey", linestyle=":", label="pass@1")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n (rollouts re-ranked)")
        ax.set_ylabel("success rate")
        ax.set_title(f"best-of-n: {arm}")
        _legend(ax)


def _roc(ax, report: Report, scorers: dict[str, dict[str, Any]]) -> None:
    for label, points in report.roc.items():
        if points is not None:
            auc = report.summary["uq"][label]["auroc"]
            ax.plot(points[0], points[1], label=f"{label} (AUROC {auc:.3f})", **scorers[label])
    ax.plot([0, 1], [0, 1], "k:", linewidth=1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC: trajectory score predicts success")
    _legend(ax)


def _reliability(ax, summary: dict[str, Any], scorers: dict[str, dict[str, Any]]) -> None:
    for label, m in summary["uq"].items():
        bins = [b for b in m["reliability"] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{label} ({m['mapping']}, ECE {m['ece']:.3f})" if m["ece"] is not None else label,
                **scorers[label])
    ax.plot([0, 1], [0, 1], "k:", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("score mapped to [0, 1] (bin mean)")
    ax.set_ylabel("success rate in bin")
    ax.set_title("reliability diagram")
    _legend(ax)


def _attribution(ax, summary: dict[str, Any]) -> None:
    labels = [label for label, m in summary["fa"].items() if m["n"]]
    width = 0.8 / len(DECISIVE_METHODS)
    for i, method in enumerate(DECISIVE_METHODS):
        values = [summary["fa"][label]["methods"][method]["accuracy"] for label in labels]
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=method)
    ax.set_xticks([x + width for x in range(len(labels))], labels, rotation=40, ha="right", fontsize=7)
    references = summary.get("fa_baselines") or {}
    for (name, ref), style in zip(references.items(), (":", "--", "-.")):
        if ref.get("accuracy") is not None:
            ax.axhline(ref["accuracy"], color="black", linestyle=style, linewidth=1, label=f"{name} (no score)")
    ax.set_ylabel("exact-step accuracy")
    ax.set_title("failure attribution")
    _legend(ax)


def _budget(axes, report: Report, arms: dict[str, dict[str, Any]]) -> None:
    table = report.budget
    for ax, (difficulty, cells) in zip(axes, table.cells.items()):
        chosen = table.choice[difficulty].arm
        for c in cells:
            ax.errorbar(c.mean_tokens, c.success, yerr=c.stderr, fmt="*" if c.arm == chosen else "o",
                        markersize=14 if c.arm == chosen else 6, capsize=3, color=arms[c.arm]["color"],
                        label=f"{c.arm}{' (chosen)' if c.arm == chosen else ''}")
        ax.set_xlabel("mean tokens per episode")
        ax.set_ylabel("success rate")
        ax.set_title(f"{difficulty}: compute-optimal = {chosen}")
        _legend(ax)


def _spread(axes, report: Report) -> None:
    """Box plots of each scorer's z-scored scores: steps parseable vs not, rollouts won vs lost."""
    panels = (("parseable", "unparseable", "step scores: parseable (left) vs unparseable (right)"),
              ("success", "failure", "trajectory scores: success (left) vs failure (right)"))
    for ax, (a, b, title) in zip(axes, panels):
        labels = [k for k, v in report.spread.items() if v[a] and v[b]]
        if not labels:
            ax.set_axis_off()
            continue
        data = [x for k in labels for x in (report.spread[k][a], report.spread[k][b])]
        positions = [p for i in range(len(labels)) for p in (3 * i, 3 * i + 1)]
        boxes = ax.boxplot(data, positions=positions, widths=0.8, showfliers=False, patch_artist=True)
        for i, patch in enumerate(boxes["boxes"]):
            patch.set_facecolor("#9ecae1" if i % 2 == 0 else "#fc9272")
        ax.set_xticks([3 * i + 0.5 for i in range(len(labels))], labels, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("score (z-scored per scorer)")
        ax.set_title(title, fontsize=9)


def write_plots(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write every view of :data:`PLOTS` that has data as ``out_dir/<name>.png``; returns name -> path.
    A view left out this time is removed if an earlier report of the folder wrote it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = report.summary
    available = summary.get("available", {})
    # Run order, arms and scorers of every row included: the same key gets the same style everywhere.
    arms = styles(list(dict.fromkeys([*summary["run"]["arms"], *summary["tts_arms"]])))
    scorers = styles(list(dict.fromkeys([*summary["run"]["scorers"], *summary["uq"]])))
    wanted = {"best_of_n": bool(summary["best_of_n"]), "roc": available.get("roc", True),
              "attribution": available.get("fa", True),
              "diagnostics": any((v["parseable"] and v["unparseable"]) or (v["success"] and v["failure"])
                                 for v in report.spread.values())}
    paths = {}
    for name in PLOTS:
        path = out_dir / f"{name}.png"
        if not wanted.get(name, True):
            path.unlink(missing_ok=True)
            continue
        ncols = {"best_of_n": len(summary["best_of_n"]), "diagnostics": 2,
                 "budget_tuning": len(report.budget.cells) if report.budget else 1}.get(name, 1)
        plt, fig, axes = _figure(ncols)
        if name == "success_vs_compute":
            _success_vs_compute(axes[0], summary, arms)
        elif name == "best_of_n":
            _best_of_n(axes, summary, scorers)
        elif name == "roc":
            _roc(axes[0], report, scorers)
        elif name == "reliability":
            _reliability(axes[0], summary, scorers)
        elif name == "attribution":
            _attribution(axes[0], summary)
        elif name == "diagnostics":
            _spread(axes, report)
        else:
            _budget(axes, report, arms)
        fig.tight_layout()
        paths[name] = path
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return paths
