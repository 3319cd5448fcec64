"""Turn user images and label images into SINE model inputs.

Images first become RGB float in [0, 1] (:func:`~sine_model.preprocess.rgb.to_rgb_float`: the intensity and
channel contracts).

Geometry
--------
:func:`prepare_image` resizes according to a :class:`ResizeRule`, normalises
with the ImageNet mean/std and zero-pads bottom/right to a ``P x P`` square
(zero in normalised space is the ImageNet mean colour). Resizing uses torch
bilinear interpolation (``antialias=True`` whenever an axis is downscaled).
The official pipelines used PIL / torchvision / detectron2 resizes, so the
resized pixels differ slightly from theirs; the output *sizes* follow the
official formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from sine_model.preprocess.rgb import to_rgb_float

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

PATCH_SIZE = 14


@dataclass(frozen=True)
class ResizeRule:
    """How an image is resized and padded before entering the model.

    Parameters
    ----------
    name : str
        Identifier of the rule.
    mode : {'fixed', 'long_side'}
        ``'fixed'`` resizes to ``(size, size)`` ignoring the aspect ratio (the
        official FSS evaluation). ``'long_side'`` makes the long side ``size``
        and scales the short side to ``short * size / long``.
    size : int
        Target size (see ``mode``).
    pad : int
        Side ``P`` of the zero-padded square; a multiple of 14 and >= size.
    rounding : {'round', 'floor'}, optional
        How the short side of ``'long_side'`` (about ``size * short / long``)
        is made an integer: ``'round'`` rounds half up with the float
        arithmetic of detectron2 ``ResizeShortestEdge(size, max_size=size)``
        (FSOD eval); ``'floor'`` truncates ``size / aspect`` as the official
        VOS script does. The result is clamped to ``[1, size]``.
    """

    name: str
    mode: Literal["fixed", "long_side"]
    size: int
    pad: int
    rounding: Literal["round", "floor"] = "round"

    def __post_init__(self) -> None:
        if self.mode not in ("fixed", "long_side"):
            raise ValueError(f"ResizeRule.mode must be 'fixed' or 'long_side', got {self.mode!r}")
        if self.rounding not in ("round", "floor"):
            raise ValueError(
                f"ResizeRule.rounding must be 'round' or 'floor', got {self.rounding!r}"
            )
        if int(self.size) != self.size or self.size < 1:
            raise ValueError(f"ResizeRule.size must be a positive int, got {self.size!r}")
        if int(self.pad) != self.pad or self.pad < 1 or self.pad % PATCH_SIZE:
            raise ValueError(
                f"ResizeRule.pad must be a positive multiple of {PATCH_SIZE}, got {self.pad!r}"
            )
        if self.pad < self.size:
            raise ValueError(f"ResizeRule.pad ({self.pad}) must be >= size ({self.size})")

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Return the resized ``(h_r, w_r)`` for an input of ``(height, width)``.

        Parameters
        ----------
        height, width : int
            Input size in pixels (both >= 1).

        Returns
        -------
        tuple of int
            Resized size, each side in ``[1, size]``.
        """
        if height < 1 or width < 1:
            raise ValueError(f"Image size must be positive, got {(height, width)}")
        if self.mode == "fixed":
            return self.size, self.size
        size = float(self.size)
        if self.rounding == "floor":  # official VOS arithmetic (aspect = w / h)
            aspect = width / height
            if aspect > 1:
                new_h, new_w = size / aspect, size
            else:
                new_h, new_w = size, size * aspect
            out_h, out_w = int(new_h), int(new_w)
        else:  # detectron2 ResizeShortestEdge(short=size, max=size) arithmetic
            scale = size / min(height, width)
            if height < width:
                new_h, new_w = size, scale * width
            else:
                new_h, new_w = scale * height, size
            if max(new_h, new_w) > size:
                shrink = size / max(new_h, new_w)
                new_h, new_w = new_h * shrink, new_w * shrink
            out_h, out_w = int(new_h + 0.5), int(new_w + 0.5)
        return min(max(out_h, 1), self.size), min(max(out_w, 1), self.size)


