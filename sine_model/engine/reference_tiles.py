"""References as the engine holds them: label → class maps, and reference images cut into model inputs.

A reference larger than the model input is tiled like a target; every tile holding labelled pixels in
its core becomes one shot (its masks, classes and object ids), so all of a large reference is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from sine_model.engine.inputs import PropagationError
from sine_model.engine.tiling import Tile, plan_tiles
from sine_model.preprocess.transforms import Geometry, prepare_labels, rgb_to_model_input

__all__ = ["ReferenceTiles", "ReferenceInputs", "class_map", "reference_inputs"]


@dataclass
class ReferenceTiles:
    """The encoded references: neck features of the reference tiles and each tile's objects."""

    features: torch.Tensor  # (T, C, g, g), on the model device
    masks: list[torch.Tensor]
    classes: list[torch.Tensor]
    ids: list[torch.Tensor]
    id_sources: dict[int, str] = field(default_factory=dict)


@dataclass
class ReferenceInputs:
    """Model inputs of the reference tiles (before encoding) and their objects."""

    images: list[torch.Tensor]  # (1, 3, P, P) each
    masks: list[torch.Tensor]
    classes: list[torch.Tensor]
    ids: list[torch.Tensor]
    id_sources: dict[int, str]


def class_map(classes: Mapping[int, int] | None, label_images: list[np.ndarray]) -> dict[int, int]:
    """Label value → class id for every labelled value (default: all class 1); raises on gaps."""
    values = sorted({int(v) for labels in label_images for v in np.unique(labels) if v != 0})
    if classes is None:
        return dict.fromkeys(values, 1)
    missing = [v for v in values if v not in classes]
    if missing:
        raise PropagationError(f"labels {missing[:10]} have no class in the classes mapping: give "
                               "every labelled object a class")
    bad = {k: c for k, c in classes.items() if int(c) < 1}
    if bad:
        raise PropagationError(f"class ids must be positive integers, got {bad}")
    return {v: int(classes[v]) for v in values}


def reference_inputs(rgbs: list[np.ndarray], label_images: list[np.ndarray], class_of: Mapping[int, int],
                     extent: int, overlap: int, pad: int, geometry: Callable[[Tile], Geometry],
                     device: torch.device) -> ReferenceInputs:
    """Cut (projected) reference images and their labels into model inputs, one per labelled tile."""
    inputs = ReferenceInputs([], [], [], [], {})
    sources: dict[int, set[int]] = {}
    for ref_index, (rgb, labels) in enumerate(zip(rgbs, label_images, strict=True)):
        for tile in plan_tiles(*labels.shape, extent, overlap):
            core_labels = np.zeros(tile.shape, dtype=np.int64)
            core_labels[tile.core_in_tile] = labels[tile.core_slices]
            if not core_labels.any():
                continue
            tile_geometry = geometry(tile)
            tile_masks, tile_ids = prepare_labels(core_labels, tile_geometry)
            inputs.images.append(rgb_to_model_input(rgb[tile.slices], tile_geometry.valid_hw, pad))
            inputs.masks.append(tile_masks.to(device))
            inputs.ids.append(tile_ids.to(device))
            inputs.classes.append(torch.tensor([class_of[int(v)] for v in tile_ids], device=device))
            for obj in tile_ids.tolist():
                sources.setdefault(obj, set()).add(ref_index)
    inputs.id_sources = {k: "ref:" + ",".join(map(str, sorted(v))) for k, v in sources.items()}
    return inputs
