"""What the unmatched objects are: the harness's pairs, a method's false positives sorted by kind.

Instance F1 counts every unmatched proposal alike. To know which step to improve, each proposal with no
true object at IoU ≥ 0.5 is put in one of four kinds (:func:`classify_proposals`):

- ``small``: under ``--small-fraction`` (default 0.15, the forest baseline's size floor) of the
  reference's median object area;
- ``spurious``: less than half of it lies on true objects (background taken for object);
- ``merge``: it covers two or more true objects and none holds 80 % of its object pixels;
- ``part``: the rest, mostly a fragment of one true object (over-splitting or a too small piece).

Runs the model as ``bench/evaluate.py`` does (calibrate + refine) and the random forest + border on the
same pairs; prints totals per dataset and method. Reads ``../shared/data``; run by hand::

    python bench/error_breakdown.py --datasets epfl isbi2012 --max-refs 2 --max-targets 3
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate  # noqa: E402
from baselines import RandomForestBaseline  # noqa: E402
from model_runner import ModelRunner, make_model  # noqa: E402

__all__ = ["classify_proposals"]

KINDS = ("tp", "small", "part", "merge", "spurious", "fn")


def classify_proposals(truth: np.ndarray, proposals: np.ndarray, small_area: float) -> Counter:
    """Count matched proposals (``tp``), unmatched ones by kind, and missed true objects (``fn``).

    Parameters
    ----------
    truth, proposals : np.ndarray
        Instance label images of one target (0 = background).
    small_area : float
        Unmatched proposals under this many pixels are ``small``.
    """
    truth, proposals = np.asarray(truth), np.asarray(proposals)
    true_area = np.bincount(truth.ravel())
    counts: Counter = Counter({kind: 0 for kind in KINDS})
    matched: set[int] = set()
    for value in np.unique(proposals[proposals > 0]):
        mask = proposals == value
        area = int(mask.sum())
        hits, overlap = np.unique(truth[mask], return_counts=True)
        on_objects = hits != 0
        hits, overlap = hits[on_objects], overlap[on_objects]
        iou = overlap / (area + true_area[hits] - overlap) if len(hits) else np.zeros(0)
        if len(hits) and iou.max() >= 0.5:  # at most one true object can reach 0.5
            counts["tp"] += 1
            matched.add(int(hits[iou.argmax()]))
        elif area < small_area:
            counts["small"] += 1
        elif overlap.sum() < 0.5 * area:
            counts["spurious"] += 1
        elif len(hits) >= 2 and overlap.max() < 0.8 * overlap.sum():
            counts["merge"] += 1
        else:
            counts["part"] += 1
    counts["fn"] = int(np.count_nonzero(true_area[1:])) - len(matched)
    return counts


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(evaluate.DATASETS), default=["epfl"])
    parser.add_argument("--max-refs", type=int, default=2)
    parser.add_argument("--max-targets", type=int, default=3)
    parser.add_argument("--model", default="sine-embedded")
    parser.add_argument("--refine", type=int, default=400, help="refiner budget in steps")
    parser.add_argument("--small-fraction", type=float, default=0.15)
    args = parser.parse_args(argv)
    model, pad = make_model(args.model)
    runners = [ModelRunner(model, f"SINE ({args.model} + calibrate + refine {args.refine} steps)", pad=pad,
                           calibrate=True, refine_steps=args.refine, instance_sources=["semantic"]),
               RandomForestBaseline(border=True)]
    totals: dict = {}
    for dataset in args.datasets:
        groups = evaluate.DSB_HELDOUT_GROUPS if dataset == "dsb2018" else None
        plan = evaluate.plan_pairs(dataset, evaluate.load_groups(dataset, groups=groups), args.max_refs,
                                   args.max_targets)
        for runner in runners:
            total: Counter = Counter()
            for pairing in plan:
                labels = evaluate.load_labels(pairing.reference.labels)
                runner.fit(evaluate.load_image(pairing.reference.image), labels)
                areas = np.bincount(labels.ravel())[1:]
                small = args.small_fraction * float(np.median(areas[areas > 0]))
                loaded = [(evaluate.load_image(t.image), evaluate.load_labels(t.labels))
                          for t in pairing.targets]
                predictions = runner.predict(image for image, _ in loaded)
                for (_, truth), pred in zip(loaded, predictions, strict=True):
                    total.update(classify_proposals(truth, pred["instance"], small))
            totals[(dataset, runner.name)] = total
            print(f"{dataset:<11} {runner.name:<45} " + " ".join(f"{k} {total[k]:>5}" for k in KINDS),
                  flush=True)
    return totals


if __name__ == "__main__":
    main()
