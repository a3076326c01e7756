"""Load a run folder (``run.json`` + ``episodes.jsonl``, see docs/run_schema.md) and build the report tables.

    from ttsearch.benchmarks.report.tables import build_report, load_run
    run = load_run("runs/exp1")            # ConfigError when the folder or its episodes are missing
    report = build_report(run)             # report.summary is the JSON object `ttsearch report --json` prints
    report.summary["uq"]["progress_advantage"]["auroc"]

Sections of ``summary`` (JSON-able; a metric that is undefined is null, and ``notes`` say why):

* ``tts_arms[arm]``: success rate ± stderr, mean ``usage.tokens`` and generated tokens per arm.
* ``best_of_n[arm]`` (arms whose rows keep their rollouts): for n = 1, 2, 4, …, N the exact
  expected success of re-ranking random size-n subsets by every scorer (``metrics_tts``, ties to
  the earliest rollout like the controller; rows with fewer rollouts limit N), pass@1 and the
  oracle pass@n (unbiased pass@k).
* ``tts[scorer]``: ``success_rate`` = best-of-N at the largest N, from the arm with rollouts that
  has the largest N (the first such arm in run order; named in ``arm``).
* ``uq[scorer]``: AUROC, AUPRC, Spearman ρ vs reward, ECE + reliability bins over the pool:
  every rollout of the rows of ``applications.uq_fa_arms`` (their returned trajectory when a
  row has no rollouts; every arm when the list is missing or empty).
* ``fa[scorer]``: over the FAILED pool trajectories with a true decisive step, accuracy and MAE
  of ``min_cumulative`` plus every method under ``methods``; ``fa_baselines``: blaming the first
  step, the last step or a uniformly random step on the same failures.
* ``budget``: per difficulty × arm success and mean tokens, and the compute-optimal arm (the
  group ``all`` alone when the tasks have one difficulty, or none known: another group would
  only repeat it).
* ``diagnostics``: per scorer, step scores of parseable vs unparseable steps, trajectory scores
  of successful vs failed rollouts, and what each best-of-N pick contains and which step
  decided it (``diagnostics.py``).
* ``selection[arm]``: best-of-n re-ranking by majority vote and each scorer's weighted votes on
  the rollouts' final answers (envs with ``has_final_answer``; ``sections.py``).
* ``alpha_sweep``: progress-advantage scorers against the pair's reference and every merged
  reference π_α (labels ``<scorer>@<merge>-<α>``), side by side.
* ``tuned``: the picks of ``ttsearch tune-scorer`` (``DIR/tuned_scorers.yaml``) evaluated on the
  tasks they were not tuned on, beside the paper's default cell on the same tasks.
* ``scorer_specs``: what each label is (name, options such as self-certainty's ``sign``, merged
  reference, tuning provenance), from the manifest.
* ``available``: which optional sections have data (``best_of_n``, ``fa``, ``difficulty``,
  ``roc``); the markdown and the plots leave out the ones that do not, and ``notes`` say why.

Difficulty and failure-attribution truth come from the environment: an env registered with an
attribution module (``register(name, Env, tasks=..., attribution="my_pkg.attribution")``, a
module with ``task_info(task) -> {"difficulty": ...}`` and ``decisive_mistake(trajectory) ->
{"decisive_step": ...}``) gets both recorded in every row by ``ttsearch run``
(``benchmarks/run/episode_record.py``); without one they are null.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsearch.benchmarks.report.budget_tuning import ALL, BudgetTable, EpisodeOutcome, tune
from ttsearch.benchmarks.report.diagnostics import diagnostics, standardised
from ttsearch.benchmarks.report.metrics_fa import all_methods, positional_baselines
from ttsearch.benchmarks.report.metrics_tts import (
    best_of_n_curve,
    mean_and_stderr,
    pass_at_k,
    subset_sizes,
)
from ttsearch.benchmarks.report.metrics_uq import roc_points, uq_metrics
from ttsearch.benchmarks.report.sections import alpha_sweep, selection_section, tuned_section
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers.metrics import success_rate_and_stderr

EPISODES_FILE, MANIFEST_FILE, TUNED_FILE = "episodes.jsonl", "run.json", "tuned_scorers.yaml"
UNKNOWN_DIFFICULTY = "unknown"
ATTRIBUTION_HOOK = ("register the env with an attribution module: register(name, Env, tasks=..., "
                    "attribution='my_pkg.attribution'), a module with task_info(task) -> {'difficulty': ...} "
                    "and decisive_mistake(trajectory) -> {'decisive_step': ...}")
"""How an environment provides difficulty and failure-attribution truth (said in the notes)."""


@dataclass(frozen=True, slots=True)
class RunData:
    directory: Path
    manifest: dict[str, Any]
    rows: tuple[dict[str, Any], ...]
    """Finished episodes (the metrics' input)."""
    notes: tuple[str, ...] = ()
    errors: tuple[dict[str, Any], ...] = ()
    """Episodes an env fault ended (``error`` rows): counted, never scored."""
    validation: tuple[dict[str, Any], ...] = ()
    """Finished episodes of validation tasks (``task.role``): for ``ttsearch tune-scorer`` only."""


@dataclass(frozen=True, slots=True)
class Report:
    """``summary`` (the JSON object) plus what the plots need beyond it."""

    summary: dict[str, Any]
    roc: dict[str, tuple[list[float], list[float]] | None] = field(default_factory=dict)
    budget: BudgetTable | None = None
    spread: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Per scorer, z-scored step / trajectory scores by parse and outcome (the diagnostics plot)."""


def load_run(directory: str | Path) -> RunData:
    """Read the manifest (optional) and the finished episodes; a trailing partial line is ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"run folder {directory} does not exist; pass the --out folder of `ttsearch run`")
    path = directory / EPISODES_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing; run `ttsearch run CONFIG --out {directory}` first")
    notes: list[str] = []
    manifest: dict[str, Any] = {}
    if (directory / MANIFEST_FILE).is_file():
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{directory / MANIFEST_FILE} is not valid JSON ({err.msg}); rerun or remove it") from None
    else:
        notes.append(f"no {MANIFEST_FILE}: every arm is pooled for UQ/FA and scorer labels come from the rows")
    lines = path.read_text().split("\n")
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: a crash mid-write, resume drops it too
                notes.append(f"ignored a partial last line of {EPISODES_FILE}")
                continue
            raise ConfigError(f"line {number} of {path} is not JSON; the file is damaged (rerun with --resume)") from None
        key = row.get("key", f"line{number}")
        if key in rows and not rows[key].get("error"):  # only an error row may be superseded (a retry)
            notes.append(f"duplicate key {key!r} ignored")
            continue
        rows[key] = row
    errors = tuple(r for r in rows.values() if r.get("error"))
    finished = tuple(r for r in rows.values() if not r.get("error"))
    if errors:
        kinds = sorted({r["error"]["kind"] for r in errors})
        notes.append(f"{len(errors)} episodes ended by an env fault ({', '.join(kinds)}) are left out; "
                     "`ttsearch run CONFIG --out DIR --resume --retry-errors` reruns them")
    validation = tuple(r for r in finished if (r.get("task") or {}).get("role") == "validation")
    finished = tuple(r for r in finished if (r.get("task") or {}).get("role") != "validation")
    if validation:
        notes.append(f"{len(validation)} episodes of validation tasks are left out of every table "
                     "(`ttsearch tune-scorer` tunes on them)")
    if not finished:
        raise ConfigError(f"{path} has no finished episodes yet; wait for the run or check its log")
    return RunData(directory, manifest, finished, tuple(notes), errors, validation)


