"""Test-time adaptation: a short fine-tuning of the neck and decoder on the user's own references.

:func:`adapt` turns the labelled reference images into training episodes with
:class:`~sine_model.training.pairs.PairSampler` (crop pairs — two augmented views of one image, which
carry the ID supervision — and, with several references, cross pairs between them), and trains the
neck (``image_encoder.neck``) and the decoder (``transformer_decoder``) with the training losses for a
number of optimiser steps (seeded: the same inputs give the same weights on any machine; a wall-clock cap
is only a safety net, and :attr:`AdaptResult.cut_short` says when it stopped a run early). The encoder —
the DINOv2 ViT or the embedded model's small encoder — stays frozen, so cached encoder features stay
valid. By default the caller's model is not modified: an adapted copy is returned.

:func:`adapt_propagator` does the same for a :class:`~sine_model.engine.propagator.Propagator` and re-encodes
its references with the adapted neck. With ``cross_fit`` (used when a full-resolution refiner is fitted
next) it adapts one copy per half of the references instead and gives the engine their weight average
(:func:`average_weights`), so the refiner can learn from answers on halves the model did not train on.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sine_model.fitting.folds import reference_folds
from sine_model.modeling.sine import SINE
from sine_model.training.augment import AugmentConfig
from sine_model.training.config import LossConfig
from sine_model.training.loop import build_criterion, episode_losses, param_groups
from sine_model.training.pairs import PairConfig, PairItem, PairSampler

__all__ = ["ADAPT_STEPS", "MAX_ADAPT_SECONDS", "AdaptResult", "adapt", "adapt_propagator", "average_weights",
           "trainable_for_adaptation"]

#: Default step budget of :func:`adapt` (per adapted copy).
ADAPT_STEPS = 80
#: Default wall-clock safety cap of :func:`adapt`, in seconds.
MAX_ADAPT_SECONDS = 600.0


@dataclass
class AdaptResult:
    """What :func:`adapt` did.

    Attributes
    ----------
    model : SINE
        The adapted model, in eval mode (the caller's own model when ``inplace=True``).
    steps : int
        Optimizer steps taken.
    seconds : float
        Wall-clock time of the whole call.
    losses : list of float
        Total loss of every step.
    trained_parameters : int
        Number of parameters that were trained (neck + decoder).
    encoder_changed : bool
        Whether any encoder parameter was modified (never, unless the caller unfroze it by hand).
    fold_models : list of SINE, optional
        Cross-fitted adaptation (:func:`adapt_propagator` with ``cross_fit``): for each fold of
        :func:`~sine_model.fitting.folds.reference_folds`, the model adapted without its held-out half;
        ``model`` is then their weight average. None otherwise.
    cut_short : bool
        The wall-clock cap stopped it before its ``max_steps`` (the result then depends on the machine).
    """

    model: SINE
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    trained_parameters: int = 0
    encoder_changed: bool = False
    fold_models: list[SINE] | None = None
    cut_short: bool = False


def trainable_for_adaptation(model: SINE, train_encoder: bool = False) -> list[nn.Parameter]:
    """The parameters :func:`adapt` trains: the neck and the whole ``transformer_decoder`` (and the
    encoder's trainable parameters with ``train_encoder``)."""
    encoder = model.image_encoder.encoder
    encoder = [p for p in encoder.parameters() if p.requires_grad] if train_encoder else []
    return [*encoder, *model.image_encoder.neck.parameters(), *model.transformer_decoder.parameters()]


def _items(
    pairs: Sequence[Any], classes: Mapping[int, int] | None, channel_axis: int | None
) -> list[PairItem]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise ValueError("pairs must be a non-empty sequence of (image, labels) pairs")
    items = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, PairItem):
            items.append(pair)
            continue
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pairs[{index}] must be an (image, labels) pair")
        image, labels = np.asarray(pair[0]), np.asarray(pair[1])
        class_of = None
        if classes is not None:
            missing = sorted({int(v) for v in np.unique(labels) if v != 0} - {int(k) for k in classes})
            if missing:
                raise ValueError(f"labels {missing[:10]} of reference {index} have no class in `classes`")
            class_of = {int(k): int(v) for k, v in classes.items()}
        items.append(PairItem(image, labels, class_of, channel_axis=channel_axis, name=f"reference {index}"))
    return items


def _min_area(items: Sequence[PairItem], smallest_scale: float) -> int:
    """Fragment floor of the training views: 8 pixels, lowered for references whose objects are tiny
    (a quarter of the median object area at the smallest drawn scale, at least 1), so that they stay."""
    areas = np.concatenate([np.unique(labels[labels != 0], return_counts=True)[1]
                            for labels in (np.asarray(item.labels) for item in items)])
    if not areas.size:
        return 8
    return int(np.clip(0.25 * float(np.median(areas)) * smallest_scale ** 2, 1, 8))


def _versions(module: nn.Module) -> list[int]:
    return [p._version for p in module.parameters()]


def adapt(
    model: SINE,
    pairs: Sequence[Any],
    seconds: float = MAX_ADAPT_SECONDS,
    *,
    classes: Mapping[int, int] | None = None,
    max_steps: int | None = ADAPT_STEPS,
    inplace: bool = False,
    pad: int = 224,
    scale: float = 1.0,
    scale_jitter: float = 1.25,
    crop_prob: float = 0.5,
    episodes_per_step: int = 1,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    grad_clip: float = 1.0,
    num_points: int = 3136,
    channel_axis: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    train_encoder: bool = False,
) -> AdaptResult:
    """Fine-tune the neck and decoder of ``model`` on crop pairs of labelled references, ``max_steps`` steps.

    Parameters
    ----------
    model : SINE
        The model; its encoder is trained only with ``train_encoder``.
    pairs : sequence of (image, labels)
        Reference images (2-D, or 3-D with channels) and their instance label images (0 = background);
        :class:`~sine_model.training.pairs.PairItem` objects are accepted too.
    seconds : float
        Wall-clock safety cap of the whole call (> 0): a step is not started when the mean step time says
        it would end after it (at least one step is always taken); ``cut_short`` then says so.
    classes : mapping, optional
        Label value → class id, as for :meth:`Propagator.set_references` (default: all class 1).
    max_steps : int or None
        Stop after this many steps (default :data:`ADAPT_STEPS`): the budget that makes a run repeat on
        any machine (seeded). None: ``seconds`` alone bounds it (the result then depends on the machine).
    inplace : bool
        Adapt ``model`` itself. False (default): adapt a deep copy and leave ``model`` untouched.
    pad : int
        Side of the training crops (multiple of 14).
    scale : float
        Pixel scale used at inference (``Propagator.scale``); crops are resized by a factor drawn
        log-uniformly in ``[scale / scale_jitter, scale · scale_jitter]``.
    scale_jitter : float
        See ``scale`` (>= 1).
    crop_prob : float
        Probability of a crop pair when there are several references (one reference: always).
    episodes_per_step : int
        Episodes per optimizer step.
    lr, weight_decay, grad_clip : float
        AdamW learning rate (constant), weight decay (official exceptions) and gradient clipping.
    num_points : int
        Points per mask for the mask losses and matching.
    channel_axis : int, optional
        Channel axis of 3-D images.
    seed : int
        Seed of the episode and point sampling.
    device : str or torch.device, optional
        Default: the device of the model's parameters.
    train_encoder : bool
        Train the encoder's trainable parameters too (meant for the small embedded encoders; cached
        encoder features of the model become stale).

    Returns
    -------
    AdaptResult
        The adapted model (eval mode) and a summary.

    Raises
    ------
    ValueError
        Bad pairs, classes or settings.
    """
    start = time.perf_counter()
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if scale <= 0 or scale_jitter < 1:
        raise ValueError(f"scale must be > 0 and scale_jitter >= 1, got {scale}, {scale_jitter}")
    if episodes_per_step < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError("episodes_per_step and max_steps must be >= 1")
    items = _items(pairs, classes, channel_axis)
    augment = AugmentConfig(out_size=pad, scale_range=(scale / scale_jitter, scale * scale_jitter))
    # views centred on objects half of the time, and a fragment floor sized by the objects: small sparse
    # objects in a large frame would otherwise rarely fall in a crop, or be dropped from it
    pair_config = PairConfig(pad=pad, augment=augment, crop_prob=crop_prob, focus_prob=0.5,
                             min_area=_min_area(items, scale / scale_jitter))
    sampler = PairSampler([items], pair_config, seed=seed)

    target = model if inplace else copy.deepcopy(model)
    if device is not None:
        target.to(device)
    dev = next(target.parameters()).device
    trainable = trainable_for_adaptation(target, train_encoder)
    trainable_ids = {id(p) for p in trainable}
    flags = {name: p.requires_grad for name, p in target.named_parameters()}
    encoder_versions = _versions(target.image_encoder.encoder)
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=dev).manual_seed(seed)
    criterion = build_criterion(LossConfig(num_points=num_points))
    losses: list[float] = []
    try:
        for param in target.parameters():
            param.requires_grad_(id(param) in trainable_ids)
        groups = param_groups(target, weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=lr)
        target.train()
        target.image_encoder.encoder.eval()
        step_times: list[float] = []
        while max_steps is None or len(losses) < max_steps:
            elapsed = time.perf_counter() - start
            if losses and elapsed + float(np.mean(step_times[-5:])) > seconds:
                break
            step_start = time.perf_counter()
            episodes = [sampler.sample(rng) for _ in range(episodes_per_step)]
            total = episode_losses(target, episodes, criterion, dev, generator)["total"]
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(total):
                total.backward()
                torch.nn.utils.clip_grad_norm_(trainable, grad_clip if grad_clip > 0 else float("inf"))
                optimizer.step()
            losses.append(float(total.detach()))
            step_times.append(time.perf_counter() - step_start)
    finally:
        for name, param in target.named_parameters():
            param.requires_grad_(flags[name])
        target.eval()
    return AdaptResult(
        model=target,
        steps=len(losses),
        seconds=time.perf_counter() - start,
        losses=losses,
        trained_parameters=sum(p.numel() for p in trainable),
        encoder_changed=_versions(target.image_encoder.encoder) != encoder_versions,
        cut_short=max_steps is not None and len(losses) < max_steps,
    )


