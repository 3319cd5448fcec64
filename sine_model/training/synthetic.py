"""Procedural microscopy-like scenes with several object classes per image.

Every scene mixes objects of ``n`` classes that differ in shape (round, elongated, irregular blobs,
rings), size, texture and brightness, on an uneven background, blurred and noisy. Because every image
holds several kinds of objects, a model trained on these scenes must read the reference to know which
objects are meant.

A :class:`ClassStyle` (module ``synthetic_styles``) describes one class. The same styles can be
reused for many scenes (:func:`make_group`): such a group of images shares its classes, which is
what cross-image training pairs need. Class ids are ``1..n`` in the order of the styles; instance
ids are ``1..N`` in painting order, which is shuffled across classes, so an id says nothing about a
class.

Rendering is per object, inside the object's bounding box; a 256 x 256 scene takes a few tens of
milliseconds or less.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage

from sine_model.training.synthetic_styles import ClassStyle, as_generator, random_class_styles

__all__ = [
    "ClassStyle",
    "Scene",
    "SceneConfig",
    "make_group",
    "make_scene",
    "random_class_styles",
    "synthetic_groups",
]

@dataclass(frozen=True)
class SceneConfig:
    """Settings of :func:`make_scene`. Ranges ``(lo, hi)`` are drawn uniformly per scene.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image.
    n_classes : int
        Number of object classes (styles drawn by :func:`random_class_styles`).
    objects_per_class : tuple of int
        ``(min, max)`` objects attempted per class.
    radius_range : tuple of float
        Range of the class base radii (pixels) when styles are drawn.
    touching : float
        Probability that an object is placed against an existing one.
    max_overlap : float
        Largest fraction of a new object allowed to fall on existing objects (that part is hidden).
    min_area : int
        Objects with fewer visible pixels are not kept.
    background : tuple of float
        Background level range.
    background_variation : float
        Amplitude of the smooth uneven background (gradient plus low-frequency blobs).
    blur_sigma : tuple of float
        Gaussian blur (optics) sigma range in pixels.
    photons : tuple of float or None
        Photon count at intensity 1 for Poisson (shot) noise; None disables it.
    noise_std : tuple of float
        Additive Gaussian (read) noise standard deviation range.
    second_channel : bool
        Add a second channel; each class appears there with its own ``channel2`` weight.
    dtype : {'float32', 'uint16'}
        Output type: float32 (about 0-1.5) or uint16 scaled like a 12-bit camera.
    seed : int or None
        Seed used when :func:`make_scene` gets no generator.
    """

    shape: tuple[int, int] = (256, 256)
    n_classes: int = 3
    objects_per_class: tuple[int, int] = (3, 12)
    radius_range: tuple[float, float] = (3.0, 16.0)
    touching: float = 0.3
    max_overlap: float = 0.15
    min_area: int = 6
    background: tuple[float, float] = (0.02, 0.15)
    background_variation: float = 0.08
    blur_sigma: tuple[float, float] = (0.4, 1.5)
    photons: tuple[float, float] | None = (30.0, 400.0)
    noise_std: tuple[float, float] = (0.0, 0.03)
    second_channel: bool = False
    dtype: Literal["float32", "uint16"] = "float32"
    seed: int | None = None

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 8:
            raise ValueError(f"SceneConfig.shape must be (H, W) with both >= 8, got {self.shape}")
        if self.n_classes < 1:
            raise ValueError(f"SceneConfig.n_classes must be >= 1, got {self.n_classes}")
        lo, hi = self.objects_per_class
        if not 0 <= lo <= hi:
            raise ValueError(f"objects_per_class must be 0 <= min <= max, got {self.objects_per_class}")
        if not 0 < self.radius_range[0] <= self.radius_range[1]:
            raise ValueError(f"radius_range must be 0 < min <= max, got {self.radius_range}")
        if self.dtype not in ("float32", "uint16"):
            raise ValueError(f"SceneConfig.dtype must be 'float32' or 'uint16', got {self.dtype!r}")
        if not 0 <= self.max_overlap < 1:
            raise ValueError(f"max_overlap must be in [0, 1), got {self.max_overlap}")


class Scene(NamedTuple):
    """A synthetic image with its annotation (unpacks as ``image, labels, class_of``).

    Attributes
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, 2)`` float32 or uint16.
    labels : np.ndarray
        ``(H, W)`` int32 instance labels, 0 = background.
    class_of : dict of int to int
        Class id (``1..n_classes``) of every instance id present in ``labels``.
    """

    image: np.ndarray
    labels: np.ndarray
    class_of: dict[int, int]


@dataclass
class _Canvas:
    """Mutable state of a scene being painted."""

    labels: np.ndarray
    signal: np.ndarray
    signal2: np.ndarray
    fine: np.ndarray
    spots: np.ndarray
    placed: list[tuple[float, float, float]] = field(default_factory=list)  # (cy, cx, radius)


def _object_footprint(
    rng: np.random.Generator, style: ClassStyle, radius: float, shape_hw: tuple[int, int], center: tuple
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Mask and intensity profile of one object inside its (clipped) bounding box."""
    aspect = rng.uniform(*style.aspect)
    major, minor = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    harmonics = np.arange(2, 6)
    amps = style.irregularity * rng.uniform(0.3, 1.0, harmonics.size) / np.sqrt(harmonics - 1)
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    half = int(np.ceil(major * (1 + amps.sum()))) + 1
    cy, cx = center
    y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, shape_hw[0])
    x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, shape_hw[1])
    if y1 <= y0 or x1 <= x0:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    theta = rng.uniform(0, np.pi)
    cos_t, sin_t = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = (dx * cos_t + dy * sin_t) / np.float32(major)
    v = (dy * cos_t - dx * sin_t) / np.float32(minor)
    rho = np.sqrt(u * u + v * v)
    # Boundary r(phi) = 1 + sum_k a_k cos(k phi + p_k), with cos(k phi + p) = Re(z^k e^{ip}), z = e^{i phi}.
    z = (u + np.complex64(1j) * v) / np.maximum(rho, np.float32(1e-6))
    coeffs = (amps * np.exp(1j * phases)).astype(np.complex64)
    bound = np.ones_like(rho)
    zk = z
    for k in range(2, int(harmonics[-1]) + 1):
        zk = zk * z
        bound += (coeffs[k - 2] * zk).real
    t = rho / np.maximum(bound, np.float32(0.2))
    mask = t < 1.0
    if style.kind == "ring":
        profile = np.where(t > 1.0 - style.ring_width, 1.0, 0.2)
    elif style.texture == "smooth":
        profile = 1.0 - style.texture_strength * t * t
    else:
        profile = np.ones_like(t)
    return (slice(y0, y1), slice(x0, x1)), mask, profile.astype(np.float32)


