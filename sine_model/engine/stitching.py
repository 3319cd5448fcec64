"""From per-tile model outputs to one label map per mode, with the best score winning overlaps.

* ID: each tile contributes the part of an object's mask inside its core; the same id keeps its
  reference label value everywhere.
* Instance: a tile keeps the instances centred in its core (neighbours see the same object whole when
  the overlap is wider than the object); instances mostly hidden by better-scored ones (< 50 % visible)
  are dropped; survivors get fresh ids 1..n by descending score.
* Semantic: each tile writes its core of the (unnormalised) class map; the map is thresholded last.
  Instances may instead be the components of that class map (:func:`semantic_instances`).
* :func:`assemble_target` turns one target's tile outputs into its :class:`TargetResult`, through the
  full-resolution refiner (:mod:`sine_model.postprocess.pixel_refiner`) when one is fitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sine_model.engine.tiling import Tile
from sine_model.labelmaps import ScoreCanvas, smallest_label_dtype
from sine_model.modeling.context import ReferenceTokens
from sine_model.postprocess.components import semantic_components
from sine_model.postprocess.decode import (
    Detections,
    id_inference,
    instance_inference,
    semantic_label_map,
)
from sine_model.postprocess.instance_split import InstanceStep
from sine_model.postprocess.joint_decode import instance_semantic_inference
from sine_model.postprocess.semantic_region import semantic_region_inference
from sine_model.preprocess.transforms import Geometry

__all__ = ["ObjectScore", "TargetResult", "assemble_target",
           "TileOutput", "stitch_id", "stitch_instances", "stitch_semantic", "stitch_semantic_maps",
           "semantic_answer", "semantic_instances", "MIN_VISIBLE_FRACTION"]

MIN_VISIBLE_FRACTION = 0.5


@dataclass(frozen=True)
class ObjectScore:
    """One proposed object: which target, its label value in the mode's map, its score and origin."""

    target: int
    label: int
    mode: str
    score: float
    source: str


@dataclass
class TargetResult:
    """Proposals for one target: a label map per mode at the target's size, and per-object scores."""

    index: int
    labels: dict[str, np.ndarray]
    scores: list[ObjectScore]
    shape: tuple[int, int]
    semantic_maps: np.ndarray | None = None  # (C, H, W) model map before refinement, if asked for


@dataclass
class TileOutput:
    """Post-processed proposals of one tile, in tile coordinates at the original resolution."""

    tile: Tile
    id: Detections | None = None
    instance: Detections | None = None
    semantic: np.ndarray | None = None  # (M, core_h, core_w) float32, already cropped to the core

    @classmethod
    def from_raw(cls, raw: dict, b: int, tile: Tile, geometry: Geometry, tokens: ReferenceTokens,
                 modes: tuple[str, ...], thresholds: dict[str, float],
                 instance_topk: int = 100) -> TileOutput:
        """Post-process item ``b`` of a batched decoder output for the requested modes.

        ``instance_topk`` bounds the (query, class) pairs kept per tile (official FSOD: 100; the engine
        uses the number of instance queries so a tile can hold as many objects as there are queries).
        """
        out = cls(tile)
        if "id" in modes:
            out.id = _cpu(id_inference(raw["pred_id_logits"][b].float(), raw["pred_id_masks"][b].float(),
                                       tokens.ids, geometry, score_threshold=thresholds["id"]))
        if "instance" in modes and "semantic" in modes:  # one upsampling of the query masks for both
            detections, probs = instance_semantic_inference(
                raw["pred_ins_logits"][b].float(), raw["pred_ins_masks"][b].float(), tokens.sem_labels,
                geometry, score_threshold=thresholds["instance"], topk=instance_topk)
            out.instance = _cpu(detections)
            out.semantic = probs[(slice(None), *tile.core_in_tile)].cpu().numpy()
            return out
        if "instance" in modes:
            out.instance = _cpu(instance_inference(
                raw["pred_ins_logits"][b].float(), raw["pred_ins_masks"][b].float(), tokens.sem_labels,
                geometry, score_threshold=thresholds["instance"], topk=instance_topk))
        if "semantic" in modes:  # only the core is kept: only the core is upsampled
            out.semantic = semantic_region_inference(raw["pred_ins_logits"][b].float(),
                                                     raw["pred_ins_masks"][b].float(), geometry,
                                                     tile.core_in_tile).cpu().numpy()
        return out


