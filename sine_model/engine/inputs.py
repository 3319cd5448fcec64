"""Checking and iterating user inputs for propagation: reference pairs and targets of any shape.

Targets may be one image, a stack (``stack_axis`` says which axis), a list of images, or a lazy array
(dask, zarr — anything with ``shape``, ``ndim`` and slicing), read one target at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from sine_model.errors import PropagationError
from sine_model.labelmaps import MAX_LABEL

__all__ = [
    "PropagationError",
    "image_layout",
    "check_reference_pair",
    "check_reference_pairs",
    "count_targets",
    "iter_targets",
    "check_target_layout",
]


def _is_array_like(obj: Any) -> bool:
    return hasattr(obj, "shape") and hasattr(obj, "ndim") and hasattr(obj, "__getitem__")


def image_layout(image: Any, channel_axis: int | None, what: str) -> tuple[tuple[int, int], int]:
    """Spatial shape and channel count of one image (2D gray, or 3D with a channel axis).

    A 3D image without ``channel_axis`` must have 3 or 4 channels in its last axis (RGB/RGBA). This is the
    one check of an image's layout (references and targets); its messages name the problem and the fix.
    """
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 2:
        raise PropagationError(
            f"{what} is {len(shape)}-D {shape}, not an image: images have height and width. If it is a "
            "slice of a single image cut by stack_axis (CLI: --stack-axis), leave stack_axis out")
    layout = _spatial_layout(shape, channel_axis, what)
    if 0 in layout[0] or layout[1] == 0:
        raise PropagationError(f"{what} is empty (shape {shape}): it has no pixels; give an image with at "
                               "least one pixel")
    return layout


def _spatial_layout(shape: tuple[int, ...], channel_axis: int | None,
                    what: str) -> tuple[tuple[int, int], int]:
    if len(shape) == 2:
        if channel_axis is not None:
            raise PropagationError(f"{what} is 2D {shape} but channel_axis={channel_axis} was given")
        return (shape[0], shape[1]), 1
    if len(shape) == 3:
        if channel_axis is None:
            if shape[-1] in (3, 4):
                return (shape[0], shape[1]), shape[-1]
            raise PropagationError(
                f"{what} has shape {shape}: is it a stack or an image with channels? Pass stack_axis for "
                "a stack, or channel_axis for a multichannel image"
            )
        axis = channel_axis % 3
        spatial = tuple(s for i, s in enumerate(shape) if i != axis)
        return (spatial[0], spatial[1]), shape[axis]
    raise PropagationError(f"{what} has {len(shape)} dimensions {shape}: expected a 2D image "
                           "(optionally with a channel axis)")


def check_reference_pair(
    index: int, image: Any, labels: Any, channel_axis: int | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], int]:
    """Validate one (image, label image) pair; return them as arrays, plus shape and channels."""
    what = f"reference {index}"
    if not _is_array_like(image) or not _is_array_like(labels):
        raise PropagationError(f"{what}: image and labels must be arrays")
    spatial, channels = image_layout(image, channel_axis, f"{what} image")
    label_array = np.asarray(labels)
    if label_array.shape != spatial:
        raise PropagationError(
            f"{what}: labels have shape {label_array.shape} but the image is {spatial}: "
            "draw the labels on the same image (same height and width)"
        )
    if label_array.dtype == np.bool_:
        label_array = label_array.astype(np.uint8)
    elif np.issubdtype(label_array.dtype, np.floating):
        if not np.isfinite(label_array).all():
            raise PropagationError(f"{what}: labels contain NaN or inf; labels must be whole numbers")
        if not np.array_equal(label_array, np.round(label_array)):
            raise PropagationError(f"{what}: labels have fractional values; use whole numbers "
                                   "(0 = background)")
    elif not np.issubdtype(label_array.dtype, np.integer):
        raise PropagationError(f"{what}: labels must be integers, got dtype {label_array.dtype}")
    if label_array.size and label_array.min() < 0:
        raise PropagationError(f"{what}: labels contain negative values; use 0 for background and "
                               "positive ids for objects")
    if label_array.size and float(label_array.max()) > MAX_LABEL:
        raise PropagationError(f"{what}: label value {label_array.max()} exceeds {MAX_LABEL} "
                               "(uint32); relabel the objects, e.g. skimage.segmentation.relabel_sequential")
    if not label_array.any():
        raise PropagationError(f"{what}: the label image has no objects; paint at least one object")
    image_array = np.asarray(image)
    if np.issubdtype(image_array.dtype, np.floating) and not np.isfinite(image_array).all():
        raise PropagationError(f"{what}: the image contains NaN or inf values; replace them first "
                               "(e.g. numpy.nan_to_num)")
    return image_array, label_array.astype(np.int64), spatial, channels


def check_reference_pairs(
    pairs: Any, channel_axis: int | None
) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int], int]]:
    """Validate all reference pairs (:func:`check_reference_pair`) and that their channels agree."""
    checked = [check_reference_pair(i, img, lab, channel_axis)
               for i, (img, lab) in enumerate(sequence_of_pairs(pairs))]
    channels = {c for *_, c in checked}
    if len(channels) > 1:
        raise PropagationError(f"reference images have different channel counts {sorted(channels)}: "
                               "use references with the same channels")
    return checked


def _is_stream(targets: Any) -> bool:
    """A one-shot iterable of images (generator, iterator) rather than an array or a list."""
    return not _is_array_like(targets) and not isinstance(targets, (list, tuple, str, bytes)) \
        and hasattr(targets, "__iter__")


def count_targets(targets: Any, stack_axis: int | None = None) -> int | None:
    """Number of targets :func:`iter_targets` will yield (None for a generator: unknown in advance)."""
    if isinstance(targets, (list, tuple)):
        return len(targets)
    if _is_stream(targets):
        return None
    if not _is_array_like(targets):
        raise PropagationError(f"targets must be an array, a stack or a list of arrays, got "
                               f"{type(targets).__name__}")
    if stack_axis is None:
        return 1
    return int(targets.shape[_axis(stack_axis, targets.ndim)])


def _axis(stack_axis: int, ndim: int) -> int:
    if not -ndim <= stack_axis < ndim:
        raise PropagationError(f"stack_axis {stack_axis} is out of range for {ndim}-D targets")
    return stack_axis % ndim


def _target_views(targets: Any, stack_axis: int | None) -> Iterator[Any]:
    if isinstance(targets, (list, tuple)) or _is_stream(targets):
        if stack_axis is not None:
            raise PropagationError("stack_axis applies to one stacked array, not to a list of images")
        yield from targets
        return
    if not _is_array_like(targets):
        raise PropagationError(f"targets must be an array, a stack, a list or an iterable of arrays, got "
                               f"{type(targets).__name__}")
    if stack_axis is None:
        yield targets
        return
    axis = _axis(stack_axis, targets.ndim)
    for i in range(int(targets.shape[axis])):
        index: list[Any] = [slice(None)] * targets.ndim
        index[axis] = i
        yield targets[tuple(index)]


def _materialise(view: Any) -> np.ndarray:
    if hasattr(view, "compute"):  # dask
        view = view.compute()
    return np.asarray(view)


def check_target_layout(
    index: int, target: Any, ref_ndim: int, ref_channels: int, channel_axis: int | None,
    stack_axis: int | None,
) -> None:
    """Check a target's dimensions and channels against the references (no pixel data read)."""
    what = f"target {index}"
    if not _is_array_like(target):
        raise PropagationError(f"{what} is a {type(target).__name__}, not an array")
    if target.ndim > ref_ndim and stack_axis is None and target.ndim == 3 and target.shape[-1] in (3, 4):
        raise PropagationError(
            f"target {index} has {target.shape[-1]} channels {tuple(target.shape)} but the references have "
            f"{ref_channels}: use targets with the same channels as the references (or pass stack_axis "
            "if it is a stack)"
        )
    if target.ndim > ref_ndim:
        hint = (
            "pass stack_axis (CLI: --stack-axis) if it is a stack of targets, or give targets with the "
            "same channels as the references" if stack_axis is None else "the stack has too many dimensions"
        )
        raise PropagationError(
            f"{what} has {target.ndim} dimensions {tuple(target.shape)} but the reference images have "
            f"{ref_ndim}: {hint}"
        )
    _, channels = image_layout(target, channel_axis, what)
    if channels != ref_channels:
        raise PropagationError(
            f"{what} has {channels} channel(s) but the references have {ref_channels}: use targets "
            "with the same channels as the references"
        )


