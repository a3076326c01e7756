"""`ttsearch tune-scorer`: pick PA's aggregation (variant, merged reference) on validation tasks only.

    ttsearch tune-scorer runs/paper-maze                            # the run config's validation tasks
    ttsearch tune-scorer runs/paper-maze --validation-seeds 0-49    # or these task seeds
    ttsearch tune-scorer runs/x --objectives auroc --out tuned.yaml --json

Reads the run's rows (their per-step token data, schema 3), searches every progress-advantage
cell the data allows (``benchmarks/report/tuning.py``) on the validation rows alone, one pick
per objective (best-of-N success, AUROC), and writes them as a YAML scorer spec (default
``RUN_DIR/tuned_scorers.yaml``): its ``scorers:`` entries are valid entries of a run config's
``scorers:`` list, with ``tuned:`` saying what was picked on what. ``ttsearch report RUN_DIR``
then shows each tuned cell evaluated on the other (test) tasks only, marked as tuned, next to the
paper's default cell on the same tasks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from ttsearch.agents.checkpoints.merge import ReferenceMerge
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.benchmarks.report.tables import load_run
from ttsearch.benchmarks.report.tuning import OBJECTIVES, tune
from ttsearch.envs.errors import ConfigError, TtsearchError

TUNED_FILE = "tuned_scorers.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="run folder (the --out of `ttsearch run`)")
    parser.add_argument("--validation-seeds", default=None,
                        help="task seeds to tune on, e.g. 0-49,60 (default: the run config's validation tasks)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated: best_of_n, auroc")
    parser.add_argument("--out", default=None, help=f"the spec file (default DIR/{TUNED_FILE})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def parse_seeds(text: str) -> set[int]:
    """``"0-49,60"`` -> {0, ..., 49, 60}."""
    seeds: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            seeds.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(f"--validation-seeds {text!r} must look like 0-49,60") from None
    return seeds


def _references(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Merged-reference label -> its config entry ({merge, alpha, density, seed})."""
    config = manifest.get("config") or {}
    entries = list(config.get("reference_variants") or [])
    entries += [s["reference"] for s in config.get("scorers") or [] if s.get("reference")]
    out = {}
    for entry in entries:
        merge = ReferenceMerge.from_dict(entry)
        out[merge.label] = {k: v for k, v in merge.to_dict().items() if v is not None}
    return out


def _beta(manifest: dict[str, Any]) -> float:
    try:
        return PairManifest.read(manifest["pair"]).beta
    except (KeyError, TypeError, TtsearchError):  # a run folder moved elsewhere: β is only a scale
        return 1.0


def main(args: argparse.Namespace) -> int:
    run = load_run(args.dir)
    everything = [*run.rows, *run.validation]
    if args.validation_seeds is not None:
        seeds = parse_seeds(args.validation_seeds)
        rows, how = [r for r in everything if r["task"].get("seed") in seeds], f"task seeds {args.validation_seeds}"
    else:
        rows, how = list(run.validation), "the run config's validation tasks"
    if not rows:
        raise ConfigError(f"no validation rows in {args.dir} ({how}); give the run config `validation:` tasks "
                          "or pass --validation-seeds")
    pool_arms = list((run.manifest.get("applications") or {}).get("uq_fa_arms") or [])
    picked = tune(rows, pool_arms=pool_arms, references=_references(run.manifest), beta=_beta(run.manifest),
                  objectives=[o for o in args.objectives.split(",") if o])
    tasks = sorted({r["task"]["id"] for r in rows})
    out = {"validation": {"how": how, "episodes": len(rows), "tasks": tasks},
           "scorers": [p["spec"] for p in picked.values() if p is not None]}
    path = Path(args.out) if args.out else run.directory / TUNED_FILE
    header = f"# written by `ttsearch tune-scorer {args.dir}`: picked on {how} ({len(tasks)} tasks) only\n"
    path.write_text(header + yaml.safe_dump(out, sort_keys=False))
    if args.json:
        print(json.dumps({**out, "file": str(path)}))
    else:
        for spec in out["scorers"]:
            t = spec["tuned"]
            print(f"{t['objective']}: {spec['name']} {spec['kwargs']} reference={t['reference_label'] or 'pair'} "
                  f"-> {t['validation_value']:.3f} on validation (paper default {t['default_value']:.3f})")
        print(f"wrote {path}")
    return 0
