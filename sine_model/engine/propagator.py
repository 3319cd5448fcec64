"""The propagation engine: labelled reference images in, label proposals for many targets out.

:class:`Propagator` follows segment-anything's predictor pattern: references are encoded and pooled
once (:meth:`Propagator.set_references`), then :meth:`Propagator.propagate` streams one
:class:`TargetResult` per target from a generator. Encoder features are cached by content, so new
references do not re-encode the targets. Images larger than the model input are processed in
overlapping tiles (references too: their tiles act as extra shots) and stitched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sine_model.engine.adjustable_settings import AdjustableSettings
from sine_model.engine.cached_encoder import CachedEncoder
from sine_model.engine.concurrent_targets import ConcurrentAnswers
from sine_model.engine.concurrent_targets import targets_at_once as targets_at_once_for
from sine_model.engine.device import select_device, select_precision, set_num_threads
from sine_model.engine.feature_cache import FeatureCache
from sine_model.engine.id_answers import IdAnswers
from sine_model.engine.inputs import (
    PropagationError,
    check_reference_pairs,
    count_targets,
    iter_targets,
    validate_targets,
)
from sine_model.engine.memory import TimelapseMemory
from sine_model.engine.reference_tiles import ReferenceTiles, class_map, reference_inputs
from sine_model.engine.resources import check_propagator_target
from sine_model.engine.stitching import ObjectScore, TargetResult, TileOutput, assemble_target
from sine_model.engine.tiling import Tile, auto_batch_size, plan_tiles
from sine_model.modeling.context import ReferenceTokens
from sine_model.modeling.sine import SINE
from sine_model.modes import DEFAULT_THRESHOLDS, INSTANCE_SOURCES, MODES, check_thresholds
from sine_model.postprocess.components import min_areas_by_class
from sine_model.postprocess.id_matching import ID_SOURCES
from sine_model.postprocess.pixel_refiner import PixelRefiner
from sine_model.preprocess.projection import ReferenceProjection, fit_reference_projection
from sine_model.preprocess.transforms import Geometry, rgb_to_model_input, to_rgb_float

__all__ = ["Propagator", "TargetResult", "ObjectScore", "PropagationError", "MODES", "DEFAULT_THRESHOLDS"]

#: Input side of a model that carries no preset (the official FSS evaluation's 896).
OFFICIAL_PAD = 896


class Propagator(AdjustableSettings, IdAnswers, ConcurrentAnswers):
    """Propagate labels from reference images to target images with a SINE model.

    Parameters
    ----------
    model : SINE
        The model (put in eval mode and moved to ``device``).
    device : str or torch.device, optional
        ``None``/``"auto"`` picks CUDA, then MPS, then CPU.
    precision : {"auto", "fp32", "bf16", "fp16"}, optional
        Autocast precision for the model call only; ``None``/``"auto"`` is fp32 on CPU/MPS and bf16
        (or fp16) on CUDA.
    pad : int, optional
        Model input side P (multiple of 14). Default: the input side of the model's ``preset`` (set by
        :func:`~sine_model.hub.pretrained.from_pretrained`: official weights 896, the embedded model 224),
        else 896.
    scale : float, optional
        Resize factor applied to references and targets before tiling (1 = native pixels). Images whose
        scaled size fits in P are padded, never enlarged. Default: chosen from the reference objects'
        size by :meth:`set_references` (:mod:`sine_model.engine.object_scale`; ``scale_choice`` says
        which and why).
    tile_overlap : int, optional
        Overlap of neighbouring tiles in model-input pixels (default P // 4).
    batch_size : int, optional
        Tiles encoded and decoded per model call (tiles of several targets are batched together).
        Default: :func:`~sine_model.engine.tiling.auto_batch_size` (about a million input pixels per
        call: 20 tiles at 224, 1 at 896), from one target at a time (each result streams as soon as its
        target is done); a number batches tiles of several targets (read ahead) into calls of that size.
    cache_bytes : int
        Budget of the encoder-feature cache (0 disables it).
    score_thresholds : mapping, optional
        Per-mode thresholds overriding :data:`DEFAULT_THRESHOLDS`.
    channel_axis : int, optional
        Channel axis of 3D (multichannel) images.
    dense_refinement : int
        How many times a target whose instance proposals saturate a tile (≥ 90 % of the instance queries)
        is re-processed with tiles of half the side, so targets with more objects than queries are
        covered (0 disables).
    instance_source : {"queries", "semantic"}, optional
        How the instance answer is made: from SINE's instance queries (official), or as the connected
        components of the semantic answer (:mod:`sine_model.postprocess.components`: each class split by
        the rule — connected components or a distance-transform watershed — that best rebuilds the
        reference labels; pieces under a tenth of the median reference object, or scoring under the
        instance threshold, are dropped). Default: the model's ``preset``'s, else "queries".
    id_source : {"queries", "matching"}, optional
        How the ID answer is made: from SINE's ID queries (official), or by matching the instance answer's
        objects to the reference objects (:mod:`sine_model.postprocess.id_matching`). Default: the model's
        ``preset``'s, else "queries".
    project_inputs : bool
        Feed the model the references' grey projection (:mod:`sine_model.preprocess.projection`: the
        colour direction separating reference objects from background, objects bright) of every image
        instead of the image; fitted by :meth:`set_references`. Off by default;
        :func:`~sine_model.fitting.calibration.calibrate` turns it on when it helps.
    num_threads : int, optional
        Torch intra-op threads (set process-wide). Default: the ``SINE_NUM_THREADS`` environment variable,
        else the cores the process may use minus ``reserve_cores``, never more than torch's current setting
        nor than the cores other jobs leave idle (:func:`~sine_model.engine.device.choose_num_threads`).
    reserve_cores : int
        Cores left to others when the thread count is chosen (the napari plugin leaves its GUI one).
    targets_at_once : int, optional
        Targets answered at once, each on its own thread with its share of ``num_threads``, where a
        refiner alone answers (no model pass, no time-lapse memory; results still come in target order:
        :mod:`~sine_model.engine.concurrent_targets`). Default: ``num_threads`` (one thread per target),
        never more than the run's targets nor than free memory allows; 1 answers one target at a time.
    """

    def __init__(
        self,
        model: SINE,
        device: str | torch.device | None = None,
        precision: str | None = None,
        *,
        pad: int | None = None,
        scale: float | None = None,
        tile_overlap: int | None = None,
        batch_size: int | None = None,
        cache_bytes: int = 1 << 30,
        score_thresholds: Mapping[str, float] | None = None,
        channel_axis: int | None = None,
        dense_refinement: int = 1,
        instance_source: str | None = None,
        id_source: str | None = None,
        project_inputs: bool = False,
        num_threads: int | None = None,
        reserve_cores: int = 0,
        targets_at_once: int | None = None,
    ) -> None:
        patch = model.patch_size
        preset = getattr(model, "preset", None)  # set by from_pretrained; None for a model built here
        pad = (preset.input.pad_size if preset is not None else OFFICIAL_PAD) if pad is None else pad
        instance_source = instance_source or (preset.instance_source if preset is not None else "queries")
        if instance_source not in INSTANCE_SOURCES:
            raise ValueError(f"instance_source must be one of {INSTANCE_SOURCES}, got {instance_source!r}")
        if pad <= 0 or pad % patch:
            raise ValueError(f"pad must be a positive multiple of {patch}, got {pad}")
        # automatic: each target's tiles in calls of the pixel budget, results streamed target by target
        self._per_target_batches = batch_size is None
        batch_size = auto_batch_size(pad) if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        overlap = pad // 4 if tile_overlap is None else int(tile_overlap)
        if not 0 <= overlap < pad // 2:
            raise ValueError(f"tile_overlap must be in [0, {pad // 2}), got {overlap}")
        thresholds = check_thresholds(score_thresholds)  # unknown modes and NaN refused here
        self.device = select_device(device)
        self.num_threads = set_num_threads(num_threads, reserve_cores)
        self.targets_at_once = targets_at_once if targets_at_once is None else \
            targets_at_once_for(self.num_threads, targets_at_once, None)  # (checks it)
        self.autocast_dtype = select_precision(self.device, precision)
        self.model = model.eval().to(self.device)
        self.model_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())  # memory guard
        self.pad, self.batch_size, self._overlap = pad, batch_size, overlap
        self.set_scale(scale)  # None: automatic, chosen by set_references
        self.thresholds = {**DEFAULT_THRESHOLDS, **thresholds}
        self.channel_axis = channel_axis
        self.dense_refinement = max(0, int(dense_refinement))
        self.instance_source = instance_source
        self.id_source = id_source or getattr(preset, "id_source", "queries")  # "matching": from instances
        if self.id_source not in ID_SOURCES:
            raise ValueError(f"id_source must be one of {ID_SOURCES}, got {self.id_source!r}")
        self._id_objects = None  # what matching needs of the references (set with them)
        self._min_area: dict[int, int] = {}  # per class, for instances from the semantic answer
        self._instance_steps: dict | None = None  # per class, chosen on the references when first needed
        self._calibrated_steps: dict | None = None  # per class, from calibrate(): wins over the above
        self.project_inputs = bool(project_inputs)
        self._projection: ReferenceProjection | None = None  # fitted by set_references when projecting
        self._ref_labels: tuple[list[np.ndarray], dict[int, int]] = ([], {})
        self.refiner: PixelRefiner | None = None  # full-resolution refinement, fitted on the references
        self.instance_topk = self.model.transformer_decoder.num_queries
        self._encoder = CachedEncoder(self.model, self.device, self.autocast_dtype, pad, cache_bytes)
        self._reference: ReferenceTiles | None = None
        self._tokens: ReferenceTokens | None = None
        self._ref_ndim = 2
        self._ref_channels = 1

    # -- references -------------------------------------------------------------------------------

    def set_references(
        self, pairs: Sequence[tuple[Any, Any]], classes: Mapping[int, int] | None = None
    ) -> None:
        """Encode reference (image, label image) pairs once; every nonzero label is one object.

        Parameters
        ----------
        pairs : sequence of (image, labels)
            Images (2D, or 3D with channels) and integer label images of the same height and width.
        classes : mapping, optional
            Label value → class id (positive). Default: all objects are class 1.
        """
        checked = check_reference_pairs(pairs, self.channel_axis)
        class_of = self._class_map(classes, [labels for _, labels, _, _ in checked])
        rgbs = [to_rgb_float(image, channel_axis=self.channel_axis) for image, _, _, _ in checked]
        self._projection = fit_reference_projection(rgbs, [lab for _, lab, _, _ in checked]) \
            if self.project_inputs else None
        label_images = [labels for _, labels, _, _ in checked]
        self._describe_id_references(rgbs, label_images)
        self._fit_scale_to_objects(label_images, class_of)  # no scale given: from the objects' size
        shots = reference_inputs([self._projected(rgb) for rgb in rgbs], label_images, class_of,
                                 self.tile_extent, self.overlap_extent, self.pad, self._geometry, self.device)
        with torch.inference_mode():
            images = torch.cat(shots.images)
            features = torch.cat([self._encode(images[i : i + self.batch_size])
                                  for i in range(0, len(images), self.batch_size)])
            reference = ReferenceTiles(features, shots.masks, shots.classes, shots.ids, shots.id_sources)
            self._tokens = self.model.reference_tokens(features, shots.masks, shots.classes, shots.ids)
        self._reference = reference
        self._min_area = min_areas_by_class(label_images, class_of)
        self.refiner = None  # fitted on other references (fit_refiner sets it after the references)
        self._ref_labels, self._instance_steps = (label_images, class_of), None
        self._ref_ndim = checked[0][0].ndim
        self._ref_channels = checked[0][3]  # (all the same: checked)

    @staticmethod
    def _class_map(classes: Mapping[int, int] | None, label_images: list[np.ndarray]) -> dict[int, int]:
        return class_map(classes, label_images)

    def _projected(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self._projection is None else self._projection.apply(rgb)

    def semantic_classes(self) -> list[int]:
        """The class ids of the references, in the order of the semantic map's channels."""
        self._require_references()
        return [int(c) for c in self._tokens.sem_labels.tolist()]

    # -- targets ----------------------------------------------------------------------------------

    def count_targets(self, targets: Any, stack_axis: int | None = None) -> int | None:
        """How many results :meth:`propagate` will yield for ``targets`` (None for a generator)."""
        return count_targets(targets, stack_axis)

    def validate_targets(self, targets: Any, stack_axis: int | None = None, check_values: bool = True) -> int:
        """Check all targets against the references before any work (raises PropagationError)."""
        self._require_references()
        return validate_targets(targets, stack_axis, self._ref_ndim, self._ref_channels,
                                self.channel_axis, check_values)

    def propagate(
        self,
        targets: Any,
        modes: Sequence[str] = MODES,
        stack_axis: int | None = None,
        memory: bool = False,
        keep_maps: bool = False,
    ) -> Iterator[TargetResult]:
        """Yield one :class:`TargetResult` per target, as soon as it is ready.

        Parameters
        ----------
        targets : array, stack, list or iterable of arrays, or lazy array (dask, zarr)
            What to segment. With ``stack_axis`` an array is a stack of targets along that axis; a
            generator is consumed one image at a time.
        modes : sequence of {"id", "instance", "semantic"}
            Which proposals to make.
        stack_axis : int, optional
            Axis of the stack in ``targets``.
        memory : bool
            Time-lapse mode for ID: earlier predicted frames become extra references (official VOS
            recipe: fixed reference + up to 5 scored frames, linear score decay over 20 frames).
        keep_maps : bool
            Keep the model's stitched per-class map ``(C, H, W)`` (before any refinement; channels in
            :meth:`semantic_classes` order) on each result as ``semantic_maps``.
        """
        self._require_references()
        modes = tuple(dict.fromkeys(modes))
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise PropagationError(f"unknown or no modes {bad}: choose from {', '.join(MODES)}")
        if memory and "id" not in modes:
            raise PropagationError("memory mode improves ID proposals: include 'id' in modes")
        return self._run(targets, modes, stack_axis, memory, keep_maps)

    def _run(self, targets: Any, modes: tuple[str, ...], stack_axis: int | None,
             memory: bool, keep_maps: bool = False) -> Iterator[TargetResult]:
        timeline = TimelapseMemory() if memory else None
        planned = self._planned_targets(targets, stack_axis, timeline, len(modes))
        try:
            if not self._model_pass_needed(self._model_modes(modes), keep_maps, memory):
                at_once = targets_at_once_for(self.num_threads, self.targets_at_once,
                                              count_targets(targets, stack_axis))
                if at_once > 1:
                    yield from self._answer_concurrently(planned, modes, at_once)
                    return
            pending: list[tuple[int, np.ndarray, list[Tile]]] = []
            tiles_pending = 0
            for index, rgb, tiles in planned:
                pending.append((index, rgb, tiles))
                tiles_pending += len(tiles)
                if timeline is not None or tiles_pending >= self.batch_size or self._per_target_batches:
                    yield from self._process(pending, modes, timeline, self.tile_extent, keep_maps=keep_maps)
                    pending, tiles_pending = [], 0
            if pending:
                yield from self._process(pending, modes, timeline, self.tile_extent, keep_maps=keep_maps)
        finally:
            if self.refiner is not None:
                self.refiner.release_workspace()  # its per-thread feature buffers live for one run

    def _planned_targets(self, targets: Any, stack_axis: int | None, timeline: TimelapseMemory | None,
                         n_modes: int) -> Iterator[tuple[int, np.ndarray, list[Tile]]]:
        """Each target read, as float RGB, with its tiles; refused (before any work on it) when it cannot
        fit in memory or in one tile where the time-lapse memory needs that."""
        stream = iter_targets(targets, stack_axis, self._ref_ndim, self._ref_channels, self.channel_axis)
        for index, image in enumerate(stream):
            rgb = to_rgb_float(image, channel_axis=self.channel_axis)  # projected tile by tile (per pixel)
            tiles = plan_tiles(*rgb.shape[:2], self.tile_extent, self.overlap_extent)
            check_propagator_target(self, index, *rgb.shape[:2], len(tiles), n_modes)  # refuse, not OOM
            if timeline is not None and len(tiles) > 1:
                raise PropagationError(
                    f"target {index} needs {len(tiles)} tiles; memory mode needs targets that fit one "
                    f"model input ({self.tile_extent} px): lower the scale"
                )
            yield index, rgb, tiles

    def _process(self, pending: list[tuple[int, np.ndarray, list[Tile]]], modes: tuple[str, ...],
                 timeline: TimelapseMemory | None, extent: int, depth: int = 0,
                 keep_maps: bool = False) -> Iterator[TargetResult]:
        jobs = [(n, tile) for n, (_, _, tiles) in enumerate(pending) for tile in tiles]
        if not self._model_pass_needed(self._model_modes(modes), keep_maps, timeline is not None):
            jobs = []  # the refiner answers from the image alone: nothing of a model pass would be read
        geometries = [self._geometry(tile) for _, tile in jobs]
        tensors = [rgb_to_model_input(self._projected(pending[n][1][tile.slices]), g.valid_hw, self.pad)
                   for (n, tile), g in zip(jobs, geometries, strict=True)]
        outputs: list[list[TileOutput]] = [[] for _ in pending]
        tile_modes = self._model_modes(modes)  # matching makes the ID answer from the instance answer
        if (self.instance_source == "semantic" or self.refiner is not None) and "instance" in tile_modes:
            # instances come from the class map
            tile_modes = tuple(dict.fromkeys(m if m != "instance" else "semantic" for m in tile_modes))
        with torch.inference_mode():
            assert self._tokens is not None and self._reference is not None
            tokens = self._tokens if timeline is None else timeline.tokens(self.model, self._tokens,
                                                                           self._reference)
            for start in range(0, len(jobs), self.batch_size):
                stop = start + self.batch_size
                features = self._encode(torch.cat(tensors[start:stop]))
                with self._encoder.autocast():
                    raw = self.model.decode(features, tokens, return_aux=False)
                for b, ((n, tile), geometry) in enumerate(zip(jobs[start:stop], geometries[start:stop],
                                                               strict=True)):
                    outputs[n].append(TileOutput.from_raw(raw, b, tile, geometry, tokens, tile_modes,
                                                          self.thresholds, self.instance_topk))
                    if timeline is not None:
                        timeline.add_prediction(pending[n][0], features[b], raw, b, geometry.valid_hw,
                                                self.pad, tokens.ids.tolist())
        for n, (index, rgb, _) in enumerate(pending):
            if self._needs_refinement(outputs[n], timeline, extent, depth):
                # More objects than queries in a tile: redo this target with tiles of half the side.
                half = extent // 2
                tiles = plan_tiles(*rgb.shape[:2], half, min(self.overlap_extent // 2, half - 1))
                yield from self._process([(index, rgb, tiles)], modes, None, half, depth + 1, keep_maps)
            else:
                yield self._assemble(index, rgb, outputs[n], modes, tokens, keep_maps)

    def _needs_refinement(self, outputs: list[TileOutput], timeline: TimelapseMemory | None, extent: int,
                          depth: int) -> bool:
        if timeline is not None or depth >= self.dense_refinement or extent // 2 < 4 * self.model.patch_size:
            return False
        limit = 0.9 * self.instance_topk
        return any(out.instance is not None and len(out.instance) >= limit for out in outputs)

    def _assemble(self, index: int, rgb: np.ndarray, tiles: list[TileOutput], modes: tuple[str, ...],
                  tokens: ReferenceTokens, keep_maps: bool = False) -> TargetResult:
        made = self._model_modes(modes)
        wanted = self.instance_source == "semantic" and "instance" in made and self.refiner is None
        steps = self.instance_steps() if wanted else None  # chosen on the references when first needed
        sources = self._reference.id_sources if self._reference else {}
        result = assemble_target(index, rgb, tiles, made, tokens.sem_labels.tolist(), self.thresholds,
                                 instance_source=self.instance_source, min_area=self._min_area, steps=steps,
                                 refiner=self.refiner, id_sources=sources, keep_maps=keep_maps)
        return self._ids_by_matching(result, rgb, modes, sources)

    # -- model calls ------------------------------------------------------------------------------

    def _geometry(self, tile: Tile) -> Geometry:
        height, width = tile.shape
        valid = (min(self.pad, max(1, round(height * self.scale))),
                 min(self.pad, max(1, round(width * self.scale))))
        return Geometry(pad=self.pad, valid_hw=valid, original_hw=(height, width))

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """Neck features for (B, 3, P, P) images; encoder features come from the cache when possible."""
        return self._encoder.encode(self.model, images)

    @property
    def cache(self) -> FeatureCache:
        """The cache of encoder features (shared by references and targets)."""
        return self._encoder.cache

    def clear_cache(self) -> None:
        """Forget cached encoder features (call after changing encoder weights in place)."""
        self._encoder.clear(self.model)

    def _require_references(self) -> None:
        if self._tokens is None:
            raise PropagationError("no references set: call set_references() with labelled images first")