def _cpu(det: Detections) -> Detections:
    return Detections(det.masks.cpu(), det.scores.cpu(), det.labels.cpu(), det.query_index.cpu())


def stitch_id(shape: tuple[int, int], tiles: list[TileOutput],
              threshold: float) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """ID label map (reference label values) and (label, best score) of every visible object."""
    canvas = ScoreCanvas(shape)
    best: dict[int, float] = {}
    for out in tiles:
        det, tile = out.id, out.tile
        assert det is not None
        core = tile.core_in_tile
        for mask, score, label in zip(det.masks.numpy(), det.scores.tolist(), det.labels.tolist(),
                                      strict=True):
            if score <= threshold:
                continue
            part = mask[core]
            if part.any():
                canvas.paint(part, label, score, (tile.cy0, tile.cx0))
                best[label] = max(score, best.get(label, -np.inf))
    label_map = canvas.finish()
    visible = set(np.unique(label_map).tolist()) - {0}
    return label_map, sorted((k, v) for k, v in best.items() if k in visible)


def stitch_instances(shape: tuple[int, int], tiles: list[TileOutput],
                     threshold: float) -> tuple[np.ndarray, list[tuple[int, float, int]]]:
    """Instance label map with fresh ids and (id, score, class) rows, best score first."""
    canvas = ScoreCanvas(shape)
    kept: list[tuple[int, float, int, np.ndarray, tuple[int, int]]] = []
    for out in tiles:
        det, tile = out.instance, out.tile
        assert det is not None
        for mask, score, label in zip(det.masks.numpy(), det.scores.tolist(), det.labels.tolist(),
                                      strict=True):
            if score <= threshold or not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            if not tile.owns(tile.y0 + ys.mean(), tile.x0 + xs.mean()):
                continue  # centred in a neighbour's core: that tile reports it
            value = len(kept) + 1
            canvas.paint(mask, value, score, (tile.y0, tile.x0))
            kept.append((value, score, label, mask, (tile.y0, tile.x0)))
    survivors = [k for k in kept if canvas.visible_fraction(k[3], k[0], k[4]) >= MIN_VISIBLE_FRACTION]
    survivors.sort(key=lambda k: -k[1])
    lookup = np.zeros(len(kept) + 1, dtype=np.int64)
    for new_id, (value, *_rest) in enumerate(survivors, start=1):
        lookup[value] = new_id
    relabelled = lookup[canvas.labels]
    label_map = relabelled.astype(smallest_label_dtype(len(survivors)))
    rows = [(new_id, score, label) for new_id, (_, score, label, _, _) in enumerate(survivors, start=1)]
    return label_map, rows


