"""Classical one-shot baselines for the evaluation harness (``bench/evaluate.py``).

Every runner has the interface of the model runner: ``fit(image, labels, classes=None)`` on one
reference, then ``predict(targets)`` yields one ``{"semantic": ..., "instance": ...}`` dict of label
maps per target (``semantic`` holds class ids, 1 for single-class references).

* :class:`RandomForestBaseline` — what ilastik, APOC and convpaint do: a random forest on per-pixel
  multiscale features (``skimage.feature.multiscale_basic_features``: Gaussian intensity, edges and
  Hessian texture at sigmas 1–16), trained on a random subset of the reference's pixels (background vs
  each class), then connected components or distance-transform watershed for instances.
* :class:`OtsuBaseline` — Otsu threshold of the target (on the channel that best separates objects from
  background in the reference, with the reference's polarity: objects brighter or darker), then the
  same instance step.

The instance step (connected components, or watershed on the distance transform with a seed spacing
proportional to the reference's typical object radius) and a minimum object size are chosen on the
reference: each candidate is applied to the reference's own true foreground and the one with the best
instance F1 against the reference labels is kept (:mod:`sine_model.postprocess.instance_split`, which the
engine's
instances from the semantic answer use too). Nothing is tuned on targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

import numpy as np
from skimage.feature import multiscale_basic_features
from skimage.filters import gaussian, threshold_otsu

from sine_model.postprocess.border_instances import inner_rim, seeded_instances
from sine_model.postprocess.instance_split import InstanceStep, choose_instance_step

__all__ = ["Runner", "Prediction", "InstanceStep", "RandomForestBaseline", "OtsuBaseline",
           "normalise_image", "choose_instance_step"]

Prediction = dict[str, np.ndarray]


class Runner(Protocol):
    """What the harness runs: fit on one labelled reference, predict label maps for targets."""

    name: str

    def fit(self, image: np.ndarray, labels: np.ndarray, classes: Mapping[int, int] | None = None) -> None:
        """Learn from one reference image and its instance labels (optional label → class map)."""

    def predict(self, targets: Iterable[np.ndarray]) -> Iterator[Prediction]:
        """Yield ``{"semantic", "instance"[, "id"]}`` label maps for each target, in order."""


def normalise_image(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """``(H, W, C)`` float32 image with each channel mapped from its percentiles to [0, 1].

    2D images get one channel, RGBA loses alpha, RGB with identical channels becomes one channel; any
    integer or float dtype (uint16 included) is accepted.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim != 3:
        raise ValueError(f"expected a 2D image or (H, W, C), got shape {array.shape}")
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.shape[-1] > 1 and all(np.array_equal(array[..., 0], array[..., c])
                                   for c in range(1, array.shape[-1])):
        array = array[..., :1]
    low, high = np.percentile(array, percentiles, axis=(0, 1))
    return np.clip((array - low) / np.maximum(high - low, 1e-6), -0.5, 1.5).astype(np.float32)


def _class_map(labels: np.ndarray, classes: Mapping[int, int] | None) -> np.ndarray:
    """Semantic image (class ids) of an instance label image; all objects are class 1 by default."""
    if classes is None:
        return (labels > 0).astype(np.int64)
    lut = np.zeros(int(labels.max()) + 1, np.int64)
    for value, cls in classes.items():
        if 0 < int(value) < len(lut):
            lut[int(value)] = int(cls)
    return lut[labels]


def _instances_per_class(semantic: np.ndarray, steps: Mapping[int, InstanceStep]) -> np.ndarray:
    instance = np.zeros(semantic.shape, np.uint32)
    offset = 0
    for cls, step in steps.items():
        part = step.apply(semantic == cls)
        instance[part > 0] = part[part > 0] + offset
        offset += int(part.max())
    return instance


