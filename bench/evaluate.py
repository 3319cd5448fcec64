"""One-shot evaluation harness: a SINE model and classical baselines on the same reference → target pairs.

Protocol (issue 5). Images of one dataset are split into groups of the same kind (DSB2018 ``group``
column, MICCAI magnification, all ISBI slices, all EPFL slices). In every group, up to ``--max-refs``
images (evenly spaced in manifest order) take turns as the labelled reference; the targets of a
reference are up to ``--max-targets`` other images of the group (evenly spaced). Every method — the
model (all modes from one ``propagate`` call), the random forest and Otsu + watershed — runs on exactly
these pairs and is scored with :mod:`sine_model.metrics`: foreground IoU of the semantic map and
instance F1 at IoU 0.5 (with precision and recall). A dataset's number is the mean over its pairs; the
mean row is the mean over datasets. The ID score needs ids that name the same object in reference and
target, which no cross-image pair has, so it is measured on crop pairs: each reference image is cut into
two overlapping crops (top-left and bottom-right 3/4), one labelled crop is the reference and the other
the target (only methods with an ``id`` map, i.e. the model).

DSB2018 is restricted to the held-out groups in ``bench/eval_splits.json`` (:data:`DSB_HELDOUT_GROUPS`),
which the training recipe excludes; ``--dsb-groups`` overrides them.

Usage::

    python bench/evaluate.py --model none --max-refs 2 --max-targets 3       # baselines only
    python bench/evaluate.py --model random-tiny --pad 112 --datasets epfl   # smoke run of the model path
    python bench/evaluate.py --model embedded --out docs/quality.md --json results.json
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import OtsuBaseline, Prediction, RandomForestBaseline, Runner  # noqa: E402
from model_runner import HARNESS_INSTANCE_SOURCES, ModelRunner, make_model  # noqa: E402
from report import SECTION, machine_description, markdown, summarise, write_section  # noqa: E402, F401

from sine_model.metrics import foreground_iou, id_score, match_instances  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = ROOT.parent / "shared" / "data"
SPLITS_FILE = Path(__file__).resolve().parent / "eval_splits.json"
#: DSB2018 groups kept out of training and used for evaluation: three acquisition types with no sibling
#: group of the same source (gray_519x253/gray_519x161-162 and gray_520x348/gray_260x347 are pairs, so
#: both stay in training): sparse large fluorescence nuclei, U2OS Hoechst screen images, and stained
#: brightfield tissue. Mirrored in ``bench/eval_splits.json`` for the training code.
DSB_HELDOUT_GROUPS = ("gray_512x640", "gray_520x696", "rgb_524x348")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's files are and how its manifest groups them."""

    folder: str
    key: str  # manifest column naming the file stem
    group: str | None  # manifest column of the group, or None for one group
    images: str
    labels: str


DATASETS: dict[str, DatasetSpec] = {
    "dsb2018": DatasetSpec("dsb2018_stage1_test", "image_id", "group", "images/{}.png", "labels/{}.tif"),
    "miccai2015": DatasetSpec("miccai2015_he_nuclei", "image", "magnification", "images/{}.png",
                              "labels/{}.tif"),
    "isbi2012": DatasetSpec("isbi2012_em_neurites", "slice", None, "images/{}.png", "instance_labels/{}.tif"),
    "epfl": DatasetSpec("epfl_hippocampus_mito", "slice", None, "images/{}.png", "instance_labels/{}.tif"),
}


@dataclass(frozen=True)
class Item:
    """One labelled image of a dataset."""

    name: str
    image: Path
    labels: Path


@dataclass(frozen=True)
class Pairing:
    """A reference and its targets, all from one group of one dataset."""

    dataset: str
    group: str
    reference: Item
    targets: tuple[Item, ...]


def load_image(path: Path) -> np.ndarray:
    """Read an image as 2D (gray, also when stored as RGB/RGBA/gray+alpha) or ``(H, W, 3)``."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    if image.ndim == 3:
        if image.shape[-1] in (2, 4):  # drop alpha
            image = image[..., : image.shape[-1] - 1]
        if all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, image.shape[-1])):
            image = image[..., 0]
    return image


def load_labels(path: Path) -> np.ndarray:
    """Read an instance label image (TIFF, or PNG with nonzero objects made into components)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    import imageio.v3 as iio
    from scipy import ndimage as ndi

    return ndi.label(np.asarray(iio.imread(path)) > 0)[0].astype(np.uint32)


