"""User images as RGB float in [0, 1]: what every part of the engine reads.

Intensity contract (:func:`to_rgb_float`)
-----------------------------------------
* ``uint8`` images (gray, RGB or RGBA) are divided by 255, exactly like
  torchvision ``ToTensor`` ("RGB as is"), which is what the official model saw.
* Every other dtype (``uint16``, signed/unsigned integers, floats, ...) gets a
  per-channel percentile normalisation: the low percentile maps to 0, the high
  percentile to 1, values outside are clipped. If the two percentiles are equal
  (e.g. sparse spots on a dark background) the channel minimum and maximum are
  used instead; a constant channel becomes all zeros. Images are never silently
  cast to 8 bit.
* ``bool`` images, complex/object dtypes and images with NaN or inf raise
  ``ValueError``.

Channel contract
----------------
* 2D ``(H, W)``: grayscale, replicated to 3 channels.
* 3D: the channel axis is ``channel_axis`` if given, otherwise the last axis
  when its size is 3 or 4 (RGB / RGBA). Any other 3D array without
  ``channel_axis`` is ambiguous and raises ``ValueError``.
* 1 channel is replicated, 2 channels become ``(c0, c1, 0)``, 3 are used as is,
  4 are treated as RGBA and the alpha channel is dropped, more than 4 raise
  ``ValueError`` (select at most 3 channels first).
* Other ranks raise ``ValueError``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_rgb_float"]


def _channels_last(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Return ``image`` as ``(H, W, C)`` following the channel contract."""
    if image.ndim == 2:
        if channel_axis is not None:
            raise ValueError(
                f"channel_axis={channel_axis} was given but the image is 2D "
                f"{image.shape}; pass channel_axis=None for a grayscale image."
            )
        return image[:, :, None]
    if image.ndim != 3:
        raise ValueError(
            f"Expected a 2D (H, W) or 3D image with one channel axis, got shape "
            f"{image.shape} ({image.ndim}D). Select a single 2D plane (and at "
            "most 3 channels) first."
        )
    if channel_axis is None:
        if image.shape[-1] in (3, 4):
            return image
        raise ValueError(
            f"Cannot tell which axis holds the channels of a 3D image with shape "
            f"{image.shape}: pass channel_axis, or select a single 2D plane."
        )
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise ValueError(f"channel_axis must be an int or None, got {channel_axis!r}")
    if not -3 <= channel_axis < 3:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for a 3D image with shape {image.shape}."
        )
    return np.moveaxis(image, int(channel_axis), -1)


def _percentile_scale(channel: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of one channel to 0/1 (clipped)."""
    data = channel.astype(np.float64, copy=False)
    lo, hi = np.percentile(data, [low, high])
    if not hi > lo:
        lo, hi = float(data.min()), float(data.max())
    if not hi > lo:
        return np.zeros(channel.shape, dtype=np.float32)
    out = (data - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def to_rgb_float(
    image: np.ndarray,
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
) -> np.ndarray:
    """Convert an image to a ``(H, W, 3)`` float32 RGB array in [0, 1].

    Parameters
    ----------
    image : np.ndarray
        2D grayscale or 3D multi-channel image.
    channel_axis : int or None, optional
        Axis holding the channels of a 3D image. When None, a last axis of
        size 3 or 4 is taken as RGB/RGBA.
    percentiles : tuple of float, optional
        Low/high percentiles mapped to 0/1 for non-``uint8`` images.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` float32 array with values in [0, 1].

    Raises
    ------
    ValueError
        For bool, complex or object dtypes, NaN/inf values, empty images,
        unsupported ranks, ambiguous channel layouts or more than 4 channels.

    Notes
    -----
    See the module docstring for the full intensity and channel contract.
    """
    image = np.asarray(image)
    if image.dtype == np.bool_:
        raise ValueError(
            "Boolean images are not supported as model input; convert the mask "
            "to an intensity image (e.g. image.astype(np.uint8) * 255)."
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"Unsupported image dtype {image.dtype}; use an integer or float image.")
    low, high = (float(p) for p in percentiles)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    hwc = _channels_last(image, channel_axis)
    if hwc.shape[0] == 0 or hwc.shape[1] == 0:
        raise ValueError(f"Image has an empty spatial axis: shape {image.shape}.")
    n_channels = hwc.shape[-1]
    if n_channels == 0 or n_channels > 4:
        raise ValueError(
            f"Image has {n_channels} channels along the channel axis (shape "
            f"{image.shape}); the model needs 1-4 channels. Pass the right "
            "channel_axis or select at most 3 channels."
        )
    if n_channels == 4:  # RGBA: drop alpha
        hwc = hwc[..., :3]
    if np.issubdtype(hwc.dtype, np.floating) and not np.isfinite(hwc).all():
        raise ValueError(
            "Image contains NaN or infinite values; replace them first (e.g. with np.nan_to_num)."
        )

    if hwc.dtype == np.uint8:
        # Same float32 division as torchvision ToTensor.
        scale = np.float32(255.0)
        channels = [hwc[..., c].astype(np.float32) / scale for c in range(hwc.shape[-1])]
    else:
        channels = [_percentile_scale(hwc[..., c], low, high) for c in range(hwc.shape[-1])]

    if len(channels) == 1:
        channels = channels * 3
    elif len(channels) == 2:
        channels.append(np.zeros_like(channels[0]))
    return np.ascontiguousarray(np.stack(channels, axis=-1), dtype=np.float32)
