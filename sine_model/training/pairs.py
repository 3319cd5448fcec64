"""Training episodes: (reference, target) pairs sampled from groups of labelled images.

A *group* is a list of images of the same kind (same modality, same object classes). Following the
SINE recipe (reference notes §2.1), every episode is, with probability ``crop_prob``, a **crop
pair** (two independently augmented views of one image: instance ids coincide, the only source of
ID supervision), otherwise a **cross pair** of two different images of the group (the target's
ids are shifted above every reference id, so no id matches by accident). A group with a single
image always gives crop pairs.

The reference keeps all its objects; the target keeps only the objects whose class appears in the
augmented reference. Views are redrawn until both hold at least one object (``max_attempts``
tries, then :class:`NoUsablePairError`). A view's crop window is placed around a random object with
probability ``focus_prob``, and always from the second half of the attempts on, so that small sparse
objects in a large image still give pairs (in a crop pair both views centre on the same object). Masks
are sorted by (class, id) in both, so common ids appear in the same relative order.

Items
-----
An item is a :class:`PairItem`, a tuple ``(image, labels)`` or ``(image, labels, class_of)`` (e.g. a
:class:`~sine_model.training.synthetic.Scene`; a 3-D tuple image is taken as channels-last), or a
callable returning one of these (loaded lazily, e.g. the ``FileItem`` of
:func:`sine_model.training.folders.folder_groups`). ``class_of`` maps instance id to class id, or
is an ``(H, W)`` class image (each instance takes its majority class), or None (every object is
class 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from sine_model.errors import SineError
from sine_model.preprocess.transforms import (
    PATCH_SIZE,
    Geometry,
    prepare_labels,
    rgb_to_model_input,
    to_rgb_float,
)
from sine_model.training.augment import AugmentConfig, augment


class NoUsablePairError(SineError, RuntimeError):
    """:meth:`PairSampler.sample` found no view pair holding objects in ``max_attempts`` draws."""


@dataclass
class PairItem:
    """One labelled image.

    Parameters
    ----------
    image : np.ndarray
        2-D or 3-D image (see :func:`sine_model.preprocess.transforms.to_rgb_float`).
    labels : np.ndarray
        ``(H, W)`` instance labels, 0 = background.
    class_of : mapping, np.ndarray or None, optional
        Instance id -> class id, an ``(H, W)`` class image, or None (all objects class 1).
    channel_axis : int or None, optional
        Channel axis of a 3-D image, as for ``to_rgb_float``.
    name : str, optional
        Shown in error messages.
    """

    image: np.ndarray
    labels: np.ndarray
    class_of: Mapping[int, int] | np.ndarray | None = None
    channel_axis: int | None = None
    name: str = ""


ItemLike = PairItem | tuple | Callable[[], Any]


@dataclass(frozen=True)
class PairConfig:
    """Settings of :class:`PairSampler`.

    Parameters
    ----------
    pad : int
        Side ``P`` of the model input, a multiple of 14.
    augment : AugmentConfig
        Augmentation of each view; its ``out_size`` must fit in ``pad`` (views are not padded by the
        augmentation, the model input is padded instead, with 0 in normalised space).
    crop_prob : float
        Probability of a crop pair when the group has several images.
    max_attempts : int
        Redraws allowed before :meth:`PairSampler.sample` gives up.
    min_area : int
        Object fragments smaller than this (pixels, after augmentation) are dropped.
    focus_prob : float
        Probability that a view's crop window is placed around a random object rather than anywhere
        (from the second half of ``max_attempts`` on, it always is).
    """

    pad: int = 224
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(out_size=224))
    crop_prob: float = 0.5
    max_attempts: int = 50
    min_area: int = 8
    focus_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.pad < PATCH_SIZE or self.pad % PATCH_SIZE:
            raise ValueError(f"PairConfig.pad must be a positive multiple of {PATCH_SIZE}, got {self.pad}")
        out_h, out_w = self.augment.out_hw
        if max(out_h, out_w) > self.pad:
            raise ValueError(f"augment.out_size {(out_h, out_w)} must fit in pad {self.pad}")
        if not 0 <= self.crop_prob <= 1 or not 0 <= self.focus_prob <= 1:
            raise ValueError(f"crop_prob and focus_prob must be probabilities, got {self.crop_prob}, "
                             f"{self.focus_prob}")
        if self.max_attempts < 1 or self.min_area < 1:
            raise ValueError("max_attempts and min_area must be >= 1")


@dataclass
class Episode:
    """One training pair, model-ready.

    Attributes
    ----------
    ref_image, target : torch.Tensor
        ``(1, 3, P, P)`` float32, ImageNet-normalised, zero-padded bottom/right.
    ref_masks, masks : torch.Tensor
        ``(N, P, P)`` / ``(T, P, P)`` bool object masks of the reference / target.
    ref_labels, labels : torch.Tensor
        ``(N,)`` / ``(T,)`` int64 class ids; every target class occurs in the reference.
    ref_ids, ids : torch.Tensor
        ``(N,)`` / ``(T,)`` int64 instance ids; they coincide only in crop pairs.
    ref_valid_hw, valid_hw : tuple of int
        Size of the image content at the top-left of the reference / target.
    crop_pair : bool
        Whether both views come from the same image.
    source : tuple of int
        ``(group, reference item, target item)`` indices.
    """

    ref_image: torch.Tensor
    ref_masks: torch.Tensor
    ref_labels: torch.Tensor
    ref_ids: torch.Tensor
    target: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    ref_valid_hw: tuple[int, int]
    valid_hw: tuple[int, int]
    crop_pair: bool
    source: tuple[int, int, int]

    @property
    def valid_mask(self) -> torch.Tensor:
        """``(P, P)`` bool, True on the target's image content (False on padding)."""
        side = self.target.shape[-1]
        mask = torch.zeros((side, side), dtype=torch.bool)
        mask[: self.valid_hw[0], : self.valid_hw[1]] = True
        return mask


