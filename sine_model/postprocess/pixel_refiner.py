"""The refiner's pixel model: decides each pixel again at the target's full resolution.

SINE's masks live on a grid of a quarter of the model input's patches (the embedded model: one mask cell
per 3.5 input pixels at input side 224, more on larger images), so boundaries are blurred and objects
separated by a few pixels — cells between EM membranes, touching nuclei — merge. :class:`PixelRefiner`
decides each pixel again at the target's own resolution from two kinds of evidence: the model's
stitched per-class map (upsampled, what SINE learned from the references) and fixed multiscale pixel
features of the image (:class:`~sine_model.modeling.filter_bank.FilterBank`: smoothing, edges, Laplacian,
Hessian and structure-tensor eigenvalues at σ 0.7–16). A small per-pixel MLP maps them to background,
each reference class and an object-border class (the objects' inner rim, as ilastik users label it for
touching objects). As in the forest + border baseline, a pixel is object where background is not its most
likely answer, pixels whose most likely answer is a class (not the border) seed a watershed on that class's
probability (which dips on the border), the watershed shares the border pixels out, so touching objects
come apart; pieces much larger than the reference objects are cut at their necks and pieces under a floor
learned from the reference objects' sizes are dropped (:mod:`~sine_model.postprocess.border_instances`).

The MLP is trained on the references by :func:`sine_model.fitting.refiner.fit_refiner`.
A random forest trained on the same pixels may be averaged with it (:meth:`PixelRefiner.set_forest`): the
two err on different pixels, and their mean beat either on the shared evaluation sets (docs/quality.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.feature import multiscale_basic_features
from torch import Tensor, nn

from sine_model.modeling.filter_bank import FilterBank
from sine_model.postprocess.border_instances import (
    MIN_INSTANCE_FRACTION,
    MIN_INSTANCE_PIXELS,
    RefinedMaps,
    inner_rim,
    instance_floor,
    seeded_instances,
)
from sine_model.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["MIN_INSTANCE_FRACTION", "MIN_INSTANCE_PIXELS", "REFINER_SIGMAS", "STRIP_PIXELS", "PixelRefiner",
           "RefinedMaps", "inner_rim", "seeded_instances"]

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
#: Pixels per MLP call: a chunk's hidden activations stay in the CPU's caches (on a 512² image, calls on
#: chunks of 16384 pixels took a third of the time of one call on all of them, with the same values;
#: 4096 and 8192 were slower, 32768 no faster).
MLP_CHUNK = 16384
#: Layers of the MLP that act on each value alone (so also on the transposed layout of probabilities()).
ELEMENTWISE: tuple[type[nn.Module], ...] = (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Identity)
#: Fewest pixels per thread when the forest predicts in parallel.
FOREST_MIN_BLOCK = 4096
#: Pixels the forest's trees walk before the next pixels: their features (4 MB) stay in the CPU's
#: caches from one tree to the next (the forest on a 512² image: 0.159 → 0.123–0.126 s on one thread,
#: vs all pixels per tree; 65536 pixels were as slow as all of them).
FOREST_CACHE_PIXELS = 16384
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
        # smallest instance and median object area per class (pixels), from the references
        # (set_reference_areas; a median of 0 splits nothing)
        self.register_buffer("min_areas", torch.ones(len(self.class_ids), dtype=torch.long))
        self.register_buffer("median_areas", torch.zeros(len(self.class_ids), dtype=torch.float64))
        self.head = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                  nn.Linear(hidden, self.num_outputs))
        self.forest: Any | None = None  # a fitted random forest averaged with the MLP (set_forest)
        # per thread: the filter bank's output, reused from one strip or target to the next by refine()
        # (a fresh 65 MB buffer cost ~16000 page faults per 512² target); freed by release_workspace
        self._workspace: dict[int, Tensor] = {}

    def set_reference_areas(self, areas: Mapping[int, Sequence[int]]) -> None:
        """Learn each class's instance floor and median object area from its reference objects' areas.

        ``areas`` maps a class id to the pixel areas of its reference objects
        (:func:`~sine_model.postprocess.border_instances.instance_floor` gives the floor).
        """
        floors = [instance_floor(areas.get(c, [])) for c in self.class_ids]
        medians = [float(np.median(areas[c])) if len(areas.get(c, [])) else 0.0 for c in self.class_ids]
        self.min_areas.copy_(torch.tensor(floors, dtype=torch.long))
        self.median_areas.copy_(torch.tensor(medians, dtype=torch.float64))

    @property
    def num_inputs(self) -> int:
        """Features per pixel: the filter bank's plus one coarse map per class."""
        return int(self.shift.numel())

    def _bank(self, rgb: np.ndarray, reuse: bool = False) -> Tensor:
        mean = np.asarray(IMAGENET_MEAN, np.float32)
        std = np.asarray(IMAGENET_STD, np.float32)
        x = torch.from_numpy(((np.asarray(rgb, np.float32) - mean) / std).transpose(2, 0, 1).copy())
        out = None
        if reuse:  # this thread's buffer, kept for its next strip or target (release_workspace frees it)
            shape = (1, self.bank.num_features, *rgb.shape[:2])
            out = self._workspace.get(threading.get_ident())
            if out is None or tuple(out.shape) != shape:
                out = self._workspace[threading.get_ident()] = torch.empty(shape)
        with torch.no_grad():
            return self.bank(x[None], out=out)[0]

    def release_workspace(self) -> None:
        """Free the per-thread feature buffers of :meth:`refine` (the engine calls it when a run ends)."""
        self._workspace.clear()

    def __getstate__(self) -> dict[str, Any]:  # (copies and pickles carry no buffers)
        return {**self.__dict__, "_workspace": {}}

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

    def strips(self, rgb: np.ndarray, coarse: np.ndarray | None,
               reuse: bool = False) -> Iterator[tuple[slice, Tensor]]:
        """``(rows, (n_pixels, num_inputs) features)`` of horizontal strips of the image.

        ``rgb`` is ``(H, W, 3)`` float in [0, 1] (as :func:`~sine_model.preprocess.transforms.to_rgb_float`
        gives),
        stretched per channel first (:meth:`stretch`); ``coarse`` the model's ``(C, H, W)`` class maps
        (None when the refiner does not read them: ``use_model_maps=False``).
        Each strip is filtered with :data:`STRIP_MARGIN` rows of context. ``reuse``: the filter bank
        writes into one buffer per thread, so a strip's features are overwritten by the next strip's (or
        the next image's, in the same thread): for callers done with each strip before asking for the next.
        """
        height = rgb.shape[0]
        if not np.isfinite(rgb).all():  # (features of finite pixels are finite: the forest need not check)
            raise ValueError("the image has NaN or infinite pixels: replace them (e.g. np.nan_to_num) first")
        rgb = self.stretch(rgb)
        if coarse is None:
            if self.use_model_maps:
                raise ValueError("this refiner reads the model's class maps: pass them as coarse")
        elif coarse.shape != (len(self.class_ids), *rgb.shape[:2]):
            raise ValueError(f"coarse maps {coarse.shape} do not match {len(self.class_ids)} classes and "
                             f"the image's {rgb.shape[:2]}")
        # strips start at multiples of 16 rows, so the filter bank's pyramid levels (down to 1/16) see
        # the same pixel blocks as on the whole image
        strip_rows = max(16, STRIP_PIXELS // max(1, rgb.shape[1]) // 16 * 16)
        for top in range(0, height, strip_rows):
            rows = slice(top, min(height, top + strip_rows))
            lo, hi = max(0, top - STRIP_MARGIN), min(height, rows.stop + STRIP_MARGIN)
            bank = self._bank(rgb[lo:hi], reuse)[:, rows.start - lo: rows.stop - lo]
            if self.basic_channels:
                bank = torch.cat([bank, self._basic(rgb[lo:hi])[:, rows.start - lo: rows.stop - lo]])
            if self.use_model_maps:
                maps = torch.from_numpy(np.ascontiguousarray(coarse[:, rows], dtype=np.float32))
                bank = torch.cat([bank, maps])
            yield rows, bank.flatten(1).T

    def forward(self, features: Tensor) -> Tensor:
        """``(N, num_inputs)`` features → ``(N, num_outputs)`` logits of the MLP (background, classes,
        border)."""
        return self.head((features - self.shift) / self.spread)

    def set_forest(self, forest: Any | None) -> None:
        """Average the MLP's answer with a fitted random forest's (``sklearn.ensemble``
        ``RandomForestClassifier`` on the same features, targets 0..num_outputs-1; None: the MLP alone).

        Two pixel classifiers of different kinds err on different pixels: their mean was better than
        either on the shared evaluation sets (docs/quality.md).
        """
        self.forest = forest

    @torch.no_grad()
    def probabilities(self, features: Tensor) -> Tensor:
        """``(N, num_inputs)`` features → ``(N, num_outputs)`` probabilities: the MLP's softmax, averaged
        with the forest's where one is set (:meth:`set_forest`). An inference call (no gradient; training
        calls the MLP itself).

        The MLP runs on chunks of :data:`MLP_CHUNK` pixels read from the filter bank's layout without a
        copy, the input normalisation folded into the first layer, and the softmax over the 5 or so
        outputs is taken on the transposed logits (one row per output): 1.8× faster than
        :meth:`forward` then a softmax per pixel, with float rounding about 1e-7 apart. Like the filter
        bank's features, the values may differ in their last bit with the thread count (vectorised and
        scalar ends of a thread's share round differently). The result is a transposed view of a
        ``(num_outputs, N)`` tensor.
        """
        probs = self._mlp_probabilities(features).T
        if self.forest is None:
            return probs
        known = _forest_probabilities(self.forest, features.detach().cpu().numpy())
        known = torch.from_numpy(known).to(probs)
        classes = torch.as_tensor(self.forest.classes_, dtype=torch.long)  # (a class it never saw: 0)
        if torch.equal(classes, torch.arange(self.num_outputs)):
            probs += known
        else:
            probs[:, classes] += known
        return probs.div_(2)

    def _mlp_probabilities(self, features: Tensor) -> Tensor:
        """The MLP's softmax of ``(N, num_inputs)`` features as a ``(num_outputs, N)`` tensor."""
        layers = list(self.head)
        plain = isinstance(layers[0], nn.Linear) and all(
            isinstance(m, ELEMENTWISE) or (isinstance(m, nn.Linear) and m.bias is not None) for m in layers)
        if not plain:  # (a head of other layers: as the MLP itself)
            return torch.softmax(self(features), -1).T.contiguous()
        linear = [m for m in layers if isinstance(m, nn.Linear)]
        weights = [linear[0].weight / self.spread] + [m.weight for m in linear[1:]]  # normalisation folded
        biases = [linear[0].bias - weights[0] @ self.shift] + [m.bias for m in linear[1:]]
        probs = features.new_empty(self.num_outputs, len(features))
        for start in range(0, len(features), MLP_CHUNK):  # (a chunk's activations stay in the CPU's caches)
            cols = slice(start, start + MLP_CHUNK)
            x, k = features[cols], 0
            for layer in layers:
                if isinstance(layer, nn.Linear):
                    x, k = F.linear(x, weights[k], biases[k]), k + 1
                else:
                    x = layer(x)
            x = x.T
            probs[:, cols] = torch.softmax(x, 0)
        return probs

    def refine(self, rgb: np.ndarray, coarse: np.ndarray | None) -> RefinedMaps:
        """The refined class maps of one image (see :class:`RefinedMaps`), inputs as for :meth:`strips`."""
        height, width = rgb.shape[:2]
        probs = np.zeros((self.num_outputs, height, width), np.float32)
        with torch.no_grad():
            for rows, features in self.strips(rgb, coarse, reuse=True):
                out = self.probabilities(features).T.reshape(self.num_outputs, rows.stop - rows.start, width)
                probs[:, rows] = out.numpy()
        n = len(self.class_ids)
        classes, background, border = probs[1:1 + n], probs[0], probs[-1]
        best = classes.argmax(0)
        # the border share goes to the most likely class: it belongs to an object either way
        class_probs = classes.copy()
        top = np.take_along_axis(classes, best[None], 0)[0]
        np.put_along_axis(class_probs, best[None], (top + border)[None], 0)
        # object where background is not the most likely answer, seeds where a class is (the forest +
        # border baseline's rule; "object more likely than background" grew objects into each other)
        foreground = background < np.maximum(top, border)
        lut = np.asarray(self.class_ids, np.int64)
        label_map = np.where(foreground, lut[best], 0)
        seeds = foreground & (top > border)
        floors = dict(zip(self.class_ids, self.min_areas.tolist(), strict=True))
        medians = dict(zip(self.class_ids, self.median_areas.tolist(), strict=True))
        return RefinedMaps(class_probs, label_map, seeds, heights=classes, min_areas=floors,
                           median_areas=medians)


def _forest_probabilities(forest: Any, features: np.ndarray) -> np.ndarray:
    """``forest.predict_proba(features)`` (a fitted ``RandomForestClassifier`` of one output), computed on
    blocks of pixels in parallel threads (as many as torch's intra-op threads: the engine's choice).

    Each tree's answer is its leaf's class fractions, added up tree by tree in float64 and divided by the
    number of trees, as scikit-learn does, so the values are the same to the bit; they come out in the
    ``(n_classes, N)`` layout the refiner stores (returned transposed), which saved a sixth of the time.
    The trees release the GIL while they find the leaves, and each pixel's answer is computed as in one
    call, so the result is the same for any number of threads.
    """
    n_classes = int(forest.n_classes_)
    trees = [(tree.tree_, np.array(tree.tree_.value[:, 0, :n_classes].T, dtype=np.float64, order="C"))
             for tree in forest.estimators_]  # per tree: (structure, (n_classes, nodes) leaf fractions)
    features = np.asarray(features, dtype=np.float32)  # (finite: strips() checks the image)

    def block(rows: np.ndarray) -> np.ndarray:
        sums = np.zeros((n_classes, len(rows)))
        for start in range(0, len(rows), FOREST_CACHE_PIXELS):  # all trees on pixels still in the cache
            cols = slice(start, start + FOREST_CACHE_PIXELS)
            pixels, part = rows[cols], sums[:, cols]
            for structure, fractions in trees:
                leaves = structure.apply(pixels)
                for k in range(n_classes):
                    part[k] += fractions[k].take(leaves)
        sums /= len(trees)
        return sums

    threads = min(torch.get_num_threads(), len(features) // FOREST_MIN_BLOCK)
    if threads < 2:
        return block(features).T
    with ThreadPoolExecutor(threads) as pool:
        return np.concatenate(list(pool.map(block, np.array_split(features, threads))), axis=1).T
