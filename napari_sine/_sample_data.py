"""napari sample data: the bundled CC0 DSB2018 group (reference + labels, a stack of three targets)."""

from __future__ import annotations

from typing import Any

from sine_model import load_sample

__all__ = ["nuclei_sample"]


def nuclei_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """Layers of the sample: reference image, its labels, the targets stack, its ground truth (hidden).

    Returns
    -------
    list of LayerData tuples
        ``(data, kwargs, layer type)`` for napari.
    """
    sample = load_sample()
    credit = {"source": "BBBC038 / DSB2018 stage-1 test (CC0 1.0), see sine_model/sample_data/README.md"}
    return [
        (sample.reference, {"name": "reference", "colormap": "gray", "metadata": credit}, "image"),
        (sample.reference_labels, {"name": "reference labels", "metadata": credit}, "labels"),
        (sample.targets, {"name": "targets", "colormap": "gray", "metadata": credit}, "image"),
        (sample.target_labels, {"name": "targets ground truth", "visible": False, "metadata": credit},
         "labels"),
    ]