class RandomForestBaseline:
    """Random-forest pixel classifier on multiscale features (ilastik / APOC / convpaint style).

    Parameters
    ----------
    n_pixels : int
        Training pixels drawn at random from the reference (class proportions kept, but at least
        ``n_pixels // 10`` from each class when available).
    n_estimators, max_depth : int
        Forest size.
    sigma_max : float
        Largest feature scale.
    seed : int
        Seed of the pixel sampling and the forest.
    n_jobs : int
        Parallel jobs of the forest (-1: all cores).
    border : bool
        Also learn an object-border class (the objects' inner rim, about 1/8 of their radius thick),
        the usual ilastik trick for touching objects: border-free object pixels become watershed seeds
        and the border pixels are split between them. Without it, instances come from the
        reference-chosen :class:`InstanceStep` on the foreground.
    """

    def __init__(self, n_pixels: int = 20000, n_estimators: int = 32, max_depth: int | None = 16,
                 sigma_max: float = 16.0, seed: int = 0, n_jobs: int = -1, border: bool = False) -> None:
        self.n_pixels, self.n_estimators, self.max_depth = n_pixels, n_estimators, max_depth
        self.sigma_max, self.seed, self.n_jobs, self.border = sigma_max, seed, n_jobs, border
        self.name = "random forest + border" if border else "random forest"
        self._forest = None
        self._steps: dict[int, InstanceStep] = {}
        self._border_class: int | None = None
        self._channels = 1

    def _features(self, image: np.ndarray) -> np.ndarray:
        norm = normalise_image(image)
        if norm.shape[-1] != self._channels:  # reference and target channel counts differ
            norm = np.repeat(norm.mean(-1, keepdims=True), self._channels, axis=-1)
        return multiscale_basic_features(norm, channel_axis=-1, sigma_min=1.0, sigma_max=self.sigma_max)

    def fit(self, image: np.ndarray, labels: np.ndarray, classes: Mapping[int, int] | None = None) -> None:
        """Train the forest on the reference's pixels and choose the instance step per class."""
        from sklearn.ensemble import RandomForestClassifier

        labels = np.asarray(labels)
        self._channels = normalise_image(image).shape[-1]
        semantic = _class_map(labels, classes)
        features = self._features(image)
        target = semantic.ravel()
        self._steps = {int(c): choose_instance_step(np.where(semantic == c, labels, 0))
                       for c in np.unique(semantic) if c != 0}
        self._border_class = None
        if self.border and self._steps:
            self._border_class = int(semantic.max()) + 1
            target = np.where(inner_rim(labels).ravel(), self._border_class, target)
        rng = np.random.default_rng(self.seed)
        picks = []
        for cls in np.unique(target):
            where = np.flatnonzero(target == cls)
            share = max(int(self.n_pixels * len(where) / target.size), self.n_pixels // 10)
            picks.append(rng.choice(where, size=min(share, len(where)), replace=False))
        picks = np.concatenate(picks)
        forest = RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                        n_jobs=self.n_jobs, random_state=self.seed)
        forest.fit(features.reshape(target.size, -1)[picks], target[picks])
        self._forest = forest

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel class probabilities ``(H, W, n_classes)`` (class order of ``forest.classes_``)."""
        if self._forest is None:
            raise RuntimeError("call fit() before predict()")
        features = self._features(image)
        shape = features.shape[:2]
        proba = self._forest.predict_proba(features.reshape(-1, features.shape[-1]))
        return proba.reshape(*shape, -1)

    def predict(self, targets: Iterable[np.ndarray]) -> Iterator[Prediction]:
        """Yield semantic (argmax class) and instance maps for each target."""
        for image in targets:
            proba = self.predict_proba(image)
            classes = np.asarray(self._forest.classes_)
            if self._border_class is None:
                semantic = classes[proba.argmax(-1)].astype(np.uint16)
                yield {"semantic": semantic, "instance": _instances_per_class(semantic, self._steps)}
                continue
            objects = np.flatnonzero((classes != 0) & (classes != self._border_class))
            best = proba.argmax(-1)
            foreground = classes[best] != 0
            semantic = np.where(foreground, classes[objects][proba[..., objects].argmax(-1)], 0)
            instance = np.zeros(semantic.shape, np.uint32)
            for k in objects:
                cls = int(classes[k])
                part = seeded_instances(semantic == cls, classes[best] == cls, proba[..., k],
                                         self._steps[cls].min_size)
                instance[part > 0] = part[part > 0] + instance.max()
            yield {"semantic": semantic.astype(np.uint16), "instance": instance}


class OtsuBaseline:
    """Otsu threshold with the reference's polarity and best channel, then the chosen instance step.

    Parameters
    ----------
    smooth : float
        Gaussian sigma applied before thresholding (0: none).
    """

    name = "otsu + watershed"

    def __init__(self, smooth: float = 1.0) -> None:
        self.smooth = smooth
        self.channel = 0
        self.brighter = True
        self.step = InstanceStep()

    def _channels(self, image: np.ndarray) -> np.ndarray:
        norm = normalise_image(image)
        if self.smooth > 0:
            norm = gaussian(norm, sigma=self.smooth, channel_axis=-1, preserve_range=True)
        return np.concatenate([norm, norm.mean(-1, keepdims=True)], axis=-1) if norm.shape[-1] > 1 else norm

    def fit(self, image: np.ndarray, labels: np.ndarray, classes: Mapping[int, int] | None = None) -> None:
        """Choose the channel (or channel mean) and polarity that best separate objects in the reference.

        ``classes`` is accepted for interface compatibility; all objects are treated as one class.
        """
        labels = np.asarray(labels)
        channels = self._channels(image)
        fg = labels > 0
        best = -1.0
        for c in range(channels.shape[-1]):
            values = channels[..., c]
            inside = values[fg].mean() if fg.any() else 0.0
            outside = values[~fg].mean() if (~fg).any() else 0.0
            separation = abs(inside - outside) / (values.std() + 1e-6)
            if separation > best:
                best, self.channel, self.brighter = separation, c, bool(inside >= outside)
        self.step = choose_instance_step(labels)

    def predict(self, targets: Iterable[np.ndarray]) -> Iterator[Prediction]:
        """Threshold each target at its own Otsu level and split the foreground into instances."""
        for image in targets:
            channels = self._channels(image)
            values = channels[..., min(self.channel, channels.shape[-1] - 1)]
            level = threshold_otsu(values) if values.max() > values.min() else values.max()
            mask = values > level if self.brighter else values < level
            yield {"semantic": mask.astype(np.uint16), "instance": self.step.apply(mask)}
