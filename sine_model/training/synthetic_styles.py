"""Class styles of the synthetic scenes: how the objects of one class look.

A :class:`ClassStyle` fixes a shape family, a size range, a brightness and a texture. Reusing the
same styles for several scenes gives a group of images with the same object classes
(:func:`sine_model.training.synthetic.make_group`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ShapeKind = Literal["round", "elongated", "irregular", "ring"]
Texture = Literal["smooth", "granular", "spotted"]

SHAPE_KINDS: tuple[str, ...] = ("round", "elongated", "irregular", "ring")
TEXTURES: tuple[str, ...] = ("smooth", "granular", "spotted")

#: Aspect-ratio (major / minor axis) range of each shape kind.
_ASPECTS: dict[str, tuple[float, float]] = {
    "round": (1.0, 1.3),
    "elongated": (2.2, 4.0),
    "irregular": (1.0, 1.6),
    "ring": (1.0, 1.25),
}
#: Amplitude of the boundary harmonics of each shape kind.
_IRREGULARITY: dict[str, float] = {"round": 0.04, "elongated": 0.04, "irregular": 0.35, "ring": 0.03}


@dataclass(frozen=True)
class ClassStyle:
    """Appearance of one object class.

    Parameters
    ----------
    kind : {'round', 'elongated', 'irregular', 'ring'}
        Shape family. A ring is a filled object with a bright rim and a dim interior.
    radius : tuple of float
        ``(min, max)`` equivalent radius in pixels; each object draws uniformly from it.
    aspect : tuple of float
        ``(min, max)`` ratio of major to minor axis.
    intensity : float
        Mean brightness above the background (scene units, about 0-1).
    intensity_jitter : float, optional
        Relative per-object brightness spread (standard deviation).
    texture : {'smooth', 'granular', 'spotted'}, optional
        ``'smooth'``: a dome, brighter at the centre; ``'granular'``: fine-grained noise;
        ``'spotted'``: a few bright spots.
    texture_strength : float, optional
        How strongly the texture modulates the brightness, in [0, 1].
    irregularity : float, optional
        Amplitude of the random boundary harmonics (0 = perfect ellipse).
    ring_width : float, optional
        Rim thickness as a fraction of the radius (rings only).
    channel2 : float, optional
        Relative brightness in the optional second channel.
    """

    kind: ShapeKind
    radius: tuple[float, float]
    aspect: tuple[float, float]
    intensity: float
    intensity_jitter: float = 0.12
    texture: Texture = "smooth"
    texture_strength: float = 0.3
    irregularity: float = 0.04
    ring_width: float = 0.3
    channel2: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            raise ValueError(f"ClassStyle.kind must be one of {SHAPE_KINDS}, got {self.kind!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"ClassStyle.texture must be one of {TEXTURES}, got {self.texture!r}")
        if not 0 < self.radius[0] <= self.radius[1]:
            raise ValueError(f"ClassStyle.radius must be 0 < min <= max, got {self.radius}")
        if not 1 <= self.aspect[0] <= self.aspect[1]:
            raise ValueError(f"ClassStyle.aspect must be 1 <= min <= max, got {self.aspect}")
        if not 0 < self.ring_width <= 1:
            raise ValueError(f"ClassStyle.ring_width must be in (0, 1], got {self.ring_width}")


def as_generator(rng: np.random.Generator | int | None, seed: int | None = None) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, else a new one seeded with ``rng`` (or ``seed`` if None)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(seed if rng is None else rng)


def random_class_styles(
    rng: np.random.Generator | int | None,
    n_classes: int,
    radius_range: tuple[float, float] = (3.0, 16.0),
) -> list[ClassStyle]:
    """Draw ``n_classes`` clearly different class styles.

    Shapes cycle through the four kinds in random order; brightness and base radius are spread over
    their ranges (evenly spaced, shuffled, jittered), so classes differ in several statistics.

    Parameters
    ----------
    rng : np.random.Generator, int or None
        Random generator or seed.
    n_classes : int
        Number of styles.
    radius_range : tuple of float, optional
        Range of the base radii in pixels.

    Returns
    -------
    list of ClassStyle
        One style per class; class id ``k + 1`` is ``styles[k]``.
    """
    rng = as_generator(rng)
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    kinds = [SHAPE_KINDS[i] for i in rng.permutation(len(SHAPE_KINDS))]
    kinds = [kinds[k % len(kinds)] for k in range(n_classes)]
    levels = np.linspace(0.25, 0.95, n_classes) if n_classes > 1 else np.array([rng.uniform(0.3, 0.9)])
    levels = rng.permutation(levels) + rng.uniform(-0.04, 0.04, n_classes)
    log_lo, log_hi = np.log(radius_range[0]), np.log(radius_range[1])
    sizes = np.exp(np.linspace(log_lo, log_hi, n_classes)) if n_classes > 1 else np.exp(
        rng.uniform(log_lo, log_hi, 1)
    )
    sizes = rng.permutation(sizes)
    styles = []
    for k in range(n_classes):
        base = float(sizes[k]) * rng.uniform(0.9, 1.1)
        if kinds[k] == "ring":
            base = max(base, 5.0)  # a rim needs room
        styles.append(
            ClassStyle(
                kind=kinds[k],  # type: ignore[arg-type]
                radius=(base * 0.8, base * 1.2),
                aspect=_ASPECTS[kinds[k]],
                intensity=float(np.clip(levels[k], 0.15, 1.0)),
                intensity_jitter=float(rng.uniform(0.05, 0.15)),
                texture=TEXTURES[int(rng.integers(len(TEXTURES)))],  # type: ignore[arg-type]
                texture_strength=float(rng.uniform(0.2, 0.6)),
                irregularity=_IRREGULARITY[kinds[k]] * float(rng.uniform(0.8, 1.2)),
                ring_width=float(rng.uniform(0.25, 0.4)),
                channel2=float(rng.uniform(0.0, 1.0)),
            )
        )
    return styles
