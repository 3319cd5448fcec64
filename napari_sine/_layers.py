"""Proposal layers: one Labels layer per (target layer, mode), named ``<target> [SINE <mode>]``.

Proposal layers belong to napari-sine: runs create them (or reuse one of the same name and shape made by
an earlier run), stream results into them and record in ``metadata["sine"]`` how they were made. Their
``features`` hold one row per proposed object: ``index`` (the value in the layer), ``target`` (run
order), ``plane`` (plane of a stack, -1 for a 2D target), ``label`` (value the engine gave), ``score``
and ``source``. In a stack, instance ids are made unique across planes; ID proposals keep the
reference ids and semantic proposals the class ids, so the same value can appear on several planes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels

from sine_model.propagate import TargetResult

from ._inputs import TargetPlane, spatial_shape

__all__ = [
    "SINE_KEY",
    "FEATURE_COLUMNS",
    "proposal_name",
    "is_proposal",
    "plane_index",
    "current_plane",
    "layer_geometry",
    "ProposalSink",
]

SINE_KEY = "sine"
FEATURES_INTERVAL = 0.5  # seconds between updates of a proposal layer's features table during a run
FEATURE_COLUMNS = ("index", "target", "plane", "label", "score", "source")


def proposal_name(target_name: str, mode: str) -> str:
    """Name of the proposal layer of ``mode`` for a target layer."""
    return f"{target_name} [SINE {mode}]"


def is_proposal(layer: Any) -> bool:
    """Whether ``layer`` is a napari-sine proposal layer."""
    if not isinstance(layer, Labels):
        return False
    record = layer.metadata.get(SINE_KEY)
    return isinstance(record, dict) and record.get("kind") == "proposal"


def plane_index(ndim: int, stack_axis: int | None, plane: int | None) -> tuple[Any, ...]:
    """Index selecting one plane (or everything for a 2D layer)."""
    index: list[Any] = [slice(None)] * ndim
    if plane is not None and stack_axis is not None:
        index[stack_axis] = plane
    return tuple(index)


def current_plane(viewer: Any, layer: Labels | Image, stack_axis: int) -> int:
    """The plane of a 3D layer shown at the viewer's current position (clipped to the layer)."""
    data_point = layer.world_to_data(viewer.dims.point)
    count = spatial_shape(layer)[stack_axis]
    return int(np.clip(round(float(data_point[stack_axis])), 0, count - 1))


def _dtype_for(mode: str, max_reference_label: int, max_class: int) -> np.dtype:
    if mode == "instance":
        return np.dtype(np.uint32)
    top = max_reference_label if mode == "id" else max_class
    for dtype in (np.uint8, np.uint16):
        if top <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


def layer_geometry(layer: Image | Labels) -> dict[str, Any]:
    """A layer's placement in the world, to copy onto layers made from it."""
    geometry: dict[str, Any] = {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine.affine_matrix,
    }
    for name in ("axis_labels", "units"):  # napari >= 0.5.1
        if hasattr(layer, name):
            geometry[name] = getattr(layer, name)
    return geometry