def _place_object(
    rng: np.random.Generator, canvas: _Canvas, style: ClassStyle, config: SceneConfig, label: int
) -> bool:
    """Try a few positions for one object; paint it where it fits. Returns whether it was painted."""
    height, width = canvas.labels.shape
    for _ in range(8):
        radius = rng.uniform(*style.radius)
        if canvas.placed and rng.random() < config.touching:
            oy, ox, orad = canvas.placed[int(rng.integers(len(canvas.placed)))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = (orad + radius) * rng.uniform(0.85, 1.0)
            center = (oy + dist * np.sin(angle), ox + dist * np.cos(angle))
        else:
            center = (rng.uniform(0, height), rng.uniform(0, width))
        footprint = _object_footprint(rng, style, radius, (height, width), center)
        if footprint is None:
            continue
        box, mask, profile = footprint
        area = int(mask.sum())
        if area == 0:
            continue
        free = canvas.labels[box] == 0
        visible = mask & free
        if area - int(visible.sum()) > config.max_overlap * area or visible.sum() < config.min_area:
            continue
        brightness = style.intensity * max(1.0 + style.intensity_jitter * rng.standard_normal(), 0.2)
        if style.texture == "granular":
            profile = profile * (1.0 + style.texture_strength * canvas.fine[box])
        elif style.texture == "spotted":
            strength = style.texture_strength
            profile = profile * (1.0 - 0.5 * strength + strength * canvas.spots[box])
        values = brightness * np.clip(profile, 0.05, None)
        canvas.labels[box][visible] = label
        canvas.signal[box][visible] += values[visible]
        canvas.signal2[box][visible] += style.channel2 * values[visible]
        canvas.placed.append((float(center[0]), float(center[1]), float(radius)))
        return True
    return False


def _background(rng: np.random.Generator, config: SceneConfig) -> np.ndarray:
    """Level + linear gradient + a few low-frequency waves, float32 (H, W)."""
    height, width = config.shape
    yy = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    out = np.float32(0.6 * np.sin(angle)) * yy + np.float32(0.6 * np.cos(angle)) * xx
    for _ in range(3):
        fy, fx, phase = (rng.uniform(-2.5, 2.5, 3) * 2 * np.pi).astype(np.float32)
        out = out + np.float32(0.15) * np.cos(fy * yy + fx * xx + phase)
    out = rng.uniform(*config.background) + config.background_variation * out
    return np.clip(out, 0.0, None).astype(np.float32)


def _finish_channel(rng: np.random.Generator, signal: np.ndarray, config: SceneConfig, blur: float,
                    photons: float | None, noise: float) -> np.ndarray:
    """Background, blur, shot noise and read noise for one channel.

    Shot noise uses the Gaussian approximation of the Poisson law (variance = mean / photons), drawn
    together with the read noise in one float32 normal draw.
    """
    image = ndimage.gaussian_filter(signal + _background(rng, config), blur)
    variance = np.full_like(image, noise * noise)
    if photons is not None:
        variance += np.clip(image, 0.0, None) / np.float32(photons)
    image += np.sqrt(variance) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0.0, None).astype(np.float32, copy=False)