def average_weights(models: Sequence[SINE]) -> SINE:
    """A copy of ``models[0]`` whose floating-point weights and buffers are the mean of all ``models``.

    Meant for copies of one model fine-tuned briefly on different data (they stay close in weight space).
    """
    if not models:
        raise ValueError("average_weights needs at least one model")
    states = [m.state_dict() for m in models]
    shapes = {k: v.shape for k, v in states[0].items()}
    if any({k: v.shape for k, v in state.items()} != shapes for state in states):
        raise ValueError("average_weights needs models of one architecture")
    mean = copy.deepcopy(models[0])
    mean.load_state_dict({k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
                          for k, v in states[0].items()})
    return mean.eval()


def _cross_fit(model: SINE, training_pairs: Sequence[Any], seconds: float, classes: Mapping[int, int] | None,
               **options: Any) -> AdaptResult | None:
    """One adapted copy per side of the reference folds (half the budget each), and their average."""
    start = time.perf_counter()
    sides: tuple[list, list] = ([], [])
    n_folds = 0
    for image, labels in training_pairs:
        folds = reference_folds([(np.asarray(image), np.asarray(labels))], options.get("channel_axis"))
        if folds:  # (first half -> second), (second -> first): each side trains on its fold's reference
            sides[0].append(folds[0][0])
            sides[1].append(folds[1][0])
            n_folds += 2
        else:  # objects in one half only: both sides train on the whole reference, nobody predicts it
            sides[0].append((image, labels))
            sides[1].append((image, labels))
    if not n_folds:
        return None
    results = [adapt(model, side, seconds / 2, classes=classes, **options) for side in sides]
    return AdaptResult(
        model=average_weights([r.model for r in results]),
        steps=sum(r.steps for r in results),
        seconds=time.perf_counter() - start,
        losses=[loss for r in results for loss in r.losses],
        trained_parameters=results[0].trained_parameters,
        encoder_changed=any(r.encoder_changed for r in results),
        fold_models=[results[k % 2].model for k in range(n_folds)],  # the order of reference_folds
        cut_short=any(r.cut_short for r in results),
    )