def load_groups(dataset: str, root: Path = DATA_ROOT,
                groups: Sequence[str] | None = None) -> dict[str, list[Item]]:
    """Group name → items (manifest order) of one dataset, optionally only the named groups."""
    spec = DATASETS[dataset]
    folder = Path(root) / spec.folder
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    result: dict[str, list[Item]] = {}
    for row in rows:
        group = row[spec.group] if spec.group else "all"
        if groups is not None and group not in groups:
            continue
        stem = row[spec.key]
        item = Item(stem, folder / spec.images.format(stem), folder / spec.labels.format(stem))
        result.setdefault(group, []).append(item)
    if groups is not None:
        missing = sorted(set(groups) - set(result))
        if missing:
            raise ValueError(f"{dataset}: no images in groups {missing}; groups are "
                             f"{sorted({r[spec.group] for r in rows}) if spec.group else ['all']}")
    return result


def _spread(indices: Sequence[int], count: int) -> list[int]:
    """Up to ``count`` evenly spaced entries of ``indices`` (all of them when there are fewer)."""
    if count >= len(indices):
        return list(indices)
    picks = np.unique(np.round(np.linspace(0, len(indices) - 1, count)).astype(int))
    return [indices[i] for i in picks]


def plan_pairs(dataset: str, groups: dict[str, list[Item]], max_refs: int, max_targets: int) -> list[Pairing]:
    """Rotate the reference over up to ``max_refs`` images per group; targets are other group images."""
    plan = []
    for group, items in groups.items():
        if len(items) < 2:
            continue
        for r in _spread(range(len(items)), max_refs):
            others = [i for i in range(len(items)) if i != r]
            targets = tuple(items[i] for i in _spread(others, max_targets))
            plan.append(Pairing(dataset, group, items[r], targets))
    return plan


def _scale(text: str) -> float | None:
    """``--scale``: a number, or ``auto`` (None: the engine chooses it from the reference objects)."""
    return None if text == "auto" else float(text)


def crop_pair(image: np.ndarray, labels: np.ndarray, fraction: float = 0.75):
    """Two overlapping crops (top-left, bottom-right) of one image; label values keep their ids."""
    h, w = labels.shape
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    first = (slice(0, ch), slice(0, cw))
    second = (slice(h - ch, h), slice(w - cw, w))
    return image[first], labels[first], image[second], labels[second]


def _score(record: dict, truth: np.ndarray, pred: Prediction) -> dict:
    inst = match_instances(truth, pred["instance"])
    record.update(semantic_iou=foreground_iou(truth, pred["semantic"]), f1=inst.f1,
                  precision=inst.precision, recall=inst.recall, tp=inst.tp, fp=inst.fp, fn=inst.fn,
                  n_true=inst.tp + inst.fn, n_pred=inst.tp + inst.fp)
    return record


