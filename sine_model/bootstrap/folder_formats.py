"""Folder-of-TIFFs dataset layouts: StarDist / cellpose ``images/`` + ``masks/``, and napari-sine's own.

* ``tiff`` — ``images/<name>.tif`` (the image as it is: dtype and channels kept) and ``masks/<name>.tif``
  (instance labels, same name): the layout StarDist's and cellpose's training scripts read.
* ``napari-sine`` — ``images/<name>.tif`` + ``labels/<name>.tif`` and ``manifest.csv`` (``image_id``,
  ``group`` = source file), the layout of :func:`~sine_model.training.folders.folder_groups`; plus
  ``manifest_train.csv`` (the training split only) and ``train.toml``, a training configuration reading
  it, so ``napari-sine train train.toml`` fine-tunes the embedded model on what was just exported.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
import tifffile

from sine_model.bootstrap.dataset import ExportSample

__all__ = ["write_tiff_folders", "write_napari_sine", "TRAIN_CONFIG_NAME"]

TRAIN_CONFIG_NAME = "train.toml"
#: The shipped embedded model's weights (sine_model/data/), the init of the written train.toml.
EMBEDDED_WEIGHTS = "sine-embedded.safetensors"
_TRAIN_TOML = """\
# Training configuration for this dataset: `napari-sine train train.toml` (see docs/training.md).
# Reads the training split (manifest_train.csv: image_id, group = source file); split.csv lists the
# validation images. Fine-tunes the shipped embedded model (its architecture, as configs/embedded.toml,
# and its weights as init); remove `init` to train from random weights.
seed = 0
steps = 1000
out_dir = "training_output"

[model]
kind = "filterbank"
dim = 128
num_heads = 4
ffn_dim = 512
num_fusion_layers = 1
num_decoder_layers = 3
num_queries = 50
encoder_dim = 256
init = {init}

[optim]
lr = 1e-4
warmup_steps = 50

[[data.folders]]
root = "."
manifest = "manifest_train.csv"
"""


def _labels_dtype(labels: np.ndarray) -> np.ndarray:
    """Labels as an unsigned type wide enough for their largest value (uint16 when it fits)."""
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    return labels.astype(np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32, copy=False)


def _write_pairs(out: Path, samples: Sequence[ExportSample], label_folder: str) -> None:
    (out / "images").mkdir()
    (out / label_folder).mkdir()
    for s in samples:
        tifffile.imwrite(out / "images" / f"{s.name}.tif", np.asarray(s.image))
        tifffile.imwrite(out / label_folder / f"{s.name}.tif", _labels_dtype(s.labels), compression="zlib")


def write_tiff_folders(out: Path, samples: Sequence[ExportSample], split: Mapping[str, str]) -> None:
    """``images/`` + ``masks/`` instance TIFFs (StarDist / cellpose layout)."""
    _write_pairs(out, samples, "masks")


def write_napari_sine(out: Path, samples: Sequence[ExportSample], split: Mapping[str, str]) -> None:
    """``images/`` + ``labels/`` + manifests + ``train.toml`` (``napari-sine train``'s folder layout)."""
    _write_pairs(out, samples, "labels")
    for name, keep in (
        ("manifest.csv", lambda s: True),
        ("manifest_train.csv", lambda s: split[s.name] == "train"),
    ):
        with open(out / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "group"])
            writer.writerows([s.name, s.source] for s in samples if keep(s))
    init = json.dumps(str(files("sine_model") / "data" / EMBEDDED_WEIGHTS))  # a TOML basic string
    (out / TRAIN_CONFIG_NAME).write_text(_TRAIN_TOML.replace("{init}", init), encoding="utf-8")