def make_scene(
    rng: np.random.Generator | int | None,
    config: SceneConfig | None = None,
    styles: list[ClassStyle] | None = None,
) -> Scene:
    """Paint one synthetic scene.

    Parameters
    ----------
    rng : np.random.Generator, int or None
        Random generator or seed; None uses ``config.seed``.
    config : SceneConfig, optional
        Scene settings (defaults to ``SceneConfig()``).
    styles : list of ClassStyle, optional
        Class styles to reuse (their number overrides ``config.n_classes``); drawn when None.

    Returns
    -------
    Scene
        ``(image, labels, class_of)``; see :class:`Scene`. A scene can hold no objects when none fit
        (e.g. a tiny image); the caller decides whether that is an error.
    """
    config = config or SceneConfig()
    rng = as_generator(rng, config.seed)
    if styles is None:
        styles = random_class_styles(rng, config.n_classes, config.radius_range)
    if not styles:
        raise ValueError("styles must hold at least one ClassStyle")
    height, width = config.shape
    fine = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 0.8)
    fine /= max(float(fine.std()), 1e-6)
    spots = np.zeros((height, width), np.float32)
    if any(s.texture == "spotted" for s in styles):
        seeds = (rng.random((height, width)) < 0.02).astype(np.float32)
        spots = ndimage.gaussian_filter(seeds, 1.2)
        spots /= max(float(spots.max()), 1e-6)
    canvas = _Canvas(
        labels=np.zeros((height, width), np.int32),
        signal=np.zeros((height, width), np.float32),
        signal2=np.zeros((height, width), np.float32),
        fine=fine,
        spots=spots,
    )
    lo, hi = config.objects_per_class
    order = np.concatenate(
        [np.full(int(rng.integers(lo, hi + 1)), k, dtype=np.int64) for k in range(len(styles))]
    )
    class_of: dict[int, int] = {}
    for k in rng.permutation(order):
        label = len(class_of) + 1
        if _place_object(rng, canvas, styles[int(k)], config, label):
            class_of[label] = int(k) + 1
    blur = rng.uniform(*config.blur_sigma)
    photons = None if config.photons is None else float(np.exp(rng.uniform(*np.log(config.photons))))
    noise = rng.uniform(*config.noise_std)
    channels = [_finish_channel(rng, canvas.signal, config, blur, photons, noise)]
    if config.second_channel:
        channels.append(_finish_channel(rng, canvas.signal2, config, blur, photons, noise))
    image = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
    if config.dtype == "uint16":
        image = np.clip(np.round(image * 3000.0), 0, 65535).astype(np.uint16)
    return Scene(image=image, labels=canvas.labels, class_of=class_of)


def make_group(
    rng: np.random.Generator | int | None,
    config: SceneConfig | None = None,
    n_images: int = 4,
    styles: list[ClassStyle] | None = None,
) -> list[Scene]:
    """Paint ``n_images`` scenes that share their class styles (one "kind" of image).

    Parameters
    ----------
    rng : np.random.Generator, int or None
        Random generator or seed; None uses ``config.seed``.
    config : SceneConfig, optional
        Scene settings.
    n_images : int, optional
        Number of scenes.
    styles : list of ClassStyle, optional
        Shared styles; drawn once when None.

    Returns
    -------
    list of Scene
        Scenes whose class ``k`` looks alike in every image.
    """
    config = config or SceneConfig()
    rng = as_generator(rng, config.seed)
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if styles is None:
        styles = random_class_styles(rng, config.n_classes, config.radius_range)
    return [make_scene(rng, config, styles) for _ in range(n_images)]


def synthetic_groups(
    rng: np.random.Generator | int | None,
    config: SceneConfig | None = None,
    n_groups: int = 4,
    images_per_group: int = 4,
) -> list[list[Scene]]:
    """Groups of scenes, each group with its own class styles (input for the pair sampler).

    Parameters
    ----------
    rng : np.random.Generator, int or None
        Random generator or seed; None uses ``config.seed``.
    config : SceneConfig, optional
        Scene settings.
    n_groups, images_per_group : int, optional
        Number of groups and scenes per group.

    Returns
    -------
    list of list of Scene
        ``n_groups`` lists of ``images_per_group`` scenes.
    """
    config = config or SceneConfig()
    rng = as_generator(rng, config.seed)
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    return [make_group(rng, config, images_per_group) for _ in range(n_groups)]