def run_plan(runner: Runner, plan: Sequence[Pairing], id_crops: bool = True,
             loader: Callable[[Item], tuple[np.ndarray, np.ndarray]] | None = None,
             log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Fit ``runner`` on every reference of ``plan``, predict its targets, and score each pair.

    Returns one record per (reference, target) with ``kind="pair"``, plus, for runners whose predictions
    include an ``id`` map and with ``id_crops``, one ``kind="id_crop"`` record per reference.
    """
    loader = loader or (lambda item: (load_image(item.image), load_labels(item.labels)))
    records: list[dict] = []
    for pairing in plan:
        ref_image, ref_labels = loader(pairing.reference)
        start = time.perf_counter()
        runner.fit(ref_image, ref_labels)
        fit_s = time.perf_counter() - start
        loaded = [loader(t) for t in pairing.targets]
        start = time.perf_counter()
        has_id = False
        variants = getattr(runner, "variants", None) or {"": "instance"}
        for item, (_, truth), pred in zip(pairing.targets, loaded, runner.predict(img for img, _ in loaded),
                                          strict=True):
            seconds = time.perf_counter() - start
            for suffix, key in variants.items():
                method = f"{runner.name} {suffix}".strip()
                records.append(_score(dict(kind="pair", method=method, dataset=pairing.dataset,
                                           group=pairing.group, reference=pairing.reference.name,
                                           target=item.name, fit_s=fit_s, predict_s=seconds), truth,
                                      {**pred, "instance": pred[key]}))
            has_id = has_id or "id" in pred
            start = time.perf_counter()
        done = [r for r in records if r["reference"] == pairing.reference.name and r["kind"] == "pair"]
        log(f"  {runner.name:>18} | {pairing.dataset}/{pairing.group} ref {pairing.reference.name[:16]}: "
            + " ".join(f"{r['f1']:.2f}" for r in done[-len(loaded) * len(variants):]))
        if id_crops and has_id and getattr(runner, "id_crops", True):
            a_img, a_lab, b_img, b_lab = crop_pair(ref_image, ref_labels)
            runner.fit(a_img, a_lab)
            pred = next(iter(runner.predict([b_img])))
            score = id_score(b_lab, pred["id"], reference_ids=a_lab)
            for suffix in variants:  # the variants share the ID answer
                records.append(dict(kind="id_crop", method=f"{runner.name} {suffix}".strip(),
                                    dataset=pairing.dataset, group=pairing.group,
                                    reference=pairing.reference.name, target=pairing.reference.name + ":crop",
                                    id_score=score.score, n_ids=score.n_ids, n_found=score.n_found,
                                    n_spurious=score.n_spurious))
    return records


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--dsb-groups", nargs="+", default=None,
                        help=f"DSB2018 groups (default: held-out {' '.join(DSB_HELDOUT_GROUPS)})")
    parser.add_argument("--max-refs", type=int, default=3, help="references per group (rotated)")
    parser.add_argument("--max-targets", type=int, default=5, help="targets per reference")
    parser.add_argument("--model", default="none",
                        help="preset name, .safetensors path, 'random-tiny' (smoke runs) or 'none'")
    parser.add_argument("--pad", type=int, default=None, help="model input side (default: the model's)")
    parser.add_argument("--scale", type=_scale, default=1.0,
                        help="resize factor before tiling, or 'auto': chosen from each reference's object "
                             "sizes (the engine's default; sine_model.engine.object_scale)")
    parser.add_argument("--adapt", type=int, nargs="+", default=[0], metavar="STEPS",
                        help="test-time adaptation of the model on each reference, STEPS per adapted copy "
                             "(0: none); several values run the model once per value (adapted runs skip "
                             "ID crops)")
    parser.add_argument("--instances", nargs="+", choices=HARNESS_INSTANCE_SOURCES,
                        default=list(HARNESS_INSTANCE_SOURCES),
                        help="instance answer(s) of the model to score, all from one pass: its instance "
                             "queries, the semantic answer split by the reference-chosen rule (the "
                             "engine's 'semantic'), and/or its plain connected components")
    parser.add_argument("--calibrate", action="store_true",
                        help="choose the model's scale and instance split rules on each reference "
                             "(sine_model.fitting.calibration: cross-validation between reference halves)")
    parser.add_argument("--refine", type=int, nargs="+", default=[0], metavar="STEPS",
                        help="fit the full-resolution refiner (sine_model.fitting.refiner) on each "
                             "reference for STEPS (0: none); several values run the model once per value")
    parser.add_argument("--refine-ablation", action="store_true",
                        help="also run each refined model with a refiner that ignores the model's maps "
                             "(a pixel classifier on the same features: what the model adds)")
    parser.add_argument("--no-colour-features", action="store_true",
                        help="the refiner reads no per-channel features of colour references (ablation)")
    parser.add_argument("--no-cross-fit", action="store_true",
                        help="refine after adaptation on the model adapted to the whole reference (default: "
                             "one model per reference half, so the refiner learns from held-out answers)")
    parser.add_argument("--device", default=None, help="model device (default: auto)")
    parser.add_argument("--baselines", nargs="*", choices=["rf", "rf-border", "otsu"],
                        default=["rf", "rf-border", "otsu"],
                        help="rf: random forest fg/bg; rf-border: with an object-border class; otsu")
    parser.add_argument("--no-id-crops", action="store_true", help="skip the crop-pair ID score")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--out", type=Path, default=None, help="markdown file whose section is replaced")
    parser.add_argument("--json", type=Path, default=None, help="write raw per-pair results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    command = "python bench/evaluate.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    dsb_groups = list(args.dsb_groups or DSB_HELDOUT_GROUPS)
    plan: list[Pairing] = []
    for dataset in args.datasets:
        groups = load_groups(dataset, args.data_root, dsb_groups if dataset == "dsb2018" else None)
        plan += plan_pairs(dataset, groups, args.max_refs, args.max_targets)
    print(f"{len(plan)} references, {sum(len(p.targets) for p in plan)} pairs", flush=True)
    runners: list[Runner] = []
    model, default_pad = make_model(args.model, args.device)
    if model is not None:
        name = Path(args.model).stem if os.sep in args.model else args.model
        for adapt in dict.fromkeys(args.adapt):
            for refine in dict.fromkeys(args.refine):
                extras = " + calibrate" if args.calibrate else ""
                extras += f" + adapt {adapt} steps" if adapt else ""
                extras += f" + refine {refine} steps" if refine else ""
                extras += " (adapted once, not per half)" if adapt and refine and args.no_cross_fit else ""
                runners.append(ModelRunner(model, f"SINE ({name}{extras})", pad=args.pad or default_pad,
                                           scale=args.scale, device=args.device, adapt_steps=adapt,
                                           instance_sources=args.instances, calibrate=args.calibrate,
                                           refine_steps=refine, cross_fit=not args.no_cross_fit,
                                           colour_features=not args.no_colour_features))
        for refine in sorted({r for r in args.refine if r > 0})[-1:] if args.refine_ablation else []:
            # the refiner alone: the model's maps left out, so nothing to calibrate or adapt
            runners.append(ModelRunner(model, f"refiner without model ({refine} steps)",
                                       pad=args.pad or default_pad, scale=args.scale, device=args.device,
                                       instance_sources=args.instances,
                                       refine_steps=refine, refine_with_model=False, refine_forest=False,
                                       colour_features=not args.no_colour_features))
    makers = {"rf": RandomForestBaseline, "rf-border": lambda: RandomForestBaseline(border=True),
              "otsu": OtsuBaseline}
    runners += [makers[b]() for b in dict.fromkeys(args.baselines)]
    cache: dict[Item, tuple[np.ndarray, np.ndarray]] = {}

    def loader(item: Item) -> tuple[np.ndarray, np.ndarray]:
        if item not in cache:
            cache[item] = (load_image(item.image), load_labels(item.labels))
        return cache[item]

    records: list[dict] = []
    for runner in runners:
        print(f"{runner.name}:", flush=True)
        records += run_plan(runner, plan, not args.no_id_crops, loader, log=lambda s: print(s, flush=True))
    rows = summarise(records)
    meta = dict(date=datetime.date.today().isoformat(), machine=machine_description(args.device),
                model=args.model, dsb_groups=dsb_groups,
                adapt={r.name: dict(steps=r.adapt_budget, mean_steps=float(np.mean(r.adapt_steps)))
                       for r in runners if getattr(r, "adapt_steps", None)},
                scale_choices={r.name: r.scale_choices for r in runners if getattr(r, "scale_choices", None)},
                stepped_aside={r.name: [s for s in r.stepped_aside if s]
                               for r in runners if any(getattr(r, "stepped_aside", []))},
                calibration={r.name: [dict(scale=c.scale, projection=c.project_inputs, f1=c.f1, folds=c.folds,
                                           steps={k: repr(v) for k, v in c.steps.items()})
                                      if c is not None else None for c in r.calibrations]
                             for r in runners if getattr(r, "calibrations", None)},
                refine={r.name: dict(steps=r.refine_steps,
                                     mean_steps=float(np.mean([f.steps for f in fits])),
                                     held_out=sum(f.held_out for f in fits),
                                     whole=sum(not f.held_out for f in fits))
                        for r in runners if (fits := getattr(r, "refine_fits", None))})
    text = markdown(rows, command, meta)
    print("\n" + text)
    if args.out:
        write_section(args.out, text)
    if args.json:
        args.json.write_text(json.dumps(dict(meta=meta, command=command, summary=rows, records=records,
                                             plan=[asdict(p) for p in plan]), indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