@dataclass
class _Prepared:
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    labels: np.ndarray  # (H, W) int64
    classes: dict[int, int]


def as_pair_item(obj: ItemLike) -> PairItem:
    """Turn an item (see the module docstring) into a :class:`PairItem`, loading it if callable."""
    if callable(obj):
        obj = obj()
    if isinstance(obj, PairItem):
        return obj
    if isinstance(obj, tuple) and len(obj) in (2, 3):
        image = np.asarray(obj[0])
        class_of = obj[2] if len(obj) == 3 else None
        return PairItem(image, np.asarray(obj[1]), class_of, channel_axis=-1 if image.ndim == 3 else None)
    raise TypeError(
        f"An item must be a PairItem, a tuple (image, labels[, class_of]) or a callable returning one; "
        f"got {type(obj).__name__}"
    )


def _class_table(labels: np.ndarray, class_of: Mapping[int, int] | np.ndarray | None, where: str) -> dict:
    ids = np.unique(labels[labels != 0])
    if class_of is None:
        return {int(i): 1 for i in ids}
    if isinstance(class_of, np.ndarray):
        if class_of.shape != labels.shape:
            raise ValueError(f"{where}: class image {class_of.shape} does not match labels {labels.shape}")
        table = {}
        for i in ids:
            values, counts = np.unique(class_of[labels == i], return_counts=True)
            table[int(i)] = int(values[np.argmax(counts)])
        return table
    missing = [int(i) for i in ids if int(i) not in class_of]
    if missing:
        raise ValueError(f"{where}: instance ids {missing[:10]} have no class in class_of")
    return {int(i): int(class_of[int(i)]) for i in ids}


def _prepare(obj: ItemLike, where: str) -> _Prepared:
    item = as_pair_item(obj)
    where = f"{where} ({item.name})" if item.name else where
    labels = np.asarray(item.labels)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"{where}: labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if not labels.any():
        raise ValueError(f"{where} has no objects (its label image is all zero); remove it from the group")
    rgb = to_rgb_float(item.image, channel_axis=item.channel_axis)
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"{where}: image {rgb.shape[:2]} and labels {labels.shape} differ in size")
    return _Prepared(rgb, labels, _class_table(labels, item.class_of, where))


