"""Markdown of the report's newer sections: scorer specs, voting selection, diagnostics, α sweep, tuned cells.

    lines = scorers_md(summary) + selection_md(summary) + diagnostics_md(summary) + alpha_md(summary) + tuned_md(summary)

Each returns [] when its section has no data (the notes say why); ``report_cmd.to_markdown``
places them among the application tables.
"""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _options(spec: dict[str, Any]) -> str:
    kwargs = {k: v for k, v in (spec.get("kwargs") or {}).items() if k != "beta"}
    return ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"


def scorers_md(summary: dict[str, Any]) -> list[str]:
    """What each scorer label is: name, options (self-certainty's sign spelled out), reference."""
    specs = summary.get("scorer_specs") or {}
    if not specs:
        return []
    rows = []
    for label, spec in specs.items():
        sign = (spec.get("kwargs") or {}).get("sign")
        if spec["name"] in ("self_certainty", "deepconf_tail", "deepconf_bottom10"):
            sign = sign or "deepconf"
        sign_text = {"paper": "paper: +mean top-k log-prob", "deepconf": "DeepConf: −mean top-k log-prob"}.get(sign, "")
        merge = spec.get("reference")
        reference = "pair's" if merge is None else f"{merge['merge']} α={merge['alpha']:g}"
        rows.append([label, spec["name"], _options(spec), sign_text, reference, "tuned" if spec.get("tuned") else ""])
    return ["## Scorers", ""] + table(["label", "scorer", "options", "sign", "reference", ""], rows)


def selection_md(summary: dict[str, Any]) -> list[str]:
    out = []
    for arm, entry in (summary.get("selection") or {}).items():
        n = str(entry["ns"][-1])
        best = (summary.get("best_of_n") or {}).get(arm, {}).get("scorers", {})
        rows = [[label, (best.get(label) or {}).get(n, {}).get("mean"), modes["weighted"][n]["mean"],
                 modes["weighted_majority"][n]["mean"]] for label, modes in entry["scorers"].items()]
        rows.append(["majority vote (no scorer)", None, entry["majority"][n]["mean"], None])
        out += [f"## Best-of-n with votes on the final answer: {arm} ({entry['rows']} tasks, n = {n})", "",
                "best: highest score; weighted: softmax-weighted vote (τ = the scores' std); weighted majority: "
                "vote weighted by min–max-scaled scores (search/selection.py).", ""]
        out += table(["scorer", "best", "weighted", "weighted majority"], rows)
    return out


def diagnostics_md(summary: dict[str, Any]) -> list[str]:
    d = summary.get("diagnostics") or {}
    parse = {k: v for k, v in (d.get("parse") or {}).items() if v is not None}
    outcome = {k: v for k, v in (d.get("outcome") or {}).items() if v is not None}
    picks = {k: v for k, v in (d.get("picks") or {}).items() if v is not None}
    out = []
    if parse:
        out += ["## Diagnostics: parseable vs unparseable steps", "",
                "Step scores over the pool; P(unparseable > parseable) near 1 means the scorer prefers turns "
                "the parser could not read.", ""]
        out += table(["scorer", "parseable n", "mean", "p50", "p90", "unparseable n", "mean", "p50", "p90",
                      "P(unparseable > parseable)"],
                     [[k, v["parseable"]["n"], v["parseable"]["mean"], v["parseable"]["p50"], v["parseable"]["p90"],
                       v["unparseable"]["n"], v["unparseable"]["mean"], v["unparseable"]["p50"],
                       v["unparseable"]["p90"], v["p_unparseable_higher"]] for k, v in parse.items()])
    if outcome:
        out += ["## Diagnostics: successful vs failed rollouts", ""]
        out += table(["scorer", "success n", "mean", "p50", "failure n", "mean", "p50", "P(success > failure)"],
                     [[k, v["success"]["n"], v["success"]["mean"], v["success"]["p50"], v["failure"]["n"],
                       v["failure"]["mean"], v["failure"]["p50"], v["p_success_higher"]] for k, v in outcome.items()])
    if picks:
        out += ["## Diagnostics: what decides each best-of-N pick", "",
                "Each scorer's pick among all N rollouts of every row; its deciding step is its highest-scored step.", ""]
        out += table(["scorer", "picks", "success", "picks with an unparseable step", "all rollouts with one",
                      "deciding step unparseable"],
                     [[k, v["picks"], v["success"], v["picks_with_unparseable"], v["rollouts_with_unparseable"],
                       v["deciding_step_unparseable"]] for k, v in picks.items()])
        examples = [[k, e["task"], e["rollout"], e["step"], repr(e["action_text"])[:40], e["step_score"], e["success"]]
                    for k, v in picks.items() for e in v["examples"]]
        if examples:
            out += ["Picks decided by an unparseable step (first few per scorer):", ""]
            out += table(["scorer", "task", "rollout", "step", "action text", "step score", "success"], examples)
    return out


def alpha_md(summary: dict[str, Any]) -> list[str]:
    sweep = summary.get("alpha_sweep")
    if not sweep:
        return []
    header = ["reference", "merge", "α"] + [f"{s} {m}" for s in sweep["scorers"] for m in ("best-of-N", "AUROC", "FA acc.")]
    rows = [[r["reference"], r["merge"] or "-", r["alpha"]]
            + [r["cells"][s][m] for s in sweep["scorers"] for m in ("best_of_n", "auroc", "fa_accuracy")]
            for r in sweep["rows"]]
    return ["## Merged references: the α sweep", "",
            "Progress advantage against π_α = π_ref + α·(π_θ − π_ref) (α = 0: the pair's reference).", ""] + table(header, rows)


def tuned_md(summary: dict[str, Any]) -> list[str]:
    tuned = summary.get("tuned")
    if not tuned:
        return []
    validation = tuned.get("validation") or {}
    rows = [[c["label"] + " (tuned)", c["objective"], c["name"], _options(c), c["reference"] or "pair's",
             c["validation_value"], c["test"]["value"], c["test"]["stderr"], c["default_test"]["value"],
             c["default_test"]["stderr"]] for c in tuned["cells"]]
    return ["## Tuned cells (picked on validation tasks, evaluated on test tasks only)", "",
            f"Tuned on {validation.get('how', '?')} ({len(validation.get('tasks') or [])} tasks); evaluated on the "
            f"{tuned['test_tasks']} other tasks, beside the paper's default (PA, mean × mean) on the same tasks.", ""] + table(
        ["cell", "objective", "scorer", "options", "reference", "validation", "test", "± stderr", "default test",
         "± stderr"], rows)