def _arms(run: RunData) -> list[str]:
    order = [a["name"] for a in run.manifest.get("arms", []) if isinstance(a, dict) and "name" in a]
    return order + sorted({r["arm"] for r in run.rows} - set(order))


def _scorers(run: RunData) -> list[str]:
    labels = list(run.manifest.get("scorers") or [])
    seen = {label for r in run.rows for t in _trajectories(r) for label in (t.get("scores") or {})}
    return labels + sorted(seen - set(labels))


def _trajectories(row: dict[str, Any]) -> list[dict[str, Any]]:
    return list(row["rollouts"]) if row.get("rollouts") else [row["trajectory"]]


def _score(traj: dict[str, Any], label: str, kind: str = "trajectory") -> Any:
    return ((traj.get("scores") or {}).get(label) or {}).get(kind)


def _tts_arms(run: RunData, arms: list[str]) -> dict[str, Any]:
    out = {}
    for arm in arms:
        rows = [r for r in run.rows if r["arm"] == arm]
        if not rows:
            continue
        p, stderr = success_rate_and_stderr([bool(r["success"]) for r in rows])
        out[arm] = {"n": len(rows), "success_rate": p, "stderr": stderr,
                    "mean_tokens": mean_and_stderr([r["usage"].get("tokens", 0) for r in rows])[0],
                    "mean_generated_tokens": mean_and_stderr([r["usage"].get("generated_tokens", 0) for r in rows])[0],
                    "controller": rows[0].get("controller"), "search_scorer": rows[0].get("search_scorer")}
    return out


