"""From napari layers to the engine's inputs: reference pairs and a flat list of target planes.

Everything here runs on the main thread before a run starts and only *reads* layers. Problems raise
:class:`InputError` with a message that names the layers and says how to fix it; the widget shows it as
a napari notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from sine_model import InputError
from sine_model import parse_classes as sine_parse_classes

__all__ = [
    "InputError",
    "ReferenceChoice",
    "TargetPlane",
    "spatial_shape",
    "is_stack",
    "reference_arrays",
    "target_planes",
    "parse_classes",
    "channel_axis_of",
    "plane_view",
    "check_channels",
]


@dataclass(frozen=True)
class ReferenceChoice:
    """One reference pair as chosen in the widget.

    Parameters
    ----------
    image : Image
        Reference image layer (2D, 2D RGB, or a 3D stack).
    labels : Labels
        Its labels (same height and width; 2D, or a stack like the image).
    plane : int or None
        Plane along axis 0 when the image or the labels are a 3D stack.
    """

    image: Image
    labels: Labels
    plane: int | None = None


@dataclass(frozen=True)
class TargetPlane:
    """One target: a 2D layer (``plane`` None) or one plane of a stack layer.

    Parameters
    ----------
    layer : Image
        The target image layer.
    plane : int or None
        Index along ``stack_axis``; ``None`` for a 2D layer.
    stack_axis : int or None
        Stack axis of the layer's data (``None`` for a 2D layer).
    """

    layer: Image
    plane: int | None
    stack_axis: int | None


def spatial_shape(layer: Image | Labels) -> tuple[int, ...]:
    """Data shape without the RGB(A) channel axis."""
    shape = tuple(int(s) for s in layer.data.shape) if not layer.multiscale else tuple(layer.data[0].shape)
    return shape[:-1] if isinstance(layer, Image) and layer.rgb else shape


def is_stack(layer: Image | Labels) -> bool:
    """Whether the layer holds a 3D stack of 2D planes (rather than one 2D image)."""
    return len(spatial_shape(layer)) == 3


def channel_axis_of(layer: Image) -> int | None:
    """Channel axis to pass to the engine: the last one for RGB(A) layers."""
    return -1 if layer.rgb else None


def _check_layer(layer: Image | Labels, role: str) -> None:
    if layer.multiscale:
        raise InputError(f"{role} layer '{layer.name}' is multiscale: open its full-resolution level as a "
                         "plain layer and choose that one")
    ndim = len(spatial_shape(layer))
    if ndim not in (2, 3):
        raise InputError(f"{role} layer '{layer.name}' has {ndim} dimensions {spatial_shape(layer)}: "
                         "choose a 2D image or a 3D stack (slice other dimensions out first)")


def _plane(data: Any, plane: int | None, layer: Image | Labels, role: str) -> Any:
    if len(spatial_shape(layer)) == 2:
        return data
    count = int(data.shape[0])
    if plane is None or not 0 <= plane < count:
        raise InputError(f"{role} layer '{layer.name}' is a stack of {count} planes: choose a plane "
                         f"between 0 and {count - 1}")
    return data[plane]


def reference_arrays(choice: ReferenceChoice) -> tuple[np.ndarray, np.ndarray]:
    """The 2D (image, labels) arrays of a reference pair, checked against each other."""
    image_layer, labels_layer = choice.image, choice.labels
    _check_layer(image_layer, "reference image")
    _check_layer(labels_layer, "reference labels")
    image = np.asarray(_plane(image_layer.data, choice.plane, image_layer, "reference image"))
    labels = np.asarray(_plane(labels_layer.data, choice.plane, labels_layer, "reference labels"))
    image_hw = image.shape[:2]
    if labels.shape != image_hw:
        raise InputError(
            f"Labels layer '{labels_layer.name}' {labels.shape} does not match image '{image_layer.name}' "
            f"{image_hw}: choose the Labels layer drawn on this image (same height and width)"
        )
    if not labels.any():
        where = f" (plane {choice.plane})" if choice.plane is not None and is_stack(labels_layer) else ""
        raise InputError(f"Labels layer '{labels_layer.name}'{where} has no objects: paint at least one "
                         "object on the reference image (0 is background)")
    return image, labels


def target_planes(layers: Sequence[Image], stack_axis: int = 0) -> list[TargetPlane]:
    """All targets of the chosen layers: 2D layers are one target, 3D layers one per plane."""
    if not layers:
        raise InputError("no target chosen: tick one image layer (a stack) or several image layers "
                         "under Targets")
    planes: list[TargetPlane] = []
    for layer in layers:
        _check_layer(layer, "target")
        if is_stack(layer):
            if not 0 <= stack_axis < 3:
                raise InputError(f"stack axis {stack_axis} does not exist in '{layer.name}': use 0, 1 or 2")
            count = spatial_shape(layer)[stack_axis]
            planes.extend(TargetPlane(layer, i, stack_axis) for i in range(count))
        else:
            planes.append(TargetPlane(layer, None, None))
    return planes


def plane_view(target: TargetPlane) -> Any:
    """The target's 2D image (lazy for dask/zarr data; a view for numpy)."""
    data = target.layer.data
    if target.plane is None:
        return data
    index: list[Any] = [slice(None)] * data.ndim
    index[target.stack_axis] = target.plane
    return data[tuple(index)]


def check_channels(references: Sequence[ReferenceChoice], targets: Sequence[TargetPlane]) -> int | None:
    """The common channel axis of all images; RGB and grayscale layers cannot be mixed."""
    kinds = {(layer.name, bool(layer.rgb)) for layer in [r.image for r in references]
             + [t.layer for t in targets]}
    rgb = {name for name, is_rgb in kinds if is_rgb}
    gray = {name for name, is_rgb in kinds if not is_rgb}
    if rgb and gray:
        raise InputError(f"RGB layers {sorted(rgb)} and grayscale layers {sorted(gray)} are mixed: use "
                         "references and targets of the same kind (convert one side first)")
    return -1 if rgb else None


def parse_classes(text: str) -> dict[int, int] | None:
    """Parse the classes field (``1:1, 2:1``; :func:`sine_model.parse_classes`); empty means one class."""
    return sine_parse_classes(text) or None