def iter_targets(
    targets: Any,
    stack_axis: int | None,
    ref_ndim: int,
    ref_channels: int,
    channel_axis: int | None,
) -> Iterator[np.ndarray]:
    """Yield each target as a numpy array, reading lazy arrays one target at a time."""
    for index, view in enumerate(_target_views(targets, stack_axis)):
        check_target_layout(index, view, ref_ndim, ref_channels, channel_axis, stack_axis)
        array = _materialise(view)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise PropagationError(f"target {index} contains NaN or inf values; replace them first "
                                   "(e.g. numpy.nan_to_num)")
        yield array


def validate_targets(
    targets: Any,
    stack_axis: int | None,
    ref_ndim: int,
    ref_channels: int,
    channel_axis: int | None,
    check_values: bool = True,
) -> int:
    """Check every target before any work starts; return the target count.

    With ``check_values`` the pixel data is read once (one target at a time) to look for NaN/inf.
    """
    count = 0
    if check_values:
        for _ in iter_targets(targets, stack_axis, ref_ndim, ref_channels, channel_axis):
            count += 1
        return count
    for index, view in enumerate(_target_views(targets, stack_axis)):
        check_target_layout(index, view, ref_ndim, ref_channels, channel_axis, stack_axis)
        count += 1
    return count


def sequence_of_pairs(pairs: Any) -> Sequence[tuple[Any, Any]]:
    """Check that ``pairs`` is a non-empty sequence of (image, labels)."""
    if isinstance(pairs, tuple) and len(pairs) == 2 and _is_array_like(pairs[0]):
        pairs = [pairs]  # a single (image, labels) pair
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise PropagationError("references must be a non-empty list of (image, labels) pairs")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise PropagationError(f"reference {i} must be an (image, labels) pair")
    return pairs