def _best_of_n(run: RunData, arms: list[str], scorers: list[str]) -> dict[str, Any]:
    out = {}
    for arm in arms:
        rows = [r for r in run.rows if r["arm"] == arm and r.get("rollouts")]
        if not rows:
            continue
        success = [[float(t["success"]) for t in r["rollouts"]] for r in rows]
        n_max = min(len(s) for s in success)
        sizes = subset_sizes(n_max)
        entry: dict[str, Any] = {"rows": len(rows), "n_max": n_max, "ns": sizes,
                                 "pass_at_1": mean_and_stderr([sum(s) / len(s) for s in success])[0],
                                 "oracle_pass_at_n": {str(n): mean_and_stderr([pass_at_k(s, n) for s in success])[0]
                                                      for n in sizes},
                                 "scorers": {}}
        for label in scorers:
            tasks = [([_score(t, label) for t in r["rollouts"]], s) for r, s in zip(rows, success)]
            curve = best_of_n_curve(tasks)
            entry["scorers"][label] = {str(n): {"mean": m, "stderr": e} for n, (m, e) in curve.items()}
        out[arm] = entry
    return out


def _tts_headline(best: dict[str, Any], scorers: list[str], notes: list[str]) -> dict[str, Any]:
    if not best:
        notes.append("TTS best-of-N is null: no row kept its rollouts (only trajectory_best_of_n rows do)")
        return {label: {"success_rate": None, "stderr": None, "arm": None, "n": None} for label in scorers}
    arm = max(best, key=lambda a: best[a]["n_max"])  # max keeps the first of equals: run order
    entry = best[arm]
    out = {}
    for label in scorers:
        point = entry["scorers"][label][str(entry["n_max"])]
        out[label] = {"success_rate": point["mean"], "stderr": point["stderr"], "arm": arm, "n": entry["n_max"]}
    return out


def _pool(run: RunData, arms: list[str], notes: list[str]) -> list[dict[str, Any]]:
    chosen = list(run.manifest.get("applications", {}).get("uq_fa_arms") or [])
    if not chosen:
        chosen = arms
        notes.append("applications.uq_fa_arms is empty or missing: the UQ/FA pool uses every arm")
    return [t for r in run.rows if r["arm"] in chosen for t in _trajectories(r)]


