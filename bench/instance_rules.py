"""Instance rules scored on cached pixel answers: fit once per reference, compare rules in seconds.

The refiner's instances come from its pixel answer (:class:`RefinedMaps` of
:mod:`sine_model.postprocess.border_instances`: class probabilities, border-free seeds, watershed heights).
Fitting the refiner takes minutes per reference on a shared CPU, applying an instance rule a fraction of a
second, so this script splits the two:

``cache METHOD`` runs METHOD (``calibrate-refine``, ``refine``, ``refiner-without-model`` — the refiner's
maps, captured where the engine makes them — or ``forest-border``: the forest's class probabilities turned
into the same maps) on the pairs of ``bench/recipe_compare.py`` (references in rounds across sets) and
writes one ``.npz`` per pair to ``--dir``, with the F1 of the method's own instances;

``score`` applies every rule of :data:`RULES` to every cached pair through one code path
(:meth:`RefinedMaps.instances`) and prints instance F1@0.5 per set, method and rule (mean over pairs that
every method cached). Reads ``../shared/data``; run by hand::

    OMP_NUM_THREADS=1 nice -n 5 python bench/instance_rules.py cache refine --dir /tmp/wt19_maps
    OMP_NUM_THREADS=1 nice -n 5 python bench/instance_rules.py cache forest-border --dir /tmp/wt19_maps
    python bench/instance_rules.py score --dir /tmp/wt19_maps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate  # noqa: E402
from baselines import RandomForestBaseline  # noqa: E402
from model_runner import ModelRunner, make_model  # noqa: E402
from recipe_compare import METHODS, SETS, interleaved_plan  # noqa: E402

from sine_model.metrics import match_instances  # noqa: E402
from sine_model.postprocess.border_instances import (  # noqa: E402
    RefinedMaps,
    instance_floor,
    seeded_instances,
    split_oversized,
)
from sine_model.postprocess.components import semantic_components  # noqa: E402
from sine_model.postprocess.instance_split import remove_small  # noqa: E402


def _stem(method: str, pairing: evaluate.Pairing, target: str) -> str:
    return f"{method}__{pairing.dataset}__{pairing.reference.name}__{target}".replace("/", "_")


def _save(path: Path, maps: RefinedMaps, meta: dict) -> None:
    floors = maps.min_areas or {}
    np.savez_compressed(path, probs=maps.probs.astype(np.float16), label_map=maps.label_map.astype(np.int32),
                        seeds=maps.seeds, heights=(maps.probs if maps.heights is None else maps.heights)
                        .astype(np.float16), floor_classes=np.asarray(list(floors), np.int64),
                        floor_values=np.asarray(list(floors.values()), np.int64),
                        meta=np.asarray(json.dumps(meta)))


def load_maps(path: Path) -> tuple[RefinedMaps, dict]:
    """The cached :class:`RefinedMaps` of one pair and its metadata."""
    with np.load(path) as data:
        floors = dict(zip(data["floor_classes"].tolist(), data["floor_values"].tolist(), strict=True))
        maps = RefinedMaps(data["probs"].astype(np.float32), data["label_map"], data["seeds"],
                           heights=data["heights"].astype(np.float32), min_areas=floors)
        return maps, json.loads(str(data["meta"]))


def forest_maps(forest: RandomForestBaseline, image: np.ndarray) -> RefinedMaps:
    """The forest + border's pixel answer as :class:`RefinedMaps` (single class: its own rule exactly)."""
    proba = forest.predict_proba(image)
    classes = np.asarray(forest._forest.classes_)
    objects = np.flatnonzero((classes != 0) & (classes != forest._border_class))
    border = np.flatnonzero(classes == forest._border_class)
    best = proba.argmax(-1)
    foreground = classes[best] != 0
    obj = proba[..., objects].argmax(-1)
    label_map = np.where(foreground, classes[objects][obj], 0)
    seeds = foreground & np.isin(classes[best], classes[objects])
    heights = np.moveaxis(proba[..., objects], -1, 0)
    probs = heights.copy()
    if border.size:  # the border share goes to the most likely class, as in the refiner
        top = np.take_along_axis(probs, obj[None], 0) + proba[..., border[0]][None]
        np.put_along_axis(probs, obj[None], top, 0)
    floors = {int(c): forest._steps[int(c)].min_size for c in classes[objects]}
    return RefinedMaps(probs.astype(np.float32), label_map, seeds, heights=heights.astype(np.float32),
                       min_areas=floors)


def _capturing(refine: Callable, into: list) -> Callable:
    def capture(rgb: np.ndarray, coarse: np.ndarray) -> RefinedMaps:
        into.append(refine(rgb, coarse))
        return into[-1]
    return capture