def stitch_semantic_maps(shape: tuple[int, int], tiles: list[TileOutput], sem_labels: list[int],
                         threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The stitched per-class map ``(C, H, W)`` and the class map thresholded from it.

    Both the semantic answer (:func:`semantic_answer`) and instances made from it
    (:func:`semantic_instances`) read this pair, so a target's map is stitched once.
    """
    probs = np.zeros((len(sem_labels), *shape), dtype=np.float32)
    for out in tiles:
        assert out.semantic is not None
        probs[(slice(None), *out.tile.core_slices)] = out.semantic
    return probs, semantic_label_map(torch.from_numpy(probs), torch.tensor(sem_labels), threshold)


def semantic_instances(maps: tuple[np.ndarray, np.ndarray], sem_labels: list[int],
                       min_area: int | Mapping[int, int] = 1, min_score: float = float("-inf"),
                       steps: Mapping[int, InstanceStep] | None = None,
                       ) -> tuple[np.ndarray, list[tuple[int, float, int]]]:
    """Instances as the components of the stitched class map (see :mod:`sine_model.postprocess.components`).

    Rows are (id, mean class map value inside, class); instances scoring under ``min_score`` are dropped;
    ``steps`` split each class's region (default: 4-connected components).
    """
    probs, label_map = maps
    scores = {cls: probs[channel] for channel, cls in enumerate(sem_labels)}
    return semantic_components(label_map, min_area, scores, min_score, steps)


def semantic_answer(maps: tuple[np.ndarray, np.ndarray],
                    sem_labels: list[int]) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """The class map of :func:`stitch_semantic_maps` and (class, mean map value inside the class) rows."""
    probs, label_map = maps
    rows = []
    for channel, cls in enumerate(sem_labels):
        inside = label_map == cls
        if inside.any():
            rows.append((cls, float(probs[channel][inside].mean())))
    top = int(label_map.max()) if label_map.size else 0
    return label_map.astype(smallest_label_dtype(top)), rows


def stitch_semantic(shape: tuple[int, int], tiles: list[TileOutput], sem_labels: list[int],
                    threshold: float) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Semantic class map and (class, mean map value inside the class) rows."""
    return semantic_answer(stitch_semantic_maps(shape, tiles, sem_labels, threshold), sem_labels)


def assemble_target(index: int, rgb: np.ndarray, tiles: list[TileOutput], modes: tuple[str, ...],
                    sem_labels: list[int], thresholds: Mapping[str, float], *, instance_source: str,
                    min_area: Mapping[int, int], steps: Mapping[int, InstanceStep] | None = None,
                    refiner: Any = None, id_sources: Mapping[int, str] | None = None,
                    keep_maps: bool = False) -> TargetResult:
    """One target's :class:`TargetResult` from its tiles' outputs (the last step of the engine).

    The semantic map is stitched once and shared by the semantic answer and instances made from it
    (``instance_source="semantic"``); a fitted ``refiner``
    (:class:`~sine_model.postprocess.pixel_refiner.PixelRefiner`) decides both again at full resolution
    from it and ``rgb`` (the target, ``(H, W, 3)`` float).
    ``keep_maps`` keeps the stitched map, before refinement, on the result.
    """
    shape = rgb.shape[:2]
    labels: dict[str, np.ndarray] = {}
    scores: list[ObjectScore] = []
    sources = id_sources or {}
    from_map = instance_source == "semantic" or refiner is not None
    reads_maps = refiner is None or refiner.use_model_maps  # a refiner on the image alone does not
    semantic_maps = refined = None
    if keep_maps or (reads_maps and ("semantic" in modes or (from_map and "instance" in modes))):
        semantic_maps = stitch_semantic_maps(shape, tiles, sem_labels, thresholds["semantic"])
    if refiner is not None and ("semantic" in modes or "instance" in modes):
        refined = refiner.refine(rgb, semantic_maps[0] if reads_maps else None)
    for mode in modes:
        threshold = thresholds[mode]
        if mode == "id":
            label_map, found = stitch_id(shape, tiles, threshold)
            rows = [(obj, s, sources.get(obj, "")) for obj, s in found]
        elif mode == "instance":
            if refined is not None:
                label_map, found = refined.instances(sem_labels, min_area, min_score=threshold)
            elif instance_source == "semantic":
                label_map, found = semantic_instances(semantic_maps, sem_labels, min_area,
                                                      min_score=threshold, steps=steps)
            else:
                label_map, found = stitch_instances(shape, tiles, threshold)
            rows = [(obj, s, f"class:{c}") for obj, s, c in found]
        else:
            maps = semantic_maps if refined is None else (refined.probs, refined.label_map)
            label_map, found = semantic_answer(maps, sem_labels)
            rows = [(c, s, f"class:{c}") for c, s in found]
        labels[mode] = label_map
        scores.extend(ObjectScore(index, int(v), mode, float(s), src) for v, s, src in rows)
    return TargetResult(index, labels, scores, shape,
                        semantic_maps[0] if keep_maps and semantic_maps is not None else None)
