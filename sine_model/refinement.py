"""Full-resolution refinement of the semantic answer, fitted on the references at test time.

SINE's masks live on a grid of a quarter of the model input's patches (the embedded model: one mask cell
per 3.5 input pixels at input side 224, more on larger images), so boundaries are blurred and objects
separated by a few pixels — cells between EM membranes, touching nuclei — merge. :class:`PixelRefiner`
decides each pixel again at the target's own resolution from two kinds of evidence: the model's
stitched per-class map (upsampled, what SINE learned from the references) and fixed multiscale pixel
features of the image (:class:`~sine_model.filter_bank.FilterBank`: smoothing, edges, Laplacian,
Hessian and structure-tensor eigenvalues at σ 0.7–16). A small per-pixel MLP maps them to background,
each reference class and an object-border class (the objects' inner rim, as ilastik users label it for
touching objects). Border-free object pixels seed a watershed that shares the border pixels out, so
touching objects come apart.

:func:`fit_refiner` trains the MLP on the references' own pixels for a bounded time. Its coarse input
there is the model's answer on each reference half predicted from the other half
(:func:`~sine_model.calibration.reference_folds`), or on the whole reference from itself when no
reference has objects in both halves: a held-out answer teaches the MLP how far the model's map can be
trusted on images it has not seen. A model adapted to the whole references has seen both halves, so
after adaptation the halves are predicted by the cross-fitted models of
:func:`~sine_model.training.adapt.adapt_propagator` (``cross_fit``, ``fold_models`` here), each adapted
without the half it predicts. Nothing is tuned on targets.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from skimage.feature import multiscale_basic_features
from torch import Tensor, nn

from .border_instances import RefinedMaps, inner_rim, seeded_instances
from .calibration import reference_folds
from .filter_bank import FilterBank
from .inputs import check_reference_pairs
from .transforms import IMAGENET_MEAN, IMAGENET_STD, to_rgb_float

__all__ = ["REFINER_SIGMAS", "STRIP_PIXELS", "PixelRefiner", "RefinedMaps", "RefinerFit", "fit_refiner",
           "inner_rim", "seeded_instances"]

#: Scales (pixels) of the refiner's filter-bank features: ilastik's range, up to 16.
REFINER_SIGMAS: tuple[float, ...] = (0.7, 1.6, 3.5, 5.0, 8.0, 16.0)
#: Scales of the per-channel basic features (``basic_channels``): 1 to 16 in octaves, the forest
#: baseline's (scikit-image's default spacing for that range), as in ilastik.
BASIC_SIGMAS: tuple[float, float] = (1.0, 16.0)
BASIC_NUM_SIGMA = 5
#: Basic features per channel and scale: intensity, edges, two Hessian eigenvalues.
BASIC_PER_SCALE = 4
#: Percentiles of each channel mapped to 0 and 1 before the filter bank (per image).
STRETCH_PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: Pixels per strip when an image's features are computed piecewise (bounds memory on large targets:
#: about 256 MB of features per strip, about 500 MB with colour features).
STRIP_PIXELS = 1 << 20
#: Rows of context added above and below each strip (a multiple of 16; from 96 on, strips give the
#: whole image's features to float precision: the largest scale is smoothed twice).
STRIP_MARGIN = 96


class PixelRefiner(nn.Module):
    """Per-pixel MLP on filter-bank features and the model's class maps: background, classes, border.

    Parameters
    ----------
    class_ids : sequence of int
        The reference classes, in the order of the model's semantic channels.
    sigmas : sequence of float
        Filter-bank scales in pixels.
    hidden : int
        Width of the MLP's two hidden layers.
    use_model_maps : bool
        Feed the model's class maps to the MLP (False: the image features alone, a plain pixel
        classifier; for measuring what the model adds).
    basic_channels : int
        Also feed scikit-image's ``multiscale_basic_features`` (intensity, edges and Hessian
        eigenvalues at σ :data:`BASIC_SIGMAS`, 4 per scale) of each of this many channels: 3 (the
        stretched RGB channels: texture of each stain, which the grey filter bank does not see), 1 (their
        mean, for grey images) or 0 (none).
    """

    def __init__(self, class_ids: Sequence[int], sigmas: Sequence[float] = REFINER_SIGMAS,
                 hidden: int = 32, use_model_maps: bool = True, basic_channels: int = 0) -> None:
        super().__init__()
        self.class_ids = tuple(int(c) for c in class_ids)
        if not self.class_ids:
            raise ValueError("PixelRefiner needs at least one class")
        if basic_channels not in (0, 1, 3):
            raise ValueError(f"basic_channels must be 0, 1 or 3, got {basic_channels}")
        self.bank = FilterBank(sigmas, colour=True, include_raw=True)
        self.use_model_maps = bool(use_model_maps)
        self.basic_channels = int(basic_channels)
        n_basic = self.basic_channels * BASIC_PER_SCALE * BASIC_NUM_SIGMA
        n_in = self.bank.num_features + n_basic + (len(self.class_ids) if use_model_maps else 0)
        self.num_outputs = len(self.class_ids) + 2  # background, the classes, border
        self.register_buffer("shift", torch.zeros(n_in))
        self.register_buffer("spread", torch.ones(n_in))
        self.head = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                  nn.Linear(hidden, self.num_outputs))

    @property
    def num_inputs(self) -> int:
        """Features per pixel: the filter bank's plus one coarse map per class."""
        return int(self.shift.numel())

    def _bank(self, rgb: np.ndarray) -> Tensor:
        mean = np.asarray(IMAGENET_MEAN, np.float32)
        std = np.asarray(IMAGENET_STD, np.float32)
        x = torch.from_numpy(((np.asarray(rgb, np.float32) - mean) / std).transpose(2, 0, 1).copy())
        with torch.no_grad():
            return self.bank(x[None])[0]

    def _basic(self, rgb: np.ndarray) -> Tensor:
        channels = rgb if self.basic_channels == 3 else rgb.mean(-1, keepdims=True)
        basic = multiscale_basic_features(channels, channel_axis=-1, sigma_min=BASIC_SIGMAS[0],
                                          sigma_max=BASIC_SIGMAS[1], num_sigma=BASIC_NUM_SIGMA)
        return torch.from_numpy(np.ascontiguousarray(basic.transpose(2, 0, 1), dtype=np.float32))

    @staticmethod
    def stretch(rgb: np.ndarray) -> np.ndarray:
        """Each channel mapped from its :data:`STRETCH_PERCENTILES` to [0, 1] (clipped to [-0.5, 1.5]).

        Images of one kind differ in brightness and stain strength; a per-image stretch makes the
        pixel features comparable between the references and the targets.
        """
        rgb = np.asarray(rgb, np.float32)
        low, high = np.percentile(rgb[::2, ::2], STRETCH_PERCENTILES, axis=(0, 1))
        return np.clip((rgb - low) / np.maximum(high - low, 1e-6), -0.5, 1.5).astype(np.float32)

    def strips(self, rgb: np.ndarray, coarse: np.ndarray) -> Iterator[tuple[slice, Tensor]]:
        """``(rows, (n_pixels, num_inputs) features)`` of horizontal strips of the image.

        ``rgb`` is ``(H, W, 3)`` float in [0, 1] (as :func:`~sine_model.transforms.to_rgb_float` gives),
        stretched per channel first (:meth:`stretch`); ``coarse`` the model's ``(C, H, W)`` class maps.
        Each strip is filtered with :data:`STRIP_MARGIN` rows of context.
        """
        height = rgb.shape[0]
        rgb = self.stretch(rgb)
        if coarse.shape != (len(self.class_ids), *rgb.shape[:2]):
            raise ValueError(f"coarse maps {coarse.shape} do not match {len(self.class_ids)} classes and "
                             f"the image's {rgb.shape[:2]}")
        # strips start at multiples of 16 rows, so the filter bank's pyramid levels (down to 1/16) see
        # the same pixel blocks as on the whole image
        strip_rows = max(16, STRIP_PIXELS // max(1, rgb.shape[1]) // 16 * 16)
        for top in range(0, height, strip_rows):
            rows = slice(top, min(height, top + strip_rows))
            lo, hi = max(0, top - STRIP_MARGIN), min(height, rows.stop + STRIP_MARGIN)
            bank = self._bank(rgb[lo:hi])[:, rows.start - lo: rows.stop - lo]
            if self.basic_channels:
                bank = torch.cat([bank, self._basic(rgb[lo:hi])[:, rows.start - lo: rows.stop - lo]])
            if self.use_model_maps:
                maps = torch.from_numpy(np.ascontiguousarray(coarse[:, rows], dtype=np.float32))
                bank = torch.cat([bank, maps])
            yield rows, bank.flatten(1).T

    def forward(self, features: Tensor) -> Tensor:
        """``(N, num_inputs)`` features → ``(N, num_outputs)`` logits (background, classes, border)."""
        return self.head((features - self.shift) / self.spread)

    def refine(self, rgb: np.ndarray, coarse: np.ndarray) -> RefinedMaps:
        """The refined class maps of one image (see :class:`RefinedMaps`), inputs as for :meth:`strips`."""
        height, width = rgb.shape[:2]
        probs = np.zeros((self.num_outputs, height, width), np.float32)
        with torch.no_grad():
            for rows, features in self.strips(rgb, coarse):
                out = self(features).softmax(-1).T.reshape(self.num_outputs, rows.stop - rows.start, width)
                probs[:, rows] = out.numpy()
        n = len(self.class_ids)
        classes, background, border = probs[1:1 + n], probs[0], probs[-1]
        best = classes.argmax(0)
        # the border share goes to the most likely class: it belongs to an object either way
        class_probs = classes.copy()
        top = np.take_along_axis(classes, best[None], 0)[0]
        np.put_along_axis(class_probs, best[None], (top + border)[None], 0)
        foreground = background < 1.0 - background  # object (any class or border) more likely than not
        lut = np.asarray(self.class_ids, np.int64)
        label_map = np.where(foreground, lut[best], 0)
        seeds = foreground & (border < top)
        return RefinedMaps(class_probs, label_map, seeds)


@dataclass
class RefinerFit:
    """What :func:`fit_refiner` did: optimiser steps, seconds, final loss, training pixels, folds."""

    steps: int
    seconds: float
    loss: float
    pixels: int
    held_out: bool


def _targets(labels: np.ndarray, class_of: Mapping[int, int], class_ids: Sequence[int]) -> np.ndarray:
    """Per-pixel training target: 0 background, 1..C the classes (in ``class_ids`` order), C+1 border."""
    lut = np.zeros(int(labels.max()) + 1, np.int64)
    index = {c: k + 1 for k, c in enumerate(class_ids)}
    for value, cls in class_of.items():
        if 0 < value < len(lut):
            lut[value] = index[cls]
    target = lut[labels]
    target[inner_rim(labels)] = len(class_ids) + 1
    return target


def _sample(target: Tensor, limit: int, generator: torch.Generator) -> Tensor:
    """Indices of at most ``limit`` pixels, an equal share per class (classes with fewer keep all)."""
    if len(target) <= limit:
        return torch.arange(len(target))
    classes, counts = torch.unique(target, return_counts=True)
    picks: list[Tensor] = []
    for n, k in enumerate(classes[counts.argsort()].tolist()):  # smallest first: leftovers go to larger
        pool = torch.nonzero(target == k).flatten()
        quota = (limit - sum(len(p) for p in picks)) // (len(classes) - n)
        if len(pool) > quota:
            pool = pool[torch.randperm(len(pool), generator=generator)[:quota]]
        picks.append(pool)
    return torch.cat(picks)


def _class_quotas(counts: Mapping[int, int], n_pixels: int) -> dict[int, int]:
    """Pixels drawn per class in one step: the classes' shares of the references, at least a tenth each.

    ``counts`` are the classes' pixel counts in the references themselves, not in the kept sample
    (large references are kept class-balanced, which would otherwise inflate the rarer classes' prior:
    on a 4-megapixel image with a tenth of it objects, ninefold).
    """
    total = sum(counts.values())
    return {k: max(int(n_pixels * counts[k] / total), n_pixels // 10) for k in sorted(counts) if counts[k]}


def _in_order(maps: np.ndarray, have: Sequence[int], want: Sequence[int]) -> np.ndarray:
    """``(len(want), H, W)`` maps in the class order ``want`` (classes a fold lacks are zero)."""
    out = np.zeros((len(want), *maps.shape[1:]), np.float32)
    for k, cls in enumerate(want):
        if cls in have:
            out[k] = maps[list(have).index(cls)]
    return out


def fit_refiner(
    propagator: Any,
    pairs: Sequence[tuple[Any, Any]],
    classes: Mapping[int, int] | None = None,
    seconds: float = 15.0,
    *,
    n_pixels: int = 20000,
    max_pixels: int = 500_000,
    max_steps: int = 400,
    hidden: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    use_model_maps: bool = True,
    fold_models: Sequence[Any] | None = None,
    colour_features: bool = True,
) -> RefinerFit:
    """Train a :class:`PixelRefiner` on the references and give it to ``propagator``.

    Parameters
    ----------
    propagator : Propagator
        The engine (model, scale and projection as they will be used); its references are set to
        ``pairs`` on return and its semantic answers are refined from then on.
    pairs : sequence of (image, labels)
        The reference pairs.
    classes : mapping, optional
        Label value -> class id (default: all class 1).
    seconds : float
        Time budget of the MLP's training (the coarse maps are computed first, outside it).
    n_pixels : int
        Training pixels drawn per step from all references, per class in proportion to its pixels in the
        references (each class gets at least a tenth).
    max_pixels : int
        Pixels kept per reference (fold) for training, drawn class-balanced from larger ones (bounds
        memory: about 130 MB of features each).
    max_steps : int
        Optimiser steps at most.
    hidden : int
        MLP width.
    lr : float
        Adam learning rate.
    seed : int
        Seed of the pixel sampling and the MLP's initialisation.
    use_model_maps : bool
        As for :class:`PixelRefiner` (False: ignore the model, for ablations).
    fold_models : sequence of SINE, optional
        The model that predicts each fold's held-out half
        (:attr:`~sine_model.training.adapt.AdaptResult.fold_models` of a cross-fitted adaptation: one not
        trained on that half); default: the propagator's model for every fold.
    colour_features : bool
        When a reference is in colour, add the basic features of each stretched RGB channel
        (:class:`PixelRefiner`'s ``basic_channels=3``): the grey filter bank does not see the texture of
        each stain (on MICCAI H&E they raised the refiner's semantic IoU; grey images get none: on EPFL
        EM, grey basic features lowered the instance F1).

    Returns
    -------
    RefinerFit
    """
    propagator.set_refiner(None)
    pairs = [(image, labels) for image, labels, _, _ in check_reference_pairs(pairs, propagator.channel_axis)]
    class_of = propagator._class_map(classes, [labels for _, labels in pairs])
    class_ids = sorted(set(class_of.values()))  # the semantic channels' order (sorted class ids)
    folds = reference_folds(pairs, propagator.channel_axis)
    held_out = bool(folds)
    if fold_models is not None and len(fold_models) != len(folds):
        raise ValueError(f"{len(fold_models)} fold models for {len(folds)} reference folds: pass the "
                         "fold_models of an adaptation on these same references")
    if not folds:  # no reference with objects in both halves: each reference predicts itself
        folds = [(pair, pair) for pair in pairs]
    engine_model = propagator.model
    basic_channels = 0
    if colour_features:
        rgbs = (to_rgb_float(np.asarray(image), channel_axis=propagator.channel_axis) for image, _ in pairs)
        basic_channels = 3 if any(np.ptp(rgb, axis=-1).max() > 0 for rgb in rgbs) else 0
    torch.manual_seed(seed)
    refiner = PixelRefiner(class_ids, hidden=hidden, use_model_maps=use_model_maps,
                           basic_channels=basic_channels)
    features, targets, counts = [], [], Counter()
    generator = torch.Generator().manual_seed(seed)
    try:
        for k, (reference, (image, labels)) in enumerate(folds):
            propagator.model = engine_model if fold_models is None else fold_models[k]
            propagator.set_references([reference], classes)
            result = next(propagator.propagate([image], modes=("semantic",), keep_maps=True))
            coarse = _in_order(result.semantic_maps, propagator.semantic_classes(), class_ids)
            rgb = to_rgb_float(np.asarray(image), channel_axis=propagator.channel_axis)  # not the projection
            target = torch.from_numpy(_targets(np.asarray(labels), class_of, class_ids))
            share = max_pixels / labels.size  # large references: keep a class-balanced sample of each strip
            for rows, strip in refiner.strips(rgb, coarse):
                strip_target = target[rows].flatten()
                values, sizes = torch.unique(strip_target, return_counts=True)
                counts.update(dict(zip(values.tolist(), sizes.tolist(), strict=True)))  # before sampling
                keep = _sample(strip_target, max(1, int(share * len(strip_target))), generator)
                features.append(strip[keep])
                targets.append(strip_target[keep])
    finally:
        propagator.model = engine_model
    propagator.set_references(pairs, classes)
    x, y = torch.cat(features), torch.cat(targets)
    refiner.shift.copy_(x.mean(0))
    refiner.spread.copy_(x.std(0).clamp_min(1e-4))
    per_class = _class_quotas(counts, n_pixels)
    pools = {k: torch.nonzero(y == k).flatten() for k in per_class}
    optimiser = torch.optim.Adam(refiner.head.parameters(), lr=lr)
    start, steps, loss_value = time.perf_counter(), 0, float("nan")
    refiner.train()
    while steps < max_steps and (steps == 0 or time.perf_counter() - start < seconds):
        picks = torch.cat([pool[torch.randint(len(pool), (per_class[k],), generator=generator)]
                           for k, pool in pools.items()])
        loss = nn.functional.cross_entropy(refiner(x[picks]), y[picks])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps, loss_value = steps + 1, float(loss.detach())
    refiner.eval()
    propagator.set_refiner(refiner)
    return RefinerFit(steps, time.perf_counter() - start, loss_value, int(len(y)), held_out)