def cache(method: str, folder: Path, rounds: int, sets: Sequence[str]) -> None:
    """Fit METHOD on each reference of the first ``rounds`` rounds; one ``.npz`` per pair in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    options = METHODS[method]
    forest = None
    if options is None:
        forest = RandomForestBaseline(border=True, n_jobs=1)
    else:
        model, pad = make_model("sine-embedded")
        runner = ModelRunner(model, method, pad=pad, instance_sources=["semantic"], **options)
    groups = len({(p.dataset, p.group) for p in interleaved_plan(1, 2, sets)})
    for pairing in interleaved_plan(2, 2, sets)[:groups * rounds]:
        if all((folder / (_stem(method, pairing, t.name) + ".npz")).exists() for t in pairing.targets):
            continue
        image = evaluate.load_image(pairing.reference.image)
        labels = evaluate.load_labels(pairing.reference.labels)
        start = time.perf_counter()
        captured: list[RefinedMaps] = []
        if forest is not None:
            forest.fit(image, labels)
        else:
            runner.fit(image, labels)
            refiner = runner.propagator.refiner
            refiner.refine = _capturing(refiner.refine, captured)  # the maps the engine makes instances from
        fit_s = time.perf_counter() - start
        targets = [(evaluate.load_image(t.image), evaluate.load_labels(t.labels)) for t in pairing.targets]
        if forest is not None:
            preds = list(forest.predict(img for img, _ in targets))
            captured = [forest_maps(forest, img) for img, _ in targets]
        else:
            preds = list(runner.predict(img for img, _ in targets))
        areas = np.unique(labels[labels != 0], return_counts=True)[1]
        for item, (_, truth), pred, maps in zip(pairing.targets, targets, preds, captured, strict=True):
            meta = dict(method=method, dataset=pairing.dataset, group=pairing.group,
                        reference=pairing.reference.name, target=item.name, fit_s=fit_s,
                        own_f1=match_instances(truth, pred["instance"]).f1,
                        reference_areas=areas.tolist())
            _save(folder / (_stem(method, pairing, item.name) + ".npz"), maps, meta)
            print(f"{method} {pairing.dataset}/{pairing.group} {item.name[:16]}: own F1 {meta['own_f1']:.3f} "
                  f"(fit {fit_s:.0f} s)", flush=True)


@dataclass(frozen=True)
class Rule:
    """An instance rule on :class:`RefinedMaps`: the library's (``library``) or a variant measured here.

    ``floor``: the reference-aware floor (:func:`instance_floor`) instead of 0.15 × median; ``split``:
    (area factor, h fraction, spacing) of :func:`split_oversized` on the instances; ``seed_split``: the
    same on the seed components before the watershed; ``border_below``: seeds where the border
    probability is under this, instead of where a class beats the border.
    """

    floor: bool = False
    split: tuple[float, float, float] | None = None
    seed_split: tuple[float, float, float] | None = None
    border_below: float | None = None
    library: bool = False

    def __call__(self, maps: RefinedMaps, areas: np.ndarray) -> np.ndarray:
        median = float(np.median(areas))
        if self.library:  # exactly what the refiner does now, its floor and median set from the reference
            maps = replace(maps, min_areas={1: instance_floor(areas)}, median_areas={1: median})
            return maps.instances([1], {1: 1}, min_score=THRESHOLD)[0]
        floor = instance_floor(areas) if self.floor else max(4, int(0.15 * median))
        seeds = maps.seeds
        if self.border_below is not None:
            seeds = (maps.label_map > 0) & ((maps.probs - maps.heights).max(0) < self.border_below)

        def split(mask: np.ndarray) -> np.ndarray:
            markers = seeds
            if self.seed_split is not None:
                cores = remove_small(ndi.label(seeds & mask)[0], max(2, floor // 4))
                markers = split_oversized(cores, median, *self.seed_split)
                # seeded_instances labels its seeds' components: keep split pieces apart by a 1-px gap
                markers = (markers > 0) & ~find_boundaries(markers, mode="inner")
            return seeded_instances(mask, markers, maps.heights[0], floor)

        step = type("Step", (), {"apply": staticmethod(split)})
        found = semantic_components(maps.label_map, {1: floor}, {1: maps.probs[0]}, THRESHOLD, {1: step})[0]
        return found if self.split is None else split_oversized(found, median, *self.split)


#: The engine's instance score threshold (the refiner's instances' ``min_score``).
THRESHOLD = 0.5
#: Rule name -> rule (``new``: the library's rule after issue 19; ``old``: before).
RULES: dict[str, Rule] = {
    "old": Rule(),
    "new": Rule(library=True),
    "floor": Rule(floor=True),
    "split-h.4": Rule(split=(2, 0.4, 0.5)),
    "split-h.25": Rule(split=(2, 0.25, 0.5)),
    "split-h.25+floor": Rule(floor=True, split=(2, 0.25, 0.5)),
    "split-h.3+floor": Rule(floor=True, split=(2, 0.3, 0.5)),
    "split-h.4+floor": Rule(floor=True, split=(2, 0.4, 0.5)),
    "split-h.5+floor": Rule(floor=True, split=(2, 0.5, 0.5)),
    "split-h.4-s0+floor": Rule(floor=True, split=(2, 0.4, 0)),
    "split1.5x-h.4+floor": Rule(floor=True, split=(1.5, 0.4, 0.5)),
    "split3x-h.4+floor": Rule(floor=True, split=(3, 0.4, 0.5)),
    "seedsplit-h.25+floor": Rule(floor=True, seed_split=(1, 0.25, 0.5)),
    "seedsplit-h.4+floor": Rule(floor=True, seed_split=(1, 0.4, 0.5)),
    "seeds-border<.4": Rule(border_below=0.4),
    "seeds-border<.3": Rule(border_below=0.3),
}


def _round_references(round_: int) -> set[str]:
    """Names of the references in round ``round_`` (1: every group's first reference, 2: the second)."""
    plan = interleaved_plan(2, 2)
    groups = len({(p.dataset, p.group) for p in interleaved_plan(1, 2)})
    return {p.reference.name for p in plan[groups * (round_ - 1): groups * round_]}


def score(folder: Path, rules: Sequence[str], sets: Sequence[str],
          methods: Sequence[str] | None = None, round_: int | None = None) -> str:
    """Markdown table: per method and rule, instance F1 per set over the pairs every method cached.

    Cells: mean over pairs (lowest–highest mean of one reference's targets, pairs); ``own`` is the F1 of the
    method's own instances when it was cached (the code of that time).
    """
    files = sorted(folder.glob("*.npz"))
    if round_ is not None:
        references = _round_references(round_)
        files = [f for f in files if f.stem.split("__")[2] in references]
    by_method: dict[str, dict[tuple[str, str], Path]] = {}
    for path in files:
        method, _, reference, target = path.stem.split("__")
        if methods and method not in methods:
            continue
        by_method.setdefault(method, {})[(reference, target)] = path
    common = set.intersection(*(set(v) for v in by_method.values()))
    truths: dict[str, np.ndarray] = {}
    lines = ["| method | rule | " + " | ".join(sets) + " | mean |", "|---|---|" + "---|" * (len(sets) + 1)]
    for method, paths in by_method.items():
        # rule -> set -> reference -> F1 of its targets
        f1s: dict[str, dict[str, dict[str, list[float]]]] = {rule: {s: {} for s in sets}
                                                             for rule in ["own", *rules]}
        for key in sorted(common):
            maps, meta = load_maps(paths[key])
            if meta["dataset"] not in sets:
                continue
            item = next(i for group in evaluate.load_groups(meta["dataset"], groups=[meta["group"]]).values()
                        for i in group if i.name == meta["target"])
            truth = truths.setdefault(item.name, evaluate.load_labels(item.labels))
            areas = np.asarray(meta["reference_areas"])
            found = {"own": meta["own_f1"]}
            found.update({rule: match_instances(truth, RULES[rule](maps, areas)).f1 for rule in rules})
            for rule, f1 in found.items():
                f1s[rule][meta["dataset"]].setdefault(meta["reference"], []).append(f1)
        for rule, per_set in f1s.items():
            cells, means = [], []
            for per_ref in per_set.values():
                if not per_ref:
                    cells.append("—")
                    continue
                values = [f for v in per_ref.values() for f in v]
                ref_means = [float(np.mean(v)) for v in per_ref.values()]
                means.append(float(np.mean(values)))
                cells.append(f"{means[-1]:.3f} ({min(ref_means):.2f}–{max(ref_means):.2f}, {len(values)})")
            lines.append(f"| {method} | {rule} | " + " | ".join(cells) + f" | **{np.mean(means):.3f}** |")
    return "\n".join(lines) + f"\n\n{len(common)} pairs cached by every method."


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["cache", "score"])
    parser.add_argument("method", nargs="?", choices=sorted(METHODS))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/instance_rules"))
    parser.add_argument("--rounds", type=int, default=1, help="rounds of references (1: one per group)")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), help="score only these")
    parser.add_argument("--round", type=int, default=None,
                        help="score only the references of this round (1: first of each group)")
    parser.add_argument("--rules", nargs="+", choices=sorted(RULES), default=list(RULES))
    args = parser.parse_args(argv)
    if args.action == "cache":
        if not args.method:
            parser.error("cache needs a METHOD")
        cache(args.method, args.dir, args.rounds, args.sets)
    else:
        print(score(args.dir, args.rules, args.sets, args.methods, args.round))


if __name__ == "__main__":
    main()