def _uq(pool: list[dict[str, Any]], scorers: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    out, roc = {}, {}
    for label in scorers:
        scores = [_score(t, label) for t in pool]
        out[label] = uq_metrics(scores, [float(t["success"]) for t in pool], [float(t["reward"]) for t in pool])
        kept = [(s, float(t["success"])) for s, t in zip(scores, pool) if s is not None]
        roc[label] = roc_points([s for s, _ in kept], [y for _, y in kept])
    return out, roc


def _fa(pool: list[dict[str, Any]], scorers: list[str]) -> dict[str, Any]:
    failures = [t for t in pool if not t["success"] and (t.get("truth") or {}).get("decisive_step") is not None]
    out = {}
    for label in scorers:
        usable = [t for t in failures if _score(t, label, "steps") is not None
                  and all(v is not None for v in _score(t, label, "steps"))]
        methods = all_methods([_score(t, label, "steps") for t in usable], [t["truth"]["decisive_step"] for t in usable])
        best = methods["min_cumulative"]
        notes = [] if failures else ["no failed trajectory with a known decisive step in the pool"]
        if len(usable) < len(failures):
            notes.append(f"{len(failures) - len(usable)} failures lack step scores for this scorer")
        out[label] = {"accuracy": best["accuracy"], "mae": best["mae"], "n": best["n"], "methods": methods,
                      "notes": notes}
    return out


def _fa_baselines(pool: list[dict[str, Any]]) -> dict[str, Any]:
    failures = [t for t in pool if not t["success"] and (t.get("truth") or {}).get("decisive_step") is not None]
    return positional_baselines([t["n_steps"] for t in failures], [t["truth"]["decisive_step"] for t in failures])


def _budget(run: RunData, tolerance: float | None, notes: list[str]) -> tuple[dict[str, Any], BudgetTable]:
    outcomes = [EpisodeOutcome(str(((r.get("task") or {}).get("info") or {}).get("difficulty") or UNKNOWN_DIFFICULTY),
                               r["arm"], bool(r["success"]), float(r["usage"].get("tokens", 0))) for r in run.rows]
    table = tune(outcomes, tolerance=tolerance)
    groups = [d for d in table.cells if d != ALL]
    if len(groups) == 1:  # the one group repeats "all": leave it out
        notes.append("budget tuning per difficulty: no task has a known difficulty; " + ATTRIBUTION_HOOK
                     if groups == [UNKNOWN_DIFFICULTY] else
                     f"budget tuning: every task has difficulty {groups[0]!r}, so only 'all' is shown")
        table = BudgetTable(*({ALL: part[ALL]} for part in (table.cells, table.best, table.choice, table.tolerance)))
    out = {}
    for difficulty, cells in table.cells.items():
        out[difficulty] = {"best": table.best[difficulty].arm, "choice": table.choice[difficulty].arm,
                           "tolerance": table.tolerance[difficulty],
                           "arms": [{"arm": c.arm, "n": c.n, "success_rate": c.success, "stderr": c.stderr,
                                     "mean_tokens": c.mean_tokens} for c in cells]}
    rule = "1 stderr of the best arm" if tolerance is None else f"absolute {tolerance:g}"
    return {"tolerance_rule": rule, "difficulties": out}, table


def build_report(run: RunData, *, tolerance: float | None = None) -> Report:
    """Every application's metrics from the rows (module docstring); ``tolerance`` for budget tuning."""
    notes = list(run.notes)
    arms, scorers = _arms(run), _scorers(run)
    best = _best_of_n(run, arms, scorers)
    pool = _pool(run, arms, notes)
    uq, roc = _uq(pool, scorers)
    budget, table = _budget(run, tolerance, notes)
    fa = _fa(pool, scorers)
    has_truth = any((t.get("truth") or {}).get("decisive_step") is not None for t in pool)
    if not has_truth:
        failures = sum(not t["success"] for t in pool)
        notes.append("failure attribution left out: " + (
            "no failed trajectory in the UQ/FA pool" if not failures else
            f"none of the {failures} failed trajectories has a known decisive step; " + ATTRIBUTION_HOOK))
    extra = _extra_sections(run, arms, scorers, pool, notes)
    summary = {
        "run": {"dir": str(run.directory), "episodes": len(run.rows), "env_errors": len(run.errors),
                "arms": arms, "scorers": scorers,
                "uq_fa_arms": list(run.manifest.get("applications", {}).get("uq_fa_arms") or arms),
                "pool_trajectories": len(pool), "config_hash": run.manifest.get("config_hash")},
        "tts": _tts_headline(best, scorers, notes),
        "tts_arms": _tts_arms(run, arms),
        "best_of_n": best,
        "uq": uq,
        "fa": fa,
        "fa_baselines": _fa_baselines(pool),
        "budget": budget,
        **extra,
        "available": {"best_of_n": bool(best), "fa": any(m["n"] for m in fa.values()),
                      "difficulty": len(table.cells) > 1, "roc": any(p is not None for p in roc.values()),
                      **{name: extra[name] is not None for name in ("selection", "tuned")},
                      "diagnostics": any(v is not None for part in extra["diagnostics"].values() for v in part.values())},
        "notes": notes,
    }
    summary["alpha_sweep"] = alpha_sweep(summary, extra["scorer_specs"])
    summary["available"]["alpha_sweep"] = summary["alpha_sweep"] is not None
    return Report(summary, roc, table, {label: standardised(pool, label) for label in scorers})


def _extra_sections(run: RunData, arms: list[str], scorers: list[str], pool: list[dict[str, Any]],
                    notes: list[str]) -> dict[str, Any]:
    """Diagnostics, voting selection, tuned cells and the scorers' specs (``sections.py``)."""
    with_rollouts = [r for r in run.rows if r.get("rollouts")]
    pool_arms = list(run.manifest.get("applications", {}).get("uq_fa_arms") or [])
    out = {"diagnostics": diagnostics(pool, with_rollouts, scorers),
           "selection": selection_section(list(run.rows), arms, scorers),
           "tuned": tuned_section(list(run.rows), pool_arms, run.directory / TUNED_FILE),
           "scorer_specs": dict(run.manifest.get("scorer_specs") or {})}
    if out["selection"] is None and with_rollouts:
        notes.append("voting selection left out: no rollout has a final answer (envs with Env.has_final_answer)")
    return out
