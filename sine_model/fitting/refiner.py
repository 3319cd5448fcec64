"""Fitting the refiner's pixel model on the references (:func:`fit_refiner`).

:func:`fit_refiner` trains :class:`~sine_model.postprocess.pixel_refiner.PixelRefiner` on the references'
own pixels for a number of steps (seeded; a wall-clock cap is only a safety net). Its coarse input there is
the model's answer on each reference half predicted from the other half
(:func:`~sine_model.fitting.folds.reference_folds`), or on the whole reference from itself when no reference
has objects in both halves: a held-out answer teaches the MLP how far the model's map can be trusted on
images it has not seen. A model adapted to the whole references has seen both halves, so after adaptation
the halves are predicted by the cross-fitted models of
:func:`~sine_model.fitting.adaptation.adapt_propagator` (``cross_fit``, ``fold_models`` here), each adapted
without the half it predicts. Nothing is tuned on targets.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sine_model.engine.inputs import check_reference_pairs
from sine_model.fitting.folds import reference_folds
from sine_model.postprocess.border_instances import inner_rim
from sine_model.postprocess.pixel_refiner import PixelRefiner
from sine_model.preprocess.transforms import to_rgb_float

__all__ = ["FOREST_DEPTH", "FOREST_TREES", "RefinerFit", "TrainingPixels", "collect_training_pixels",
           "fit_refiner", "train_forest", "train_refiner"]


@dataclass
class RefinerFit:
    """What :func:`fit_refiner` did: optimiser steps, seconds, final loss, training pixels, folds.

    ``cut_short`` is True when the wall-clock safety cap stopped the training before its step budget
    (the only case in which the result depends on the machine's speed).
    """

    steps: int
    seconds: float
    loss: float
    pixels: int
    held_out: bool
    cut_short: bool = False


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


def _object_areas(label_images: Sequence[np.ndarray], class_of: Mapping[int, int]) -> dict[int, list[int]]:
    """Class id -> pixel areas of its reference objects."""
    areas: dict[int, list[int]] = {}
    for labels in label_images:
        values, counts = np.unique(np.asarray(labels)[np.asarray(labels) != 0], return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            areas.setdefault(int(class_of[int(value)]), []).append(count)
    return areas


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
    max_steps: int = 400,
    *,
    seconds: float = 600.0,
    n_pixels: int = 20000,
    max_pixels: int = 500_000,
    hidden: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    use_model_maps: bool = True,
    fold_models: Sequence[Any] | None = None,
    colour_features: bool = True,
    forest: bool = False,
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
    max_steps : int
        Optimiser steps: the budget (seeded, so a fit repeats on any machine).
    seconds : float
        Wall-clock safety cap of the MLP's training (the coarse maps are computed first, outside it);
        when it stops the training before ``max_steps``, the result says so (``cut_short``).
    n_pixels : int
        Training pixels drawn per step from all references, per class in proportion to its pixels in the
        references (each class gets at least a tenth).
    max_pixels : int
        Pixels kept per reference (fold) for training, drawn class-balanced from larger ones (bounds
        memory: about 130 MB of features each).
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
        (:attr:`~sine_model.fitting.adaptation.AdaptResult.fold_models` of a cross-fitted adaptation: one not
        trained on that half); default: the propagator's model for every fold.
    colour_features : bool
        When a reference is in colour, add the basic features of each stretched RGB channel
        (:class:`PixelRefiner`'s ``basic_channels=3``): the grey filter bank does not see the texture of
        each stain (on MICCAI H&E they raised the refiner's semantic IoU; grey images get none: on EPFL
        EM, grey basic features lowered the instance F1).
    forest : bool
        Also fit a random forest on the same training pixels (:func:`train_forest`) and average its
        answer with the MLP's (:meth:`PixelRefiner.set_forest`).

    Returns
    -------
    RefinerFit
    """
    if max_steps < 1:
        raise ValueError(f"the refiner needs at least one step, got max_steps={max_steps}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels = collect_training_pixels(propagator, pairs, classes, max_pixels=max_pixels, hidden=hidden,
                                     use_model_maps=use_model_maps, fold_models=fold_models,
                                     colour_features=colour_features, generator=generator)
    fit = train_refiner(propagator, pixels, max_steps, seconds=seconds, n_pixels=n_pixels, lr=lr,
                        generator=generator)
    if forest:
        pixels.refiner.set_forest(train_forest(pixels, n_pixels=n_pixels, seed=seed))
    return fit


#: Size of the refiner's random forest: the forest + border baseline's (bench/baselines.py).
FOREST_TREES = 32
FOREST_DEPTH = 16


def train_forest(pixels: TrainingPixels, *, n_pixels: int = 20000, seed: int = 0) -> Any:
    """A random forest (:data:`FOREST_TREES` trees of depth :data:`FOREST_DEPTH`) on ``n_pixels`` of the
    training pixels, drawn (with replacement, seeded) in the per-class quotas of the MLP's steps.

    The trees are built in torch's intra-op thread count (the engine's choice): each tree's seed is drawn
    from ``seed`` before any is built, so the same trees come out for any number of threads. The fitted
    forest predicts in one thread of its own (:class:`PixelRefiner` splits its pixels among threads).
    """
    from sklearn.ensemble import RandomForestClassifier

    y = pixels.targets.numpy()
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.choice(np.flatnonzero(y == k), size=n, replace=True)
                            for k, n in _class_quotas(pixels.counts, n_pixels).items()])
    forest = RandomForestClassifier(n_estimators=FOREST_TREES, max_depth=FOREST_DEPTH,
                                    n_jobs=torch.get_num_threads(), random_state=seed)
    forest.fit(pixels.features.numpy()[picks], y[picks])
    return forest.set_params(n_jobs=1)


