"""``napari-sine export``: the reviewed targets of a run (and its references) as a training-ready dataset.

Reads the ``--out`` folder of ``napari-sine propagate`` and its ``review.json`` (``napari-sine rank`` /
``review``): accepted targets take the proposals of ``--mode``, corrected ones their corrected label file;
the target images are read from ``--targets`` (default: the files the review recorded). Writes one of
the formats of :mod:`sine_model.bootstrap.export` with ``split.csv``, ``recipe.json`` and ``SHA256SUMS``.
Source files are only read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sine_model.cli.common import EXIT_OK, CliError, package_version

__all__ = ["add_export_command"]

EXPORT_EXAMPLES = """\
examples:
  napari-sine export results/ --out dataset/ --ref ref.png --ref-labels ref_labels.tif
  napari-sine export results/ --out coco/ --format coco --targets stack.tif --stack-axis 0 --val-fraction 0.25

formats: tiff (images/ + masks/, StarDist / cellpose), coco (annotations/instances_<split>.json, RLE),
ome-zarr (ome_zarr/<name>.ome.zarr with labels/instances), napari-sine (napari-sine train train.toml).
"""


def add_export_command(subparsers: Any) -> None:
    """Add ``export`` to the ``napari-sine`` subcommands."""
    from sine_model.modes import MODES

    p = subparsers.add_parser(
        "export",
        help="write the accepted and corrected targets as a training dataset",
        description="Export the reviewed targets of a `napari-sine propagate` run (see `napari-sine rank` "
        "and "
        "`napari-sine review`) and the references as a dataset, with a seeded train/val split "
        "stratified by source file, the recipe and sha256 checksums.",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("results", type=Path, help="the --out folder of napari-sine propagate (with review.json)")
    add("--out", required=True, type=Path, metavar="DIR", help="dataset folder (new or empty)")
    add(
        "--format",
        choices=("tiff", "coco", "ome-zarr", "napari-sine"),
        default="tiff",
        help="dataset layout (default tiff)",
    )
    add(
        "--mode",
        choices=MODES,
        default="instance",
        help="proposals taken for accepted targets (default instance)",
    )
    add(
        "--targets",
        nargs="+",
        metavar="PATH",
        help="the target files of the run (default: those in review.json)",
    )
    add("--stack-axis", type=int, metavar="N", help="axis of the stack in the target files")
    add("--ref", action="append", default=[], metavar="IMG", help="reference image to include (repeatable)")
    add(
        "--ref-labels",
        action="append",
        default=[],
        metavar="LABELS",
        help="label image of the preceding --ref",
    )
    add("--channel-axis", type=int, metavar="N", help="channel axis of multichannel images")
    add(
        "--val-fraction",
        type=float,
        default=0.2,
        metavar="X",
        help="share of each source file for validation",
    )
    add("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    add("--overwrite", action="store_true", help="write into a non-empty --out, replacing an earlier export")
    p.set_defaults(handler=_export_command)


def _target_images(paths: list[str], stack_axis: int | None) -> tuple[list[Any], list[str]]:
    """Lazily opened target images and the file each came from, in target order."""
    from sine_model.io import readers as io

    images, sources = [], []
    for path in paths:
        array = io.open_image(path, lazy=True)
        if stack_axis is None:
            images.append(array)
            sources.append(str(Path(path).resolve()))
            continue
        if not -array.ndim <= stack_axis < array.ndim:
            raise CliError(f"--stack-axis {stack_axis} is out of range for {path} with shape {array.shape}")
        axis = stack_axis % array.ndim
        images += [io.plane(array, axis, i) for i in range(array.shape[axis])]
        sources += [str(Path(path).resolve())] * array.shape[axis]
    return images, sources


def _export_command(args: argparse.Namespace) -> int:
    import numpy as np

    from sine_model.bootstrap.export import export_dataset, samples_from_review
    from sine_model.bootstrap.results import read_results
    from sine_model.bootstrap.review import read_review
    from sine_model.io.readers import read_image

    if len(args.ref) != len(args.ref_labels):
        raise CliError(
            f"{len(args.ref)} --ref but {len(args.ref_labels)} --ref-labels: give one --ref-labels "
            "after each --ref"
        )
    results = read_results(args.results)
    review = read_review(args.results)
    if len(review) != results.n_targets:
        raise CliError(f"review.json reviews {len(review)} targets but the results hold {results.n_targets}")
    if args.mode not in results.modes:
        raise CliError(f"the results hold no {args.mode} proposals (modes: {', '.join(results.modes)})")
    if not review.indices():
        raise CliError(
            "no target is accepted or corrected yet: record decisions with napari-sine review "
            f"{args.results} --accept LIST (napari-sine rank lists what to look at first)"
        )
    paths = args.targets or review.run.get("targets")
    stack_axis = args.stack_axis if args.targets else review.run.get("stack_axis", args.stack_axis)
    if not paths:
        raise CliError("give --targets (the target files of the run): the review does not record them")
    images, sources = _target_images(list(paths), stack_axis)
    if len(images) != results.n_targets:
        raise CliError(
            f"the target files give {len(images)} target(s) but the results hold {results.n_targets}: "
            "give the same files (and --stack-axis) as to propagate"
        )
    references = [
        (Path(i).stem, read_image(i), read_image(lab), str(Path(i).resolve()))
        for i, lab in zip(args.ref, args.ref_labels, strict=True)
    ]
    samples = samples_from_review(
        review,
        lambda i: np.asarray(images[i]),
        lambda i: results.labels(i)[args.mode],
        source_of=lambda i: sources[i],
        references=references,
        channel_axis=args.channel_axis,
    )
    recipe = {
        "napari_sine": package_version(),
        "results": str(args.results.resolve()),
        "mode": args.mode,
        "review": review.counts(),
        "run": review.run,
        "references": [r[3] for r in references],
        "reference_labels": [str(Path(p).resolve()) for p in args.ref_labels],
    }
    manifest = args.results / "sine-run.json"
    if manifest.is_file():
        recipe["propagate_run"] = json.loads(manifest.read_text(encoding="utf-8"))
    corrected = [review[i].labels for i in review.indices("corrected")]
    report = export_dataset(
        samples,
        args.out,
        args.format,
        overwrite=args.overwrite,
        val_fraction=args.val_fraction,
        seed=args.seed,
        recipe=recipe,
        sources=[*sources, *(r[3] for r in references), *args.ref_labels, *(p for p in corrected if p)],
    )
    print(f"Exported {report}")
    return EXIT_OK
