"""Export reviewed targets (and the references) as a training-ready dataset, in one of four formats.

:func:`export_dataset` checks the samples, prepares the folder
(:func:`~sine_model.bootstrap.dataset.prepare_folder`:
empty or new, or ``overwrite``; never where a source file is), splits them (seeded, stratified by source
file), writes the format, then ``split.csv``, ``recipe.json`` and ``SHA256SUMS``. Formats:

* ``tiff`` — ``images/`` + ``masks/`` instance TIFFs (StarDist, cellpose);
* ``coco`` — COCO instances JSON per split with RLE masks (pycocotools) + ``images/``;
* ``ome-zarr`` — one ``ome_zarr/<name>.ome.zarr`` per sample: the image and a ``labels/instances`` label image
  with NGFF image-label metadata;
* ``napari-sine`` — the folder ``napari-sine train`` reads (``images/`` + ``labels/`` + manifests), with a
  ``train.toml``.

:func:`samples_from_review` builds the samples of a reviewed run: accepted targets take the proposals of
one mode, corrected ones the user's labels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sine_model.bootstrap.coco_format import write_coco
from sine_model.bootstrap.dataset import (
    ExportError,
    ExportSample,
    check_samples,
    prepare_folder,
    split_samples,
    write_common,
)
from sine_model.bootstrap.folder_formats import write_napari_sine, write_tiff_folders
from sine_model.bootstrap.ome_zarr_format import write_ome_zarr
from sine_model.bootstrap.review import ReviewState

__all__ = ["EXPORT_FORMATS", "ExportReport", "export_dataset", "samples_from_review"]

_WRITERS: dict[str, Callable[[Path, Sequence[ExportSample], Mapping[str, str]], None]] = {
    "tiff": write_tiff_folders,
    "coco": write_coco,
    "ome-zarr": write_ome_zarr,
    "napari-sine": write_napari_sine,
}
#: The export formats, by name.
EXPORT_FORMATS: tuple[str, ...] = tuple(_WRITERS)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the folder, the format and the split's sizes."""

    out: Path
    format: str
    train: int
    val: int

    def __str__(self) -> str:
        total = self.train + self.val
        return f"{total} samples ({self.train} train, {self.val} val) as {self.format} in {self.out}"


def export_dataset(
    samples: Sequence[ExportSample],
    out: str | os.PathLike[str],
    format: str = "tiff",
    *,
    overwrite: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    recipe: Mapping[str, Any] | None = None,
    sources: Sequence[str | os.PathLike[str]] = (),
) -> ExportReport:
    """Write ``samples`` as a dataset in ``format`` into ``out``.

    Parameters
    ----------
    samples : sequence of ExportSample
        References and reviewed targets (see :func:`samples_from_review`).
    out : path
        The dataset folder (new or empty; or ``overwrite``).
    format : {"tiff", "coco", "ome-zarr", "napari-sine"}
        The layout.
    overwrite : bool
        Write into a non-empty folder, replacing the names an export writes (nothing else).
    val_fraction, seed : float, int
        The split (:func:`~sine_model.bootstrap.dataset.split_samples`).
    recipe : mapping, optional
        How the labels were made (model, options, references, review counts): ``recipe.json``.
    sources : sequence of path
        The user's files the samples were read from: ``out`` may not hold any of them.

    Raises
    ------
    ExportError
        Unknown format, no or bad samples, or a folder that cannot be used; nothing is written then.
    """
    if format not in _WRITERS:
        raise ExportError(f"unknown export format {format!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    check_samples(samples)
    split = split_samples(samples, val_fraction, seed)
    folder = prepare_folder(out, overwrite, sources)
    _WRITERS[format](folder, samples, split)
    full_recipe = {
        "format": format,
        "val_fraction": val_fraction,
        "seed": seed,
        "samples": {s.name: {"source": s.source, "kind": s.kind, "status": s.status} for s in samples},
        **dict(recipe or {}),
    }
    write_common(folder, samples, split, full_recipe)
    n_val = sum(v == "val" for v in split.values())
    return ExportReport(folder, format, len(samples) - n_val, n_val)


def samples_from_review(
    review: ReviewState,
    image_of: Callable[[int], np.ndarray],
    proposal_of: Callable[[int], np.ndarray],
    corrected_of: Callable[[int], np.ndarray] | None = None,
    source_of: Callable[[int], str] | None = None,
    references: Sequence[tuple[str, np.ndarray, np.ndarray, str]] = (),
    channel_axis: int | None = None,
) -> list[ExportSample]:
    """The samples of a reviewed run: references, then accepted and corrected targets in order.

    Parameters
    ----------
    review : ReviewState
        Which targets are accepted or corrected.
    image_of, proposal_of : callable
        Target index → image; target index → the proposed labels accepted as they are.
    corrected_of : callable, optional
        Target index → the user's corrected labels (default: read the review's ``labels`` path).
    source_of : callable, optional
        Target index → source file name (default: the review's target name).
    references : sequence of (name, image, labels, source)
        Reference pairs to export with them.
    channel_axis : int, optional
        Channel axis of 3D images.
    """
    samples = [
        ExportSample(
            f"ref_{name}",
            image,
            np.asarray(labels),
            source,
            "reference",
            "reference",
            channel_axis=channel_axis,
        )
        for name, image, labels, source in references
    ]
    for index in review.indices("accepted", "corrected"):
        entry = review[index]
        if entry.status == "corrected":
            labels = corrected_of(index) if corrected_of is not None else _read_corrected(entry.labels, index)
        else:
            labels = proposal_of(index)
        source = source_of(index) if source_of is not None else entry.name
        samples.append(
            ExportSample(
                f"{index:05d}_{_safe(entry.name)}",
                image_of(index),
                np.asarray(labels),
                source,
                "target",
                entry.status,
                channel_axis=channel_axis,
            )
        )
    return samples


def _read_corrected(path: str | None, index: int) -> np.ndarray:
    from sine_model.io.readers import read_image

    if not path:
        raise ExportError(
            f"target {index} is marked corrected but its review names no labels file: "
            "record the corrected labels' path with it"
        )
    return read_image(path)


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return keep[:60] or "target"
