"""Random augmentations of (image, instance labels) pairs for training.

One call of :func:`augment` applies, in this order:

1. a random 90-degree rotation and horizontal / vertical flips (exact, on both arrays);
2. a scale jitter: a factor drawn log-uniformly from ``scale_range``, relative to the image's own
   pixel size, or, with ``lsj=True``, relative to the scale that fits the image into the output size
   (large-scale jitter as in the SINE training recipe);
3. a random crop of ``out_size`` (when the scaled image is smaller, it is kept whole and, with
   ``pad=True``, zero-padded bottom/right);
4. an intensity jitter (gamma, contrast, brightness, Gaussian noise), for float images in [0, 1].

The image is resized bilinearly (antialiased when shrinking); the labels use nearest-neighbour
sampling at the same pixel centres, so they stay aligned with the image. Label values are never
changed: an object cut by the crop keeps its id, an object that leaves the crop disappears. Everything
is drawn from the generator passed in, so results are deterministic given its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of :func:`augment`.

    Parameters
    ----------
    out_size : int or tuple of int
        Crop size ``(h, w)`` (an int means square).
    scale_range : tuple of float
        ``(min, max)`` scale factor, drawn log-uniformly.
    lsj : bool
        Scale relative to the factor that fits the whole image into ``out_size`` (large-scale
        jitter) instead of the image's own pixel size.
    hflip, vflip : float
        Probabilities of a horizontal and a vertical flip.
    rot90 : bool
        Rotate by a random multiple of 90 degrees.
    pad : bool
        Zero-pad bottom/right up to ``out_size`` when the scaled image is smaller.
    intensity_prob : float
        Probability of applying the intensity jitter (0 disables it).
    gamma_range, contrast_range : tuple of float
        Ranges (drawn log-uniformly) of the gamma exponent and the contrast factor around the mean.
    brightness_range : tuple of float
        Range of the additive brightness shift.
    noise_std_max : float
        Largest standard deviation of the added Gaussian noise.
    """

    out_size: int | tuple[int, int] = 448
    scale_range: tuple[float, float] = (0.75, 1.33)
    lsj: bool = False
    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    pad: bool = True
    intensity_prob: float = 0.8
    gamma_range: tuple[float, float] = (0.7, 1.4)
    contrast_range: tuple[float, float] = (0.75, 1.33)
    brightness_range: tuple[float, float] = (-0.08, 0.08)
    noise_std_max: float = 0.03

    def __post_init__(self) -> None:
        out_h, out_w = self.out_hw
        if out_h < 1 or out_w < 1:
            raise ValueError(f"AugmentConfig.out_size must be positive, got {self.out_size}")
        for name in ("scale_range", "gamma_range", "contrast_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"AugmentConfig.{name} must satisfy 0 < min <= max, got {(lo, hi)}")
        if self.brightness_range[0] > self.brightness_range[1]:
            raise ValueError(f"brightness_range must be (min, max), got {self.brightness_range}")
        for name in ("hflip", "vflip", "intensity_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"AugmentConfig.{name} must be a probability, got {getattr(self, name)}")
        if self.noise_std_max < 0:
            raise ValueError(f"noise_std_max must be >= 0, got {self.noise_std_max}")

    @property
    def out_hw(self) -> tuple[int, int]:
        """Crop size as ``(h, w)``."""
        if isinstance(self.out_size, (int, np.integer)):
            return int(self.out_size), int(self.out_size)
        out_h, out_w = self.out_size
        return int(out_h), int(out_w)


class Augmented(NamedTuple):
    """Result of :func:`augment`.

    Attributes
    ----------
    image : np.ndarray
        ``(h, w)`` or ``(h, w, C)`` float32.
    labels : np.ndarray
        ``(h, w)`` labels, same dtype as the input labels.
    valid_hw : tuple of int
        Size of the image content at the top-left; the rest is padding.
    """

    image: np.ndarray
    labels: np.ndarray
    valid_hw: tuple[int, int]


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)


def _resize_window(
    image: np.ndarray, labels: np.ndarray, scaled_hw: tuple[int, int], window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image``/``labels`` to ``scaled_hw`` and return the window ``(y0, x0, h, w)`` of it.

    Labels take the source pixel under each output pixel centre, ``floor((i + 0.5) * in / out)``,
    the same centre convention as bilinear ``align_corners=False``.
    """
    height, width = labels.shape
    s_h, s_w = scaled_hw
    y0, x0, h, w = window
    rows = np.minimum(((np.arange(y0, y0 + h) + 0.5) * height / s_h).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(x0, x0 + w) + 0.5) * width / s_w).astype(np.int64), width - 1)
    out_labels = labels[np.ix_(rows, cols)]
    if (s_h, s_w) == (height, width):
        return image[y0 : y0 + h, x0 : x0 + w].astype(np.float32), out_labels
    planes = image[:, :, None] if image.ndim == 2 else image
    # The whole image is resized, then cropped: resizing only a sub-window would shift the sampling
    # grid by a fraction of a pixel (the window origin rarely maps to a whole output pixel).
    tensor = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).permute(2, 0, 1)[None]
    shrink = s_h < height or s_w < width
    resized = F.interpolate(tensor, size=(s_h, s_w), mode="bilinear", align_corners=False, antialias=shrink)
    out = np.ascontiguousarray(resized[0, :, y0 : y0 + h, x0 : x0 + w].permute(1, 2, 0).numpy())
    return (out[:, :, 0] if image.ndim == 2 else out), out_labels


def _window_start(rng: np.random.Generator, size: int, scaled: int, focus: float | None) -> int:
    """Start of a window of ``size`` in ``scaled`` pixels: uniform, or among those containing ``focus``."""
    if focus is None:
        return int(rng.integers(scaled - size + 1))
    lo, hi = max(0, int(focus) - size + 1), min(int(focus), scaled - size)
    return int(rng.integers(lo, hi + 1))


def _focus_point(labels: np.ndarray, focus: int, scaled_hw: tuple[int, int],
                 rng: np.random.Generator) -> tuple[int | None, int | None]:
    """A random pixel of the scaled image whose label (as :func:`_resize_window` samples it) is ``focus``;
    ``(None, None)`` when the object is absent or vanishes at this scale."""
    ys, xs = np.nonzero(labels == focus)
    if not ys.size:
        return None, None

    def span(lo: int, hi: int, size: int, scaled: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled indices around source indices lo..hi, and the source index each one samples."""
        index = np.arange(max(int(lo * scaled / size) - 1, 0), min(int((hi + 1) * scaled / size) + 2, scaled))
        return index, np.minimum(((index + 0.5) * size / scaled).astype(np.int64), size - 1)

    rows, source_rows = span(int(ys.min()), int(ys.max()), labels.shape[0], scaled_hw[0])
    cols, source_cols = span(int(xs.min()), int(xs.max()), labels.shape[1], scaled_hw[1])
    hit_rows, hit_cols = np.nonzero(labels[np.ix_(source_rows, source_cols)] == focus)
    if not hit_rows.size:
        return None, None
    k = int(rng.integers(hit_rows.size))
    return int(rows[hit_rows[k]]), int(cols[hit_cols[k]])


def geometric_augment(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, config: AugmentConfig,
    focus: int | None = None,
) -> Augmented:
    """Rotate/flip, scale, crop (and pad) an image and its labels together.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, C)`` image (any real dtype; returned as float32).
    labels : np.ndarray
        ``(H, W)`` integer labels.
    rng : np.random.Generator
        Source of randomness.
    config : AugmentConfig
        Settings.
    focus : int, optional
        A label value: the crop window is placed so that it contains a random pixel of that object
        (small sparse objects in a large image then still appear in the crop); default: anywhere.

    Returns
    -------
    Augmented
        Transformed image, labels and the size of the valid (unpadded) region.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim not in (2, 3) or image.shape[:2] != labels.shape or labels.ndim != 2:
        raise ValueError(
            f"image must be (H, W) or (H, W, C) and labels (H, W) of the same size; got image "
            f"{image.shape} and labels {labels.shape}"
        )
    if config.rot90:
        k = int(rng.integers(4))
        image, labels = np.rot90(image, k, axes=(0, 1)), np.rot90(labels, k)
    if rng.random() < config.hflip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if rng.random() < config.vflip:
        image, labels = image[::-1], labels[::-1]
    height, width = labels.shape
    out_h, out_w = config.out_hw
    scale = _log_uniform(rng, config.scale_range)
    if config.lsj:
        scale *= min(out_h / height, out_w / width)
    s_h, s_w = max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
    h, w = min(out_h, s_h), min(out_w, s_w)
    fy, fx = _focus_point(labels, focus, (s_h, s_w), rng) if focus is not None else (None, None)
    y0 = _window_start(rng, h, s_h, fy)
    x0 = _window_start(rng, w, s_w, fx)
    crop_image, crop_labels = _resize_window(image, labels, (s_h, s_w), (y0, x0, h, w))
    if config.pad and (h, w) != (out_h, out_w):
        padded = np.zeros((out_h, out_w) + crop_image.shape[2:], dtype=np.float32)
        padded[:h, :w] = crop_image
        padded_labels = np.zeros((out_h, out_w), dtype=crop_labels.dtype)
        padded_labels[:h, :w] = crop_labels
        crop_image, crop_labels = padded, padded_labels
    return Augmented(crop_image, np.ascontiguousarray(crop_labels), (h, w))


def intensity_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random gamma, contrast, brightness and noise for a float image in [0, 1].

    Parameters
    ----------
    image : np.ndarray
        Float image with values in [0, 1] (e.g. from :func:`sine_model.preprocess.transforms.to_rgb_float`).
    rng : np.random.Generator
        Source of randomness.
    config : AugmentConfig
        Settings; with probability ``1 - intensity_prob`` the image is returned unchanged.

    Returns
    -------
    np.ndarray
        float32 image clipped to [0, 1]; all channels get the same jitter.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.size and (image.min() < -1e-6 or image.max() > 1 + 1e-6):
        raise ValueError(
            "intensity_jitter expects a float image scaled to [0, 1] (see to_rgb_float); got values "
            f"in [{image.min():.3g}, {image.max():.3g}]. Set intensity_prob=0 for other ranges."
        )
    if rng.random() >= config.intensity_prob:
        return image
    out = np.clip(image, 0.0, 1.0) ** np.float32(_log_uniform(rng, config.gamma_range))
    mean = np.float32(out.mean())
    out = (out - mean) * np.float32(_log_uniform(rng, config.contrast_range)) + mean
    out = out + np.float32(rng.uniform(*config.brightness_range))
    if config.noise_std_max > 0:
        std = np.float32(rng.uniform(0.0, config.noise_std_max))
        out = out + std * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def augment(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, config: AugmentConfig | None = None,
    focus: int | None = None,
) -> Augmented:
    """Geometric augmentation followed by the intensity jitter (see the module docstring).

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, C)``; float in [0, 1] when the intensity jitter is on.
    labels : np.ndarray
        ``(H, W)`` integer instance labels.
    rng : np.random.Generator
        Source of randomness (the result is deterministic given its state).
    config : AugmentConfig, optional
        Settings (defaults to ``AugmentConfig()``).
    focus : int, optional
        Label value the crop must contain (see :func:`geometric_augment`).

    Returns
    -------
    Augmented
        ``(image, labels, valid_hw)``; the padding (if any) is left at 0 and not jittered.
    """
    config = config or AugmentConfig()
    result = geometric_augment(image, labels, rng, config, focus)
    if config.intensity_prob <= 0:
        return result
    h, w = result.valid_hw
    jittered = result.image.copy()
    jittered[:h, :w] = intensity_jitter(result.image[:h, :w], rng, config)
    return Augmented(jittered, result.labels, result.valid_hw)