@dataclass
class TrainingPixels:
    """The refiner's training data from :func:`collect_training_pixels`, before any optimiser step.

    ``refiner`` is the untrained :class:`PixelRefiner` (its reference areas set), ``features`` and
    ``targets`` the kept pixels (targets: 0 background, 1..C the classes, C+1 border), ``counts`` the
    pixels per target value in the references before sampling, ``held_out`` whether the coarse maps
    were predicted from the other reference half.
    """

    refiner: PixelRefiner
    features: Tensor
    targets: Tensor
    counts: Counter
    held_out: bool


def collect_training_pixels(
    propagator: Any,
    pairs: Sequence[tuple[Any, Any]],
    classes: Mapping[int, int] | None = None,
    *,
    max_pixels: int = 500_000,
    hidden: int = 32,
    use_model_maps: bool = True,
    fold_models: Sequence[Any] | None = None,
    colour_features: bool = True,
    generator: torch.Generator | None = None,
) -> TrainingPixels:
    """The refiner's training pixels: features and per-pixel targets of the references (first half of
    :func:`fit_refiner`, whose parameters these are; ``generator`` draws the kept pixels).

    The propagator's references are ``pairs`` on return and its refiner is unset.
    """
    generator = torch.Generator().manual_seed(0) if generator is None else generator
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
    refiner = PixelRefiner(class_ids, hidden=hidden, use_model_maps=use_model_maps,
                           basic_channels=basic_channels)
    features, targets, counts = [], [], Counter()
    try:
        for k, (reference, (image, labels)) in enumerate(folds):
            if use_model_maps:
                propagator.model = engine_model if fold_models is None else fold_models[k]
                propagator.set_references([reference], classes)
                result = next(propagator.propagate([image], modes=("semantic",), keep_maps=True))
                coarse = _in_order(result.semantic_maps, propagator.semantic_classes(), class_ids)
            else:  # the refiner reads image features only: no need for the model's answer
                coarse = None
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
    refiner.set_reference_areas(_object_areas([labels for _, labels in pairs], class_of))
    return TrainingPixels(refiner, torch.cat(features), torch.cat(targets), counts, held_out)


def train_refiner(
    propagator: Any,
    pixels: TrainingPixels,
    max_steps: int = 400,
    *,
    seconds: float = 600.0,
    n_pixels: int = 20000,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
) -> RefinerFit:
    """Train ``pixels.refiner``'s MLP on ``pixels`` and give it to ``propagator`` (second half of
    :func:`fit_refiner`, whose parameters these are; ``generator`` draws each step's pixels)."""
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    refiner, x, y = pixels.refiner, pixels.features, pixels.targets
    refiner.shift.copy_(x.mean(0))
    refiner.spread.copy_(x.std(0).clamp_min(1e-4))
    per_class = _class_quotas(pixels.counts, n_pixels)
    pools = {k: torch.nonzero(y == k).flatten() for k in per_class}
    optimiser = torch.optim.Adam(refiner.head.parameters(), lr=lr)
    start, steps, loss_value = time.perf_counter(), 0, float("nan")
    refiner.train()
    while steps < max_steps and (steps == 0 or time.perf_counter() - start < seconds):
        picks = torch.cat([pool[torch.randint(len(pool), (per_class[k],), generator=generator)]
                           for k, pool in pools.items()])
        # index_select copies whole rows (5× faster than x[picks] on this CPU, the same values)
        loss = nn.functional.cross_entropy(refiner(x.index_select(0, picks)), y.index_select(0, picks))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps, loss_value = steps + 1, float(loss.detach())
    refiner.eval()
    propagator.set_refiner(refiner)
    return RefinerFit(steps, time.perf_counter() - start, loss_value, int(len(y)), pixels.held_out,
                      cut_short=steps < max_steps)