RESIZE_RULES: dict[str, ResizeRule] = {
    # FSS eval: Resize((518, 518)) ignoring aspect, padded to 896.
    "fss": ResizeRule("fss", "fixed", 518, 896),
    # FSOD eval / training eval branch: long side 896 (ResizeShortestEdge).
    "long_side_896": ResizeRule("long_side_896", "long_side", 896, 896, "round"),
    # VOS eval: long side 1036, other side int(1036 / aspect).
    "vos": ResizeRule("vos", "long_side", 1036, 1036, "floor"),
}


def resize_rule(name_or_rule: str | ResizeRule) -> ResizeRule:
    """Look up a named :class:`ResizeRule` (or pass a rule through).

    Parameters
    ----------
    name_or_rule : str or ResizeRule
        A key of :data:`RESIZE_RULES` or a custom rule.

    Returns
    -------
    ResizeRule
        The rule; an unknown name raises ``ValueError`` listing valid names.
    """
    if isinstance(name_or_rule, ResizeRule):
        return name_or_rule
    if isinstance(name_or_rule, str) and name_or_rule in RESIZE_RULES:
        return RESIZE_RULES[name_or_rule]
    raise ValueError(
        f"Unknown resize rule {name_or_rule!r}; valid names are "
        f"{sorted(RESIZE_RULES)} (or pass a ResizeRule)."
    )


@dataclass(frozen=True)
class Geometry:
    """Where the image sits inside the padded model input.

    Parameters
    ----------
    pad : int
        Side ``P`` of the square model input.
    valid_hw : tuple of int
        ``(h_r, w_r)``: the resized image occupies ``[:h_r, :w_r]``.
    original_hw : tuple of int
        ``(H, W)`` of the original image (the output resolution).
    """

    pad: int
    valid_hw: tuple[int, int]
    original_hw: tuple[int, int]

    def __post_init__(self) -> None:
        h_r, w_r = self.valid_hw
        h, w = self.original_hw
        if not (0 < h_r <= self.pad and 0 < w_r <= self.pad):
            raise ValueError(f"valid_hw {self.valid_hw} must lie within the pad size {self.pad}")
        if h < 1 or w < 1:
            raise ValueError(f"original_hw must be positive, got {self.original_hw}")


@dataclass
class PreparedImage:
    """A model-ready image.

    Parameters
    ----------
    tensor : torch.Tensor
        ``(1, 3, P, P)`` float32, ImageNet-normalised, zero-padded bottom/right.
    geometry : Geometry
        Resize/pad bookkeeping for post-processing and labels.
    """

    tensor: torch.Tensor
    geometry: Geometry


