"""Bundled sample data: one CC0 DSB2018 (BBBC038) group of fluorescence nuclei images.

Four 520×696 grayscale images of the same kind (Hoechst-like stained U2OS nuclei), each with its
instance labels: ``reference`` (38 nuclei) and ``target_1`` … ``target_3``. Provenance and licence are
in ``README.md`` next to this file. This module is napari-free, so the command line and scripts can use
it too::

    from sine_model.sample_data import load_sample

    sample = load_sample()
    sample.reference, sample.reference_labels      # (520, 696) uint8, (520, 696) uint16
    sample.targets, sample.target_labels           # (3, 520, 696) uint8, (3, 520, 696) uint16
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

__all__ = ["SampleData", "load_sample", "sample_files", "SAMPLE_DIR", "TARGET_NAMES"]

SAMPLE_DIR = Path(__file__).resolve().parent
TARGET_NAMES = ("target_1", "target_2", "target_3")


@dataclass(frozen=True)
class SampleData:
    """The sample group as numpy arrays.

    Parameters
    ----------
    reference : ndarray
        Reference image, (H, W) uint8.
    reference_labels : ndarray
        Its instance labels, (H, W) uint16 (0 = background, 1..N = nuclei).
    targets : ndarray
        Target images stacked along axis 0, (N, H, W) uint8.
    target_labels : ndarray
        Ground-truth instance labels of the targets, (N, H, W) uint16, for evaluation only.
    names : tuple of str
        File stems of the targets, in stack order.
    """

    reference: np.ndarray
    reference_labels: np.ndarray
    targets: np.ndarray
    target_labels: np.ndarray
    names: tuple[str, ...]


def sample_files() -> dict[str, tuple[Path, Path]]:
    """Image and label file of every sample image, by name (``reference`` first, then the targets)."""
    return {name: (SAMPLE_DIR / f"{name}.png", SAMPLE_DIR / f"{name}_labels.tif")
            for name in ("reference", *TARGET_NAMES)}


def _read_pair(image_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(iio.imread(image_path))
    labels = np.asarray(tifffile.imread(labels_path))
    if image.shape != labels.shape:  # a damaged installation, not a user error
        raise OSError(f"sample files {image_path.name} {image.shape} and {labels_path.name} "
                      f"{labels.shape} differ in size; reinstall napari-sine")
    return image, labels


def load_sample() -> SampleData:
    """Read the bundled sample group (about 0.5 MB on disk; no network).

    Returns
    -------
    SampleData
        Reference image and labels, and the targets with their ground-truth labels.
    """
    files = sample_files()
    reference, reference_labels = _read_pair(*files["reference"])
    pairs = [_read_pair(*files[name]) for name in TARGET_NAMES]
    return SampleData(
        reference=reference,
        reference_labels=reference_labels,
        targets=np.stack([image for image, _ in pairs]),
        target_labels=np.stack([labels for _, labels in pairs]),
        names=TARGET_NAMES,
    )
