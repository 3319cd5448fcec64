"""Pixel classifiers for the refiner, compared on the same training pixels (issue 19; run by hand).

The refiner (:mod:`sine_model.fitting.refiner`) learns a per-pixel answer (background, classes, object
border) from the references' pixels: filter-bank features plus, unless ablated, the model's class maps
(predicted on each reference half from the other half). This script collects those training pixels once
per reference with the library's own :func:`~sine_model.fitting.refiner.collect_training_pixels`, computes
each target's features once, and then fits and scores several classifiers on them:

``mlp`` / ``mlp-nomaps``
    the library's MLP (:func:`~sine_model.fitting.refiner.train_refiner`, 400 steps), with and without the
    model's maps — exactly what ``refine`` and ``refiner-without-model`` of ``bench/recipe_compare.py`` run;
``forest`` / ``forest-nomaps``
    the library's random forest (:func:`~sine_model.fitting.refiner.train_forest`: 32 trees, depth 16,
    the forest baseline's size) on the same features;
``A+B``
    the mean of the members' probabilities.

Instances come from each answer through the library's rule (:meth:`RefinedMaps.instances`). Pairs:
``bench/recipe_compare.py``'s interleaved plan (round 1 = every group's first reference). Reads
``../shared/data``::

    OMP_NUM_THREADS=1 nice -n 5 python bench/refiner_variants.py run --scale auto --out /tmp/v_auto.json
    python bench/refiner_variants.py table /tmp/v_auto.json [--round 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate  # noqa: E402
from model_runner import make_model  # noqa: E402
from recipe_compare import SETS, f1_cell, interleaved_plan  # noqa: E402

from sine_model.fitting.refiner import (  # noqa: E402
    TrainingPixels,
    _in_order,
    collect_training_pixels,
    train_forest,
    train_refiner,
)
from sine_model.metrics import foreground_iou, match_instances  # noqa: E402
from sine_model.postprocess.pixel_refiner import PixelRefiner  # noqa: E402
from sine_model.preprocess.transforms import to_rgb_float  # noqa: E402

#: The engine's instance score threshold for the refiner's instances.
THRESHOLD = 0.5
SEED = 0

Member = Callable[[torch.Tensor], np.ndarray]  # (N, features) -> (N, outputs) probabilities


class _Sink:
    """Stands in for the propagator in :func:`train_refiner` (which hands it the trained refiner)."""

    def set_refiner(self, refiner) -> None:
        self.refiner = refiner


def mlp_member(pixels: TrainingPixels, state: torch.Tensor, with_maps: bool, steps: int = 400,
               hidden: int = 32) -> Member:
    """The library's MLP trained as :func:`fit_refiner` would (same seeds, same pixel draws)."""
    base = pixels.refiner
    n_maps = len(base.class_ids)
    torch.manual_seed(SEED)  # as fit_refiner: the MLP's initialisation right after the seed
    refiner = PixelRefiner(base.class_ids, hidden=hidden, use_model_maps=with_maps,
                           basic_channels=base.basic_channels)
    refiner.min_areas.copy_(base.min_areas)
    refiner.median_areas.copy_(base.median_areas)
    x = pixels.features if with_maps else pixels.features[:, :-n_maps]
    generator = torch.Generator()
    generator.set_state(state)  # the draws fit_refiner makes after collecting the pixels
    train_refiner(_Sink(), TrainingPixels(refiner, x, pixels.targets, pixels.counts, pixels.held_out),
                  steps, generator=generator)

    def predict(features: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return refiner(features if with_maps else features[:, :-n_maps]).softmax(-1).numpy()
    return predict


def forest_member(pixels: TrainingPixels, with_maps: bool, n_pixels: int = 20000) -> Member:
    """The library's random forest (:func:`train_forest`) on the refiner's training pixels."""
    n_maps = len(pixels.refiner.class_ids)
    x = pixels.features if with_maps else pixels.features[:, :-n_maps]
    forest = train_forest(TrainingPixels(pixels.refiner, x, pixels.targets, pixels.counts, pixels.held_out),
                          n_pixels=n_pixels, seed=SEED)
    n_out = pixels.refiner.num_outputs

    def predict(features: torch.Tensor) -> np.ndarray:
        f = features if with_maps else features[:, :-n_maps]
        proba = forest.predict_proba(f.numpy())
        out = np.zeros((len(f), n_out), np.float32)
        out[:, forest.classes_] = proba
        return out
    return predict


class _Answer(PixelRefiner):
    """A :class:`PixelRefiner` whose pixel answer is the mean of members' probabilities on cached features
    (so :meth:`refine` makes the maps and instances exactly as the library does)."""

    def __init__(self, base: PixelRefiner, members: Sequence[Member]) -> None:
        super().__init__(base.class_ids, basic_channels=base.basic_channels)
        self.min_areas.copy_(base.min_areas)
        self.median_areas.copy_(base.median_areas)
        self.members = list(members)
        self.cached: list[tuple[slice, torch.Tensor]] = []

    def strips(self, rgb, coarse):
        return iter(self.cached)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean = np.mean([member(features) for member in self.members], axis=0)
        return torch.from_numpy(np.log(np.maximum(mean, 1e-12)))


VARIANTS = ("mlp", "mlp-nomaps", "forest", "forest-nomaps", "mlp+forest", "mlp-nomaps+forest-nomaps",
            "mlp+forest-nomaps", "mlp+mlp-nomaps", "mlp+mlp-nomaps+forest-nomaps",
            "mlp-nomaps+forest+forest-nomaps", "mlp+mlp-nomaps+forest+forest-nomaps")


def _like_reference(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and reference.ndim == 2:
        return image.mean(-1).astype(image.dtype)
    if image.ndim == 2 and reference.ndim == 3:
        return np.repeat(image[..., None], 3, axis=-1)
    return image


def run(out: Path, scale: float | None, rounds: int, sets: Sequence[str], variants: Sequence[str]) -> None:
    from sine_model.engine.propagator import Propagator

    model, pad = make_model("sine-embedded")
    propagator = Propagator(model, None, pad=pad, scale=scale, instance_source="semantic")
    groups = len({(p.dataset, p.group) for p in interleaved_plan(1, 2, sets)})
    records = json.loads(out.read_text()) if out.exists() else []
    done = {(r["reference"], r["target"], r["variant"]) for r in records}
    for pairing in interleaved_plan(2, 2, sets)[:groups * rounds]:
        todo = [v for v in variants if any((pairing.reference.name, t.name, v) not in done
                                           for t in pairing.targets)]
        if not todo:
            continue
        image = evaluate.load_image(pairing.reference.image)
        labels = evaluate.load_labels(pairing.reference.labels)
        start = time.perf_counter()
        propagator.clear_calibration(scale)
        torch.manual_seed(SEED)
        generator = torch.Generator().manual_seed(SEED)
        pixels = collect_training_pixels(propagator, [(image, labels)], generator=generator)
        state = generator.get_state()
        members: dict[str, Member] = {}
        for name in {part for v in todo for part in v.split("+")}:
            kind, with_maps = name.removesuffix("-nomaps"), not name.endswith("-nomaps")
            members[name] = mlp_member(pixels, state, with_maps) if kind == "mlp" else \
                forest_member(pixels, with_maps)
        fit_s = time.perf_counter() - start
        class_ids = list(pixels.refiner.class_ids)
        for item in pairing.targets:
            target = _like_reference(evaluate.load_image(item.image), image)
            truth = evaluate.load_labels(item.labels)
            result = next(propagator.propagate([target], modes=("semantic",), keep_maps=True))
            coarse = _in_order(result.semantic_maps, propagator.semantic_classes(), class_ids)
            rgb = to_rgb_float(np.asarray(target), channel_axis=propagator.channel_axis)
            cached = list(pixels.refiner.strips(rgb, coarse))
            for variant in todo:
                answer = _Answer(pixels.refiner, [members[m] for m in variant.split("+")])
                answer.cached = cached
                refined = answer.refine(rgb, coarse)
                instances = refined.instances(class_ids, {c: 1 for c in class_ids}, min_score=THRESHOLD)[0]
                match = match_instances(truth, instances)
                records.append(dict(variant=variant, dataset=pairing.dataset, group=pairing.group,
                                    reference=pairing.reference.name, target=item.name, f1=match.f1,
                                    semantic_iou=foreground_iou(truth, refined.label_map), fit_s=fit_s,
                                    scale=propagator.scale))
                print(f"{variant:28s} {pairing.dataset}/{pairing.group} {item.name[:20]}: F1 {match.f1:.3f}",
                      flush=True)
        out.write_text(json.dumps(records, indent=1))


def _round_of(records: Sequence[dict]) -> dict[str, int]:
    """Reference name -> its round in the interleaved plan (1: first reference of its group)."""
    first: dict[tuple[str, str], str] = {}
    rounds = {}
    for r in records:
        key = (r["dataset"], r["group"])
        first.setdefault(key, r["reference"])
        rounds[r["reference"]] = 1 if first[key] == r["reference"] else 2
    return rounds


def table(paths: Sequence[Path], round_: int | None = None, against: str | None = None) -> str:
    """Markdown: per variant, instance F1 per set (spread over references, pairs), mean; with ``against``,
    the paired mean difference to that variant and the pairs better / worse."""
    records = [r for p in paths for r in json.loads(Path(p).read_text())]
    rounds = _round_of(records)
    if round_ is not None:
        records = [r for r in records if rounds[r["reference"]] == round_]
    by_variant: dict[str, dict[tuple[str, str], dict]] = {}
    for r in records:
        label = r["variant"] if len(paths) == 1 else f"{r['variant']} @{r['scale']}"
        by_variant.setdefault(label, {})[(r["reference"], r["target"])] = r
    common = set.intersection(*(set(v) for v in by_variant.values()))
    head = "| variant | " + " | ".join(SETS) + " | mean | semantic IoU |"
    lines = [head + (f" vs {against} (better / worse pairs) |" if against else ""),
             "|---|" + "---|" * (len(SETS) + 2) + ("---|" if against else "")]
    for variant, rows in by_variant.items():
        cells, means, ious = [], [], []
        for dataset in SETS:
            chosen = [rows[k] for k in sorted(common) if rows[k]["dataset"] == dataset]
            cell, mean = f1_cell(chosen)
            cells.append(cell)
            if mean is not None:
                means.append(mean)
                ious.append(float(np.mean([r["semantic_iou"] for r in chosen])))
        line = f"| {variant} | " + " | ".join(cells) + f" | **{np.mean(means):.3f}** | {np.mean(ious):.3f} |"
        if against:
            other = by_variant[against]
            diffs = np.array([rows[k]["f1"] - other[k]["f1"] for k in sorted(common)])
            line += f" {diffs.mean():+.3f} ({int((diffs > 1e-9).sum())} / {int((diffs < -1e-9).sum())}) |"
        lines.append(line)
    return "\n".join(lines) + f"\n\n{len(common)} pairs common to all variants (mean of the per-set means)."


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    go = sub.add_parser("run")
    go.add_argument("--out", type=Path, required=True, help="JSON records (appended per reference; resumes)")
    go.add_argument("--scale", type=evaluate._scale, default=None, help="a number or auto (default)")
    go.add_argument("--rounds", type=int, default=2)
    go.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    go.add_argument("--variants", nargs="+", default=list(VARIANTS))
    show = sub.add_parser("table")
    show.add_argument("files", nargs="+", type=Path)
    show.add_argument("--round", type=int, default=None)
    show.add_argument("--against", default=None, help="variant for paired differences")
    args = parser.parse_args(argv)
    if args.action == "run":
        run(args.out, args.scale, args.rounds, args.sets, args.variants)
    else:
        print(table(args.files, args.round, args.against))


if __name__ == "__main__":
    main()
