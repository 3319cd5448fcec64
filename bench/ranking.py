"""How well "label this next" ranks: uncertainty score vs the real error, on the one-shot harness's pairs.

Pairs as ``bench/evaluate.py`` plans them (per group, references rotated over ``--max-refs`` images,
each with up to ``--max-targets`` other images of the group; DSB2018 restricted to the held-out groups).
For every reference the model (default: the embedded one, references prepared with the defaults of
``napari-sine propagate``: no calibration, adaptation or refinement) propagates to its targets once; each
target gets its uncertainty score (:func:`sine_model.bootstrap.ranking.target_uncertainty`, tiles as the
engine planned them) and its instance F1 at IoU 0.5 against the ground truth. Reported:

* Spearman correlation between the score and 1 − F1, over all targets of a dataset (pooled) and as the
  mean over references of the correlation within each reference's targets (what a user ranks);
* the mean-F1 gain from correcting ``k`` targets of each reference's set (a corrected target counts as
  its ground truth: F1 1): the ``k`` worst-ranked by the score, ``k`` random ones (expectation over all
  choices: exact, no sampling), and the ``k`` truly worst (oracle, the upper bound);
* Spearman of each signal alone (which part of the score carries the information).

Usage::

    python bench/ranking.py --datasets dsb2018 miccai2015 --max-refs 2 --max-targets 6 --out docs/quality.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import DATA_ROOT, DSB_HELDOUT_GROUPS, load_groups, load_image, load_labels, plan_pairs  # noqa: E402
from report import machine_description, write_section  # noqa: E402

from sine_model.bootstrap.ranking import SIGNALS, target_uncertainty  # noqa: E402
from sine_model.engine.tiling import plan_tiles  # noqa: E402
from sine_model.metrics import match_instances  # noqa: E402

SECTION = "## Label this next: ranking quality"


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties); NaN when either side is constant or too short."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def gains(scores: Sequence[float], errors: Sequence[float], k: int) -> tuple[float, float, float]:
    """Mean-F1 gain over the set from correcting k targets: ranked by score, random (expected), oracle."""
    errors = np.asarray(errors, float)
    n = len(errors)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    ranked = errors[order[:k]].sum() / n
    random = k * errors.mean() / n  # every target equally likely among the k corrected
    oracle = np.sort(errors)[::-1][:k].sum() / n
    return float(ranked), float(random), float(oracle)


def like_reference(image: np.ndarray, ref_ndim: int) -> np.ndarray:
    if image.ndim == 3 and ref_ndim == 2:
        return image.mean(-1).astype(image.dtype)
    if image.ndim == 2 and ref_ndim == 3:
        return np.repeat(image[..., None], 3, axis=-1)
    return image


def run(args: argparse.Namespace) -> list[dict]:
    from sine_model import Propagator, ReferencePreparation, from_pretrained

    model = from_pretrained(args.model, args.device)
    records = []
    for dataset in args.datasets:
        groups = load_groups(
            dataset, args.data_root, list(DSB_HELDOUT_GROUPS) if dataset == "dsb2018" else None
        )
        for pairing in plan_pairs(dataset, groups, args.max_refs, args.max_targets):
            ref_image, ref_labels = load_image(pairing.reference.image), load_labels(pairing.reference.labels)
            propagator = Propagator(model, args.device)
            ReferencePreparation(propagator, [(ref_image, ref_labels)]).run()
            loaded = [
                (like_reference(load_image(t.image), ref_image.ndim), load_labels(t.labels))
                for t in pairing.targets
            ]
            start = time.perf_counter()
            for item, (image, truth), result in zip(
                pairing.targets, loaded, propagator.propagate([i for i, _ in loaded]), strict=True
            ):
                tiles = plan_tiles(*image.shape[:2], propagator.tile_extent, propagator.overlap_extent)
                u = target_uncertainty(result.index, result.labels, result.scores, tiles=tiles)
                f1 = match_instances(truth, result.labels["instance"]).f1
                records.append(
                    dict(
                        dataset=dataset,
                        group=pairing.group,
                        reference=pairing.reference.name,
                        target=item.name,
                        score=u.score,
                        f1=f1,
                        objects=u.objects,
                        **u.signals,
                    )
                )
            print(
                f"{dataset}/{pairing.group} ref {pairing.reference.name[:16]}: {len(loaded)} targets in "
                f"{time.perf_counter() - start:.0f} s; F1 "
                + " ".join(f"{r['f1']:.2f}" for r in records[-len(loaded) :]),
                flush=True,
            )
    return records


def summarise(records: list[dict], ks: Sequence[int]) -> list[dict]:
    rows = []
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    for dataset in datasets + (["all"] if len(datasets) > 1 else []):
        chosen = [r for r in records if dataset in ("all", r["dataset"])]
        sets = {}
        for r in chosen:
            sets.setdefault((r["dataset"], r["reference"]), []).append(r)
        within = [spearman([r["score"] for r in s], [1 - r["f1"] for r in s]) for s in sets.values()]
        row = dict(
            dataset=dataset,
            targets=len(chosen),
            references=len(sets),
            mean_f1=float(np.mean([r["f1"] for r in chosen])),
            rho_pooled=spearman([r["score"] for r in chosen], [1 - r["f1"] for r in chosen]),
            rho_within=float(np.nanmean(within)) if not np.all(np.isnan(within)) else float("nan"),
            signals={
                s: spearman(
                    [r[s] for r in chosen if r[s] is not None],
                    [1 - r["f1"] for r in chosen if r[s] is not None],
                )
                for s in SIGNALS
            },
        )
        for k in ks:
            per_set = [
                gains([r["score"] for r in s], [1 - r["f1"] for r in s], k)
                for s in sets.values()
                if len(s) > k
            ]
            row[f"k{k}"] = tuple(float(np.mean(v)) for v in zip(*per_set, strict=True)) if per_set else None
        rows.append(row)
    return rows


def markdown(rows: list[dict], ks: Sequence[int], command: str, meta: dict) -> str:
    def f(x: float) -> str:
        return "–" if x is None or np.isnan(x) else f"{x:+.2f}" if x < 0 else f"{x:.2f}"

    gain_heads = " | ".join(f"gain k={k}: ranked / random / oracle" for k in ks)
    lines = [
        SECTION,
        "",
        f"Measured {meta['date']} with `{command}` ({meta['machine']}; {meta['note']}; "
        f"{meta['seconds']:.0f} s).",
        f"Model {meta['model']}, references prepared with the `propagate` defaults. Score: the mean of the "
        "available signals (`sine_model/bootstrap/ranking.py`). ρ = Spearman between the score and "
        "1 − instance F1 (IoU 0.5): pooled over the dataset's targets, and the mean of the per-reference "
        "correlations (the list a user ranks). Gain = mean-F1 rise of a reference's target set when k of "
        "its targets are corrected (a corrected target counts as its ground truth), averaged over "
        "references.",
        "",
        f"| dataset | targets | refs | mean F1 | ρ pooled | ρ within ref | {gain_heads} |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(ks),
    ]
    for r in rows:
        gain_cells = " | ".join(
            "–" if r[f"k{k}"] is None else " / ".join(f"{v:.3f}" for v in r[f"k{k}"]) for k in ks
        )
        lines.append(
            f"| {r['dataset']} | {r['targets']} | {r['references']} | {r['mean_f1']:.3f} | "
            f"{f(r['rho_pooled'])} | {f(r['rho_within'])} | {gain_cells} |"
        )
    lines += [
        "",
        "Spearman of each signal alone with 1 − F1 (all targets where the signal exists):",
        "",
        "| dataset | " + " | ".join(SIGNALS) + " |",
        "|---|" + "---:|" * len(SIGNALS),
    ]
    for r in rows:
        lines.append(f"| {r['dataset']} | " + " | ".join(f(r["signals"][s]) for s in SIGNALS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["dsb2018", "miccai2015"])
    parser.add_argument("--max-refs", type=int, default=2)
    parser.add_argument("--max-targets", type=int, default=6)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="sine-embedded")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--note", default="measured with other jobs on the 2 cores")
    parser.add_argument("--out", type=Path, help="markdown file whose section is replaced")
    parser.add_argument("--json", type=Path, help="per-target records")
    args = parser.parse_args(argv)
    command = "python bench/ranking.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    start = time.perf_counter()
    records = run(args)
    rows = summarise(records, args.k)
    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=machine_description(args.device),
        model=args.model,
        note=args.note,
        seconds=time.perf_counter() - start,
    )
    text = markdown(rows, args.k, command, meta)
    print("\n" + text)
    if args.out:
        write_section(args.out, text, SECTION)
    if args.json:
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows, records=records), indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
