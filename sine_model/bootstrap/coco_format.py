"""COCO instances export: ``images/<name>.tif`` and ``annotations/instances_<split>.json`` with RLE masks.

Masks are run-length encoded by ``pycocotools`` (``pycocotools.mask.encode``, the reference encoder
detectron2 and the COCO API decode), areas and boxes come from it too; one JSON per split (``train``,
``val``), each listing only that split's images. Objects keep their class (``category_id``; class 1 when
the samples carry none). Needs the ``bootstrap`` extra (``pip install 'napari-sine[bootstrap]'``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from sine_model.bootstrap.dataset import ExportError, ExportSample

__all__ = ["write_coco", "coco_available", "annotation_path"]


def coco_available() -> bool:
    """Whether ``pycocotools`` can be imported."""
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        return False
    return True


def annotation_path(out: Path, split: str) -> Path:
    """Where the annotations of ``split`` ("train" or "val") are written."""
    return out / "annotations" / f"instances_{split}.json"


def _annotations(sample: ExportSample, image_id: int, first_id: int) -> list[dict[str, Any]]:
    from pycocotools import mask as mask_utils

    labels = np.asarray(sample.labels)
    rows = []
    for value in np.unique(labels[labels != 0]).tolist():
        rle = mask_utils.encode(np.asfortranarray((labels == value).astype(np.uint8)))
        area, box = float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")  # bytes → str for JSON (the COCO convention)
        rows.append(
            {
                "id": first_id + len(rows),
                "image_id": image_id,
                "category_id": sample.class_of(value),
                "segmentation": rle,
                "area": area,
                "bbox": box,
                "iscrowd": 0,
                "label": int(value),
            }
        )
    return rows


def write_coco(out: Path, samples: Sequence[ExportSample], split: Mapping[str, str]) -> None:
    """Images and one COCO instances JSON per split (see the module docstring)."""
    if not coco_available():
        raise ExportError(
            "the COCO export needs pycocotools: pip install 'napari-sine[bootstrap]' "
            "(or pip install pycocotools)"
        )
    (out / "images").mkdir()
    (out / "annotations").mkdir()
    classes = sorted(
        {s.class_of(v) for s in samples for v in np.unique(s.labels[s.labels != 0]).tolist()} or {1}
    )
    categories = [{"id": c, "name": f"class {c}", "supercategory": "object"} for c in classes]
    image_ids = {s.name: n for n, s in enumerate(samples, start=1)}
    for part in ("train", "val"):
        images, annotations = [], []
        for s in samples:
            if split[s.name] != part:
                continue
            height, width = np.asarray(s.labels).shape
            images.append(
                {
                    "id": image_ids[s.name],
                    "file_name": f"images/{s.name}.tif",
                    "height": int(height),
                    "width": int(width),
                    "source": s.source,
                    "status": s.status,
                }
            )
            annotations += _annotations(s, image_ids[s.name], len(annotations) + 1)
        document = {
            "info": {"description": "napari-sine export", "version": "1"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        annotation_path(out, part).write_text(json.dumps(document), encoding="utf-8")
    for s in samples:
        tifffile.imwrite(out / "images" / f"{s.name}.tif", np.asarray(s.image))