def rgb_to_model_input(rgb: np.ndarray, size_hw: tuple[int, int], pad: int) -> torch.Tensor:
    """Resize an RGB float image, normalise it and zero-pad it bottom/right to ``pad`` × ``pad``.

    Parameters
    ----------
    rgb : np.ndarray
        ``(H, W, 3)`` float32 in [0, 1] (see :func:`to_rgb_float`).
    size_hw : tuple of int
        Size after resizing; must fit in ``pad``.
    pad : int
        Side ``P`` of the square output.

    Returns
    -------
    torch.Tensor
        ``(1, 3, P, P)`` float32, ImageNet-normalised; the padding is exactly 0.
    """
    h_r, w_r = size_hw
    if not (0 < h_r <= pad and 0 < w_r <= pad):
        raise ValueError(f"resized size {size_hw} must fit in the padded square {pad}")
    height, width = rgb.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).contiguous()
    if (h_r, w_r) != (height, width):
        antialias = h_r < height or w_r < width
        x = F.interpolate(
            x, size=(h_r, w_r), mode="bilinear", align_corners=False, antialias=antialias
        ).clamp_(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.zeros((1, 3, pad, pad), dtype=torch.float32)
    out[:, :, :h_r, :w_r] = (x - mean) / std
    return out


def prepare_image(
    image: np.ndarray,
    rule: str | ResizeRule = "long_side_896",
    channel_axis: int | None = None,
) -> PreparedImage:
    """Convert, resize, normalise and pad an image for the model.

    Parameters
    ----------
    image : np.ndarray
        Input image (see :func:`to_rgb_float` for accepted layouts).
    rule : str or ResizeRule, optional
        Resize rule or its name in :data:`RESIZE_RULES`.
    channel_axis : int or None, optional
        Channel axis of a 3D image.

    Returns
    -------
    PreparedImage
        ``(1, 3, P, P)`` tensor and its :class:`Geometry`.

    Notes
    -----
    Resizing is torch bilinear (``align_corners=False``) with
    ``antialias=True`` when either axis shrinks; the official code used
    PIL/torchvision resizes, so pixel values differ slightly.
    """
    rule = resize_rule(rule)
    rgb = to_rgb_float(image, channel_axis=channel_axis)
    height, width = rgb.shape[:2]
    h_r, w_r = rule.output_hw(height, width)
    out = rgb_to_model_input(rgb, (h_r, w_r), rule.pad)
    geometry = Geometry(pad=rule.pad, valid_hw=(h_r, w_r), original_hw=(height, width))
    return PreparedImage(tensor=out, geometry=geometry)


def _as_int_labels(labels: np.ndarray) -> np.ndarray:
    """Validate a label image and return it as int64."""
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all():
            raise ValueError("Label image contains NaN or infinite values.")
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(
                "Label image has non-integer float values; labels must be whole "
                "numbers (0 = background)."
            )
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Label image must have an integer dtype, got {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError("Label image has negative values; use 0 for background and positive ids.")
    if labels.size and labels.max() > np.iinfo(np.int64).max:
        raise ValueError("Label values must fit in int64.")
    return labels.astype(np.int64)


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of torch ``mode='nearest'`` resizing ``n_in -> n_out``."""
    ramp = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
    idx = F.interpolate(ramp, size=(n_out, 1), mode="nearest")
    return idx.view(-1).round().to(torch.int64).numpy()


def prepare_labels(labels: np.ndarray, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a label image into padded per-object reference masks.

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` label image matching ``geometry.original_hw``; 0 is
        background, each positive value one object. Any integer dtype, bool, or
        float with whole-number values.
    geometry : Geometry
        Geometry of the matching :class:`PreparedImage`.

    Returns
    -------
    masks : torch.Tensor
        ``(N, P, P)`` bool masks, nearest-resized (torch ``mode='nearest'``,
        as the official VOS script) into ``[:h_r, :w_r]`` and padded with False.
    ids : torch.Tensor
        ``(N,)`` int64 label values, ascending, one per nonzero value.

    Raises
    ------
    ValueError
        On shape mismatch, no objects, negative or non-integer values.

    Notes
    -----
    An object that vanishes under the nearest resize (tiny object, strong
    downscale) is kept: the resized pixel nearest to its centroid is set in
    its mask, so it may overlap another object's mask at that one pixel.
    """
    arr = _as_int_labels(labels)
    if arr.shape != tuple(geometry.original_hw):
        raise ValueError(
            f"Label image shape {arr.shape} does not match the image size "
            f"{tuple(geometry.original_hw)}; labels must be 2D and the same size "
            "as the image they annotate."
        )
    ids = np.unique(arr[arr != 0])
    if ids.size == 0:
        raise ValueError(
            "Label image has no objects (all zero); paint at least one object "
            "with a positive label."
        )
    height, width = arr.shape
    h_r, w_r = geometry.valid_hw
    resized = arr[np.ix_(_nearest_indices(height, h_r), _nearest_indices(width, w_r))]
    small = resized[None, :, :] == ids[:, None, None]

    for k in np.flatnonzero(~small.any(axis=(1, 2))):
        ys, xs = np.nonzero(arr == ids[k])
        # Pixel centres: original (y + 0.5) maps to (y + 0.5) * h_r / H.
        r = min(int((ys.mean() + 0.5) * h_r / height), h_r - 1)
        c = min(int((xs.mean() + 0.5) * w_r / width), w_r - 1)
        small[k, r, c] = True

    masks = torch.zeros((ids.size, geometry.pad, geometry.pad), dtype=torch.bool)
    masks[:, :h_r, :w_r] = torch.from_numpy(small)
    return masks, torch.from_numpy(ids.astype(np.int64))