class PairSampler:
    """Draw training :class:`Episode` s from groups of labelled images.

    Parameters
    ----------
    groups : sequence or mapping of sequences of items
        Groups of same-kind items (a mapping such as the result of
        :func:`~sine_model.training.folders.folder_groups` is taken by its values). In-memory
        items are checked at once; callables are loaded on first use.
    config : PairConfig, optional
        Sampling settings.
    seed : int, np.random.Generator or None, optional
        Seed of the sampler's own generator.
    group_weights : sequence of float, optional
        Relative probability of each group (uniform by default).
    cache : bool, optional
        Keep prepared items (float32 RGB + labels) in memory after their first load.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[ItemLike]] | Mapping[str, Sequence[ItemLike]],
        config: PairConfig | None = None,
        seed: int | np.random.Generator | None = None,
        group_weights: Sequence[float] | None = None,
        cache: bool = True,
    ) -> None:
        self.group_names = [str(k) for k in groups] if isinstance(groups, Mapping) else None
        self.groups = [list(g) for g in (groups.values() if isinstance(groups, Mapping) else groups)]
        if not self.groups:
            raise ValueError("PairSampler needs at least one group of labelled images; got none")
        empty = [k for k, g in enumerate(self.groups) if not g]
        if empty:
            raise ValueError(f"groups {empty} are empty; every group needs at least one labelled image")
        self.config = config or PairConfig()
        self._augment = replace(self.config.augment, pad=False)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        weights = np.ones(len(self.groups)) if group_weights is None else np.asarray(group_weights, float)
        if weights.shape != (len(self.groups),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"group_weights must be {len(self.groups)} non-negative values, not all 0")
        self._weights = weights / weights.sum()
        self._cache_on = cache
        self._cache: dict[tuple[int, int], _Prepared] = {}
        for g, group in enumerate(self.groups):
            for i, item in enumerate(group):
                if not callable(item):
                    self._cache[(g, i)] = _prepare(item, f"group {self._name(g)} item {i}")

    def _name(self, g: int) -> str:
        return repr(self.group_names[g]) if self.group_names else str(g)

    def _item(self, g: int, i: int) -> _Prepared:
        key = (g, i)
        if key in self._cache:
            return self._cache[key]
        prepared = _prepare(self.groups[g][i], f"group {self._name(g)} item {i}")
        if self._cache_on:
            self._cache[key] = prepared
        return prepared

    def _view(self, item: _Prepared, rng: np.random.Generator,
              focus: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One augmented view (around object ``focus`` if given); fragments under ``min_area`` pixels
        are removed from its labels."""
        image, labels, _ = augment(item.rgb, item.labels, rng, self._augment, focus)
        ids, counts = np.unique(labels, return_counts=True)
        small = ids[(counts < self.config.min_area) & (ids != 0)]
        if small.size:
            labels = np.where(np.isin(labels, small), 0, labels)
        return image, labels

    def _encode(
        self, image: np.ndarray, labels: np.ndarray, classes: dict[int, int], id_offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model input, masks, class labels and ids of one view, masks sorted by (class, id)."""
        h, w = labels.shape
        pad = self.config.pad
        tensor = rgb_to_model_input(image, (h, w), pad)
        masks, ids = prepare_labels(labels, Geometry(pad=pad, valid_hw=(h, w), original_hw=(h, w)))
        cls = torch.tensor([classes[int(i)] for i in ids], dtype=torch.int64)
        order = torch.from_numpy(np.lexsort((ids.numpy(), cls.numpy())))
        return tensor, masks[order], cls[order], ids[order] + id_offset

    def sample(self, rng: np.random.Generator | None = None) -> Episode:
        """Draw one episode.

        Parameters
        ----------
        rng : np.random.Generator, optional
            Generator to draw from instead of the sampler's own.

        Returns
        -------
        Episode
            A crop or cross pair with at least one reference and one target object.

        Raises
        ------
        NoUsablePairError
            When ``max_attempts`` draws in a row gave an empty reference or target.
        """
        rng = self._rng if rng is None else rng
        config = self.config
        for attempt in range(config.max_attempts):
            g = int(rng.choice(len(self.groups), p=self._weights))
            size = len(self.groups[g])
            i = int(rng.integers(size))
            crop = size == 1 or rng.random() < self.config.crop_prob
            j = i
            if not crop:  # another image of the group, uniformly
                j = int(rng.integers(size - 1))
                j += j >= i
            ref, tgt = self._item(g, i), self._item(g, j)
            # no draw from rng unless focusing is asked for or needed: unfocused runs stay as they were
            focus = attempt >= config.max_attempts // 2 or (config.focus_prob > 0
                                                              and rng.random() < config.focus_prob)
            ref_focus = int(rng.choice(list(ref.classes))) if focus else None
            ref_image, ref_labels = self._view(ref, rng, ref_focus)
            if not ref_labels.any():
                continue
            ref_classes = {ref.classes[int(k)] for k in np.unique(ref_labels[ref_labels != 0])}
            tgt_focus = None
            if focus:  # a crop pair centres both views on one object; a cross pair on one of a shared class
                shared = [k for k, c in tgt.classes.items() if c in ref_classes]
                tgt_focus = ref_focus if crop else (int(rng.choice(shared)) if shared else None)
            tgt_image, tgt_labels = self._view(tgt, rng, tgt_focus)
            keep = [k for k in np.unique(tgt_labels[tgt_labels != 0]) if tgt.classes[int(k)] in ref_classes]
            if not keep:
                continue
            tgt_labels = np.where(np.isin(tgt_labels, keep), tgt_labels, 0)
            r_tensor, r_masks, r_cls, r_ids = self._encode(ref_image, ref_labels, ref.classes)
            offset = 0 if crop else int(r_ids.max())
            t_tensor, t_masks, t_cls, t_ids = self._encode(tgt_image, tgt_labels, tgt.classes, offset)
            return Episode(
                ref_image=r_tensor, ref_masks=r_masks, ref_labels=r_cls, ref_ids=r_ids,
                target=t_tensor, masks=t_masks, labels=t_cls, ids=t_ids,
                ref_valid_hw=ref_labels.shape, valid_hw=tgt_labels.shape,
                crop_pair=crop, source=(g, i, j),
            )
        raise NoUsablePairError(
            f"No usable pair after {config.max_attempts} draws: the augmented views kept no "
            "reference object or no target object of a reference class (objects smaller than "
            f"{config.min_area} pixels after scaling are dropped). Use a larger scale, a smaller min_area, "
            "or images with more or larger objects."
        )

    def __iter__(self) -> PairSampler:
        return self

    def __next__(self) -> Episode:
        return self.sample()