def adapt_propagator(
    propagator: Any,
    pairs: Sequence[Any],
    seconds: float = MAX_ADAPT_SECONDS,
    *,
    classes: Mapping[int, int] | None = None,
    inplace: bool = False,
    pad: int | None = None,
    cross_fit: bool = False,
    **options: Any,
) -> AdaptResult:
    """Adapt a :class:`~sine_model.engine.propagator.Propagator`'s model to its references, then set them.

    The propagator gets the adapted model (a copy unless ``inplace``, so the model object the caller
    built the propagator with is untouched) and ``pairs`` as its references, encoded with the adapted
    neck. Cached encoder features stay valid because the encoder is frozen; the cache is cleared only
    if the encoder changed anyway.

    Parameters
    ----------
    propagator : Propagator
        The engine to adapt.
    pairs : sequence of (image, labels)
        The reference pairs (as for :meth:`Propagator.set_references`).
    seconds : float
        Wall-clock safety cap of the adaptation (the budget is ``max_steps`` in ``options``, default
        :data:`ADAPT_STEPS` per adapted copy).
    classes : mapping, optional
        Label value → class id.
    inplace : bool
        Adapt ``propagator.model`` itself instead of a copy (ignored with ``cross_fit``).
    pad : int, optional
        Side of the training crops; default ``min(propagator.pad, 224)``.
    cross_fit : bool
        For a refiner fitted next (:func:`~sine_model.fitting.refiner.fit_refiner`, ``fold_models``): adapt
        one copy on the first halves of the references and one on the second halves
        (:func:`~sine_model.fitting.folds.reference_folds`), half the budget each, and give the engine
        their weight average. The refiner then learns from each half as predicted by a model that did
        not train on it, as the targets will be; a model adapted on whole references predicts its own
        training pixels, and a refiner fitted on those answers trusts them more than they deserve on
        targets. Without any fold (no reference has objects in both halves) this is plain adaptation.
    **options
        Further keyword arguments of :func:`adapt`; ``scale``, ``channel_axis`` and ``device``
        default to the propagator's.

    Returns
    -------
    AdaptResult
        With ``fold_models`` set when the adaptation was cross-fitted.
    """
    options.setdefault("scale", propagator.scale)
    options.setdefault("device", propagator.device)
    training_pairs = pairs
    if getattr(propagator, "project_inputs", False):  # train on what the model will see: the projection
        propagator.set_references(pairs, classes)  # fits the projection on these references
        training_pairs = [(propagator.training_image(image), labels) for image, labels in pairs]
    else:
        options.setdefault("channel_axis", propagator.channel_axis)
    pad = pad or min(int(propagator.pad), 224)
    result = _cross_fit(propagator.model, training_pairs, seconds, classes, pad=pad, **options) \
        if cross_fit else None
    if result is None:  # not asked for, or no reference has objects in both halves
        result = adapt(propagator.model, training_pairs, seconds, classes=classes, inplace=inplace, pad=pad,
                       **options)
    propagator.model = result.model
    if result.encoder_changed:
        propagator.clear_cache()
    propagator.set_references(pairs, classes)
    return result