class ProposalSink:
    """The proposal layers of one run, and how results are written into them.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers are added.
    planes : sequence of TargetPlane
        The run's targets, in run order (``TargetResult.index`` indexes this).
    modes : sequence of str
        Modes of the run.
    max_reference_label, max_class : int
        Largest reference label and class id (choose the layers' dtypes).
    records : mapping
        Target layer name → provenance record for that layer's proposal layers.
    on_reset : callable, optional
        Called with a proposal layer of an earlier run when this run starts rewriting it.

    Notes
    -----
    Layers are made (or reset) when their first result arrives, one per event-loop step, so a run
    never adds many layers at once and a cancelled or failed run leaves no empty layers.
    """

    def __init__(self, viewer: Any, planes: Sequence[TargetPlane], modes: Sequence[str],
                 max_reference_label: int, max_class: int, records: dict[str, dict[str, Any]],
                 on_reset: Callable[[Labels], None] | None = None) -> None:
        self.viewer = viewer
        self.planes = list(planes)
        self.modes = tuple(modes)
        self.layers: dict[tuple[int, str], Labels] = {}
        self.created: list[Labels] = []
        self.run_info: dict[str, Any] = {}
        self._records = records
        self._dtypes = {mode: _dtype_for(mode, max_reference_label, max_class) for mode in self.modes}
        self._on_reset = on_reset
        self._rows: dict[int, dict[str, list[Any]]] = {}
        self._offsets: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._flushed: dict[int, float] = {}
        self.done = 0

    def annotate(self, model_sha256: str | None, device: str,
                 adaptation: dict[str, Any] | None = None) -> None:
        """Record the weights hash, the device and the adaptation (known once the model is loaded)."""
        self.run_info = {"weights_sha256": model_sha256, "device": device, "adaptation": adaptation}
        for layer in self.layers.values():
            self._apply_run_info(layer.metadata[SINE_KEY])

    def _apply_run_info(self, record: dict[str, Any]) -> None:
        if self.run_info:
            record["model"]["weights_sha256"] = self.run_info["weights_sha256"]
            record["parameters"]["device"] = self.run_info["device"]
            record["adaptation"] = self.run_info["adaptation"]

    def layer(self, target: Image, mode: str) -> Labels:
        """The proposal layer of ``mode`` for ``target``, made or reset on first use."""
        key = (id(target), mode)
        if key not in self.layers:
            record = {"kind": "proposal", **copy.deepcopy(self._records[target.name]), "mode": mode}
            self._apply_run_info(record)
            layer = self._layer_for(target, self._dtypes[mode], {SINE_KEY: record})
            self.layers[key] = layer
            self._rows[id(layer)] = {name: [] for name in FEATURE_COLUMNS}
            self._offsets[id(layer)] = 0
        return self.layers[key]

    def _layer_for(self, target: Image, dtype: np.dtype, metadata: dict[str, Any]) -> Labels:
        name = proposal_name(target.name, metadata[SINE_KEY]["mode"])
        shape = spatial_shape(target)
        if name in self.viewer.layers:
            old = self.viewer.layers[name]
            if is_proposal(old) and old.data.shape == shape:
                if self._on_reset is not None:
                    self._on_reset(old)
                old.metadata = metadata  # our own layer from an earlier run: start it afresh
                old.features = pd.DataFrame(columns=list(FEATURE_COLUMNS))
                if old.data.dtype == dtype:
                    old.data[...] = 0
                    old.refresh()
                else:
                    old.data = np.zeros(shape, dtype=dtype)
                return old
        layer = self.viewer.add_labels(np.zeros(shape, dtype=dtype), name=name, metadata=metadata,
                                       opacity=0.6, **layer_geometry(target))
        layer.features = pd.DataFrame(columns=list(FEATURE_COLUMNS))
        self.created.append(layer)
        return layer

    def write(self, result: TargetResult) -> None:
        """Put one target's proposals into the layers and their scores into ``features``."""
        for mode in self.modes:
            self.write_mode(result, mode)
        self.mark_done(result)
        for layer in self.dirty_layers():
            self.flush_features(layer)

    def has_layer(self, target: Image, mode: str) -> bool:
        """Whether the proposal layer of ``mode`` for ``target`` is ready for writing."""
        return (id(target), mode) in self.layers

    def write_mode(self, result: TargetResult, mode: str) -> None:
        """Write one mode of a target (one layer update: a short main-thread step).

        The layer is refreshed only when the written plane is on screen, and its ``features`` table
        at most every ``FEATURES_INTERVAL`` seconds (:meth:`flush_features` writes the rest).
        """
        if mode not in result.labels:
            return
        target = self.planes[result.index]
        layer = self.layer(target.layer, mode)
        values = np.asarray(result.labels[mode])
        scores = [s for s in result.scores if s.mode == mode]
        shift = 0
        if mode == "instance" and target.plane is not None:
            shift = self._offsets[id(layer)]
            values = np.where(values > 0, values.astype(np.uint32) + shift, 0)
            top = max((s.label for s in scores), default=0) + shift
            self._offsets[id(layer)] = max(self._offsets[id(layer)], top, int(values.max(initial=0)))
        layer.data[plane_index(layer.ndim, target.stack_axis, target.plane)] = values
        plane = -1 if target.plane is None else target.plane
        columns = self._rows[id(layer)]
        for score in scores:
            for name, value in zip(FEATURE_COLUMNS, (score.label + shift, result.index, plane, score.label,
                                                     round(score.score, 6), score.source), strict=True):
                columns[name].append(value)
        self._dirty.add(id(layer))
        if time.monotonic() - self._flushed.get(id(layer), 0.0) > FEATURES_INTERVAL:
            self.flush_features(layer)
        if target.plane is None or current_plane(self.viewer, layer, target.stack_axis) == target.plane:
            layer.refresh()

    def dirty_layers(self) -> list[Labels]:
        """Layers whose ``features`` table lags behind their data."""
        return [layer for layer in self.layers.values() if id(layer) in self._dirty]

    def flush_features(self, layer: Labels) -> None:
        """Write the per-object table of ``layer`` into its ``features``."""
        layer.features = pd.DataFrame(self._rows[id(layer)], columns=list(FEATURE_COLUMNS))
        self._dirty.discard(id(layer))
        self._flushed[id(layer)] = time.monotonic()

    def mark_done(self, result: TargetResult) -> None:
        """Count a fully written target."""
        self.done += 1

    def all_layers(self) -> list[Labels]:
        """The run's proposal layers, in creation order."""
        return list(self.layers.values())

    def finish(self, total: int | None, cancelled: bool, finished: str, extra: dict[str, Any]) -> None:
        """Record the outcome in every layer's metadata (and write any pending ``features``)."""
        for layer in self.dirty_layers():
            self.flush_features(layer)
        for layer in self.layers.values():
            record = layer.metadata.get(SINE_KEY, {})
            record.update({"targets_done": self.done, "targets_total": total, "cancelled": cancelled,
                           "finished": finished, **extra})

    def remove_created(self) -> None:
        """Remove the layers this run added (used when it ended before finishing any target)."""
        for layer in self.created:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.created.clear()
