"""ID by matching, with and without carrying the reference objects into the target (issue 23).

Three ways to make the ID answer from the same instance and semantic answers (``match_ids``):
``matching only`` (``transfer=False``), ``+ split`` (merged objects cut between reference cores; the
unchanged rule switched off) and ``+ split + unchanged`` (the default). Pairs, on the bundled sample's four
labelled images: the image propagated to itself, and ``bench/evaluate.py``'s crop pairs (top-left 3/4
labelled, bottom-right 3/4 as target), each also with Gaussian noise of standard deviation ``--noise``
grey levels added to the target (a re-acquisition of the same field: the unchanged rule should not fire
there, so the split is what is measured). Scores: objects of the reference found with IoU ≥ 0.8 and ≥ 0.5
(the reference's own objects in the target) and ``metrics.id_score`` (IoU 0.5). Model alone by default;
``--recipe`` runs the preset's fitting recipe first. Run by hand::

    python bench/id_transfer.py            # prints a markdown table
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from sine_model import from_pretrained
from sine_model.engine.propagator import Propagator
from sine_model.metrics import id_score
from sine_model.postprocess import id_transfer
from sine_model.postprocess.id_matching import describe_references, match_ids
from sine_model.sample_data import load_sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import crop_pair  # noqa: E402  (the harness's crop pairs, the same for both scores)

VARIANTS = ("matching only", "+ split", "+ split + unchanged")


def id_answers(objects, target: np.ndarray, answer) -> dict[str, np.ndarray]:
    """The ID map of each variant from one propagation's instance and semantic answers."""
    instance, foreground = answer.labels["instance"], answer.labels["semantic"] > 0
    maps = {VARIANTS[0]: match_ids(objects, target, instance, 0.5, transfer=False)[0]}
    bar = id_transfer.UNCHANGED_CORRELATION
    id_transfer.UNCHANGED_CORRELATION = float("inf")  # the split alone
    try:
        maps[VARIANTS[1]] = match_ids(objects, target, instance, 0.5, foreground=foreground)[0]
    finally:
        id_transfer.UNCHANGED_CORRELATION = bar
    maps[VARIANTS[2]] = match_ids(objects, target, instance, 0.5, foreground=foreground)[0]
    return maps


def object_ious(truth: np.ndarray, id_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.array([((truth == i) & (id_map == i)).sum() / max(1, ((truth == i) | (id_map == i)).sum())
                     for i in ids])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=4.0, help="noise sd (grey levels) of the noisy copies")
    parser.add_argument("--recipe", action="store_true", help="run the preset's fitting recipe first")
    args = parser.parse_args(argv)
    sample, model, rng = load_sample(), from_pretrained("sine-embedded"), np.random.default_rng(0)
    images = [("reference", sample.reference, sample.reference_labels)] + [
        (f"target {k + 1}", image, labels) for k, (image, labels) in enumerate(zip(sample.targets,
                                                                                   sample.target_labels,
                                                                                   strict=True))]
    rows: dict[tuple[str, str], list] = {}
    start = time.perf_counter()
    for name, image, labels in images:
        pairs = [("itself", image, labels, image, labels)]
        pairs.append(("crop pair", *crop_pair(image, labels)))
        for kind, ref_img, ref_lab, tgt_img, tgt_lab in pairs:
            propagator = Propagator(model, "cpu")
            if args.recipe:
                from sine_model.fitting.preparation import ReferencePreparation

                ReferencePreparation(propagator, [(ref_img, ref_lab)]).run()
            else:
                propagator.set_references([(ref_img, ref_lab)])
            objects = describe_references([ref_img.astype(np.float32)], [ref_lab])
            noisy = np.clip(tgt_img + rng.normal(0, args.noise, tgt_img.shape), 0, 255).astype(np.uint8)
            for target, how in ((tgt_img, "clean"), (noisy, f"noise sd {args.noise:g}")):
                (answer,) = propagator.propagate(target, ("instance", "semantic"))
                shared = np.intersect1d(np.unique(ref_lab[ref_lab > 0]), np.unique(tgt_lab[tgt_lab > 0]))
                for variant, id_map in id_answers(objects, target.astype(np.float32), answer).items():
                    ious = object_ious(tgt_lab, id_map, shared)
                    score = id_score(tgt_lab, id_map, reference_ids=ref_lab).score
                    rows.setdefault((f"{kind}, {how}", variant), []).append(
                        ((ious >= 0.8).sum(), (ious >= 0.5).sum(), len(ious), score))
            print(f"{name} {kind}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(f"sine-embedded, {'default recipe' if args.recipe else 'model alone'}; sample images: "
          + ", ".join(name for name, *_ in images))
    print("\n| pairs | ID answer | objects at IoU ≥ 0.8 | at IoU ≥ 0.5 | ID score (mean) |")
    print("|---|---|---:|---:|---:|")
    for (pairs, variant), values in rows.items():
        at8, at5, total = (sum(v[i] for v in values) for i in range(3))
        print(f"| {pairs} | {variant} | {at8} / {total} | {at5} / {total} | "
              f"{np.mean([v[3] for v in values]):.2f} |")


if __name__ == "__main__":
    main()
