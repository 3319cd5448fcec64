"""Fitting recipes and the forest + border on the same pairs, one method per process, results per reference.

The one-shot harness (``bench/evaluate.py``) runs its methods one after the other; on a shared CPU a
calibrated runner can take hours. This script runs *one* method over the harness's pairs and appends each
reference's records to a JSON file as soon as they exist, so several methods can run side by side and a run
stopped early still compares methods on the pairs they all finished. References are taken in interleaved
order (the first reference of every group of every set, then the second ones), so a partial run covers all
sets. ``--table`` reads such files and prints, per method, instance F1 per set (mean over the pairs that
every given method finished), the spread over reference choices, and the seconds before the first target
(the fit) and per target. Reads ``../shared/data``; run by hand::

    OMP_NUM_THREADS=1 python bench/recipe_compare.py refine --out /tmp/refine.json
    OMP_NUM_THREADS=1 python bench/recipe_compare.py calibrate-refine --out /tmp/calibrate_refine.json
    python bench/recipe_compare.py --table /tmp/refine.json /tmp/calibrate_refine.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate  # noqa: E402
from baselines import RandomForestBaseline  # noqa: E402
from model_runner import ModelRunner, make_model  # noqa: E402

#: Method name -> ModelRunner options (None: the forest + border baseline).
METHODS: dict[str, dict | None] = {
    # the preset's recipe as a user gets it (automatic scale; stages and refiner from the preset)
    "default-recipe": dict(calibrate=None, refine_steps=None, scale=None),
    "calibrate-refine": dict(calibrate=True, refine_steps=400, refine_with_model=True, refine_forest=False),
    "refine": dict(refine_steps=400, refine_with_model=True, refine_forest=False),
    "refiner-without-model": dict(refine_steps=400, refine_with_model=False, refine_forest=False),
    "model-alone": dict(),
    "forest-border": None,
}
SETS = ("dsb2018", "miccai2015", "isbi2012", "epfl")


def interleaved_plan(max_refs: int, max_targets: int, sets: Sequence[str] = SETS) -> list[evaluate.Pairing]:
    """The harness's pairs, references in rounds: every group's first reference, then the second ones."""
    plans = []
    for dataset in sets:
        groups = evaluate.DSB_HELDOUT_GROUPS if dataset == "dsb2018" else None
        plans.append(evaluate.plan_pairs(dataset, evaluate.load_groups(dataset, groups=groups), max_refs,
                                         max_targets))
    by_group: dict[tuple[str, str], list[evaluate.Pairing]] = {}
    for pairing in (p for plan in plans for p in plan):
        by_group.setdefault((pairing.dataset, pairing.group), []).append(pairing)
    rounds = max(len(v) for v in by_group.values())
    return [refs[k] for k in range(rounds) for refs in by_group.values() if k < len(refs)]


def run(method: str, out: Path, max_refs: int, max_targets: int, sets: Sequence[str] = SETS) -> None:
    options = METHODS[method]
    if options is None:
        runner = RandomForestBaseline(border=True, n_jobs=1)
    else:
        model, pad = make_model("sine-embedded")
        runner = ModelRunner(model, method, pad=pad, instance_sources=["semantic"], **options)
    runner.name = method
    records: list[dict] = []
    for pairing in interleaved_plan(max_refs, max_targets, sets):
        found = evaluate.run_plan(runner, [pairing], id_crops=False, log=lambda s: print(s, flush=True))
        records += [r for r in found if not r["method"].endswith("[components instances]")]
        out.write_text(json.dumps(records, indent=1, default=str))


def f1_cell(rows: Sequence[dict]) -> tuple[str, float | None]:
    """One set's table cell from its pair records: mean F1 (lowest–highest mean of one reference's
    targets, pairs), and the mean (None and "—" without records)."""
    if not rows:
        return "—", None
    per_ref: dict[str, list[float]] = {}
    for r in rows:
        per_ref.setdefault(r["reference"], []).append(r["f1"])
    ref_means = [float(np.mean(v)) for v in per_ref.values()]
    mean = float(np.mean([r["f1"] for r in rows]))
    return f"{mean:.3f} ({min(ref_means):.2f}–{max(ref_means):.2f}, {len(rows)})", mean


def table(paths: Sequence[Path]) -> str:
    """Markdown rows: F1 per set (spread over references, pairs), mean, fit seconds, seconds per target."""
    runs: dict[str, list[dict]] = {}
    for path in paths:  # files of one method (e.g. one per set) are merged
        records = json.loads(Path(path).read_text())
        if records:
            runs.setdefault(records[0]["method"], []).extend(records)
    key = lambda r: (r["reference"], r["target"])  # noqa: E731
    common = set.intersection(*({key(r) for r in records} for records in runs.values()))
    lines = ["| method | " + " | ".join(SETS) + " | mean | fit s (median, range) | s/target (median) |",
             "|---|" + "---|" * (len(SETS) + 3)]
    for records in runs.values():
        records = [r for r in records if key(r) in common]
        method = records[0]["method"] if records else "?"
        cells, means = [], []
        for dataset in SETS:
            cell, mean = f1_cell([r for r in records if r["dataset"] == dataset])
            cells.append(cell)
            means += [] if mean is None else [mean]
        fits = sorted({(r["reference"], r["fit_s"]) for r in records})
        fit_s = [f for _, f in fits]
        per_target = [r["predict_s"] for r in records]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | **{np.mean(means):.3f}** | "
                     f"{np.median(fit_s):.0f} ({min(fit_s):.0f}–{max(fit_s):.0f}) | "
                     f"{np.median(per_target):.1f} |")
    return "\n".join(lines) + f"\n\n{len(common)} pairs common to all methods."


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("method", nargs="?", choices=sorted(METHODS))
    parser.add_argument("--out", type=Path, help="JSON file of per-pair records (rewritten per reference)")
    parser.add_argument("--max-refs", type=int, default=2)
    parser.add_argument("--max-targets", type=int, default=2)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS),
                        help="datasets, in this order within each round of references")
    parser.add_argument("--table", nargs="+", type=Path, help="print the comparison of these JSON files")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
    elif args.method and args.out:
        run(args.method, args.out, args.max_refs, args.max_targets, args.sets)
    else:
        parser.error("give a METHOD and --out, or --table FILE ...")


if __name__ == "__main__":
    main()
