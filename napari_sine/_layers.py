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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Layer

from ._inputs import TargetPlane, spatial_shape

if TYPE_CHECKING:  # results come from the worker, which imports the model code
    from sine_model import TargetResult

__all__ = [
    "SINE_KEY",
    "FEATURE_COLUMNS",
    "proposal_name",
    "is_proposal",
    "plane_index",
    "current_plane",
    "layer_geometry",
    "defer_paint_overlays",
    "ProposalSink",
]

SINE_KEY = "sine"
PAINT_OVERLAYS = ("polygon", "brush_stroke")  # napari's Labels overlays, drawn only while painting
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


def defer_paint_overlays(layer: Labels) -> None:
    """Leave the painting overlays of ``layer`` unbuilt until a tool is first picked on it.

    napari builds a vispy visual for each visible overlay of a layer in the event-loop turn that adds
    the layer. The polygon and brush overlays of a Labels layer cost more there than the rest of the
    layer's visual (50–160 ms on a loaded 2-vCPU machine) though they are drawn only while painting.
    Hidden, napari builds them when they are shown again: here at the layer's first mode change, a
    user action. Uses napari's private ``Layer._overlays``; without it nothing is deferred.
    """
    overlays = getattr(layer, "_overlays", None)
    if overlays is None:
        return
    hidden = [overlays[key] for key in PAINT_OVERLAYS if key in overlays and overlays[key].visible]
    if not hidden:
        return
    for overlay in hidden:
        overlay.visible = False

    def show(event: Any = None) -> None:
        layer.events.mode.disconnect(show)
        for overlay in hidden:
            overlay.visible = True

    layer.events.mode.connect(show)


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
    napari's part of adding a Labels layer is the longest main-thread step of a run. So the run's
    controller adds the new layers before the model starts, in steps of one event-loop turn each
    (:meth:`creation_steps`): building a layer, adding it and making the user's layer active again
    are separate steps; the layers' painting overlays wait for the first painting tool
    (:func:`defer_paint_overlays`). A run that ends before finishing a target removes them again
    (:meth:`remove_created`). Layers of an earlier run are reset at their first result (:meth:`layer_steps`).
    """

    def __init__(self, viewer: Any, planes: Sequence[TargetPlane], modes: Sequence[str],
                 max_reference_label: int, max_class: int, records: dict[str, dict[str, Any]],
                 on_reset: Callable[[Labels], None] | None = None) -> None:
        self.viewer = viewer
        self.planes = list(planes)
        self.modes = tuple(modes)
        self.layers: dict[tuple[int, str], Labels] = {}
        self._built: dict[tuple[int, str], Labels] = {}  # made, not yet added to the viewer
        self._planned: set[tuple[int, str]] = set()  # layers whose steps were handed out
        self.created: list[Labels] = []
        self._user_active: Layer | None = None  # the user's active layer while ours are being added
        self.run_info: dict[str, Any] = {}
        self._records = records
        self._dtypes = {mode: _dtype_for(mode, max_reference_label, max_class) for mode in self.modes}
        self._on_reset = on_reset
        self._rows: dict[int, dict[str, list[Any]]] = {}
        self._offsets: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._flushed: dict[int, float] = {}
        self.done = 0

    def annotate(self, model_sha256: str | None, device: str, adaptation: dict[str, Any] | None = None,
                 calibration: dict[str, Any] | None = None, refinement: dict[str, Any] | None = None,
                 fitting: dict[str, Any] | None = None) -> None:
        """Record the weights hash, the device, the adaptation, calibration and refinement, and the fitting
        recipe with what ran and what stepped aside (known once the references are prepared)."""
        self.run_info = {"weights_sha256": model_sha256, "device": device, "adaptation": adaptation,
                         "calibration": calibration, "refinement": refinement, "fitting": fitting}
        for layer in [*self.layers.values(), *self._built.values()]:
            self._apply_run_info(layer.metadata[SINE_KEY])

    def _apply_run_info(self, record: dict[str, Any]) -> None:
        if self.run_info:
            record["model"]["weights_sha256"] = self.run_info["weights_sha256"]
            record["parameters"]["device"] = self.run_info["device"]
            record["adaptation"] = self.run_info["adaptation"]
            record["calibration"] = self.run_info["calibration"]
            record["refinement"] = self.run_info["refinement"]
            record["fitting"] = self.run_info["fitting"]

    def layer(self, target: Image, mode: str, restore_active: bool = True) -> Labels:
        """The proposal layer of ``mode`` for ``target``, made (or reset) and added now if need be.

        napari makes an added layer the active one, while the user may be painting on another: that
        layer is made active again at once, or with ``restore_active=False`` by a later
        :meth:`restore_active` (its own event-loop turn, as the add is the longest one).
        """
        key = (id(target), mode)
        if key not in self.layers:
            old = self._reusable(target, mode)
            if old is not None:
                layer = self._reset(old, mode, self._record(target, mode))
            else:
                layer = self._built.pop(key, None) or self._build(target, mode)
                if self._user_active is None:
                    self._user_active = self.viewer.layers.selection.active
                self.viewer.add_layer(layer)
                self.created.append(layer)
                if restore_active:
                    self.restore_active()
            self.layers[key] = layer
            self._rows[id(layer)] = {name: [] for name in FEATURE_COLUMNS}
            self._offsets[id(layer)] = 0
        return self.layers[key]

    def layer_steps(self, target: Image, mode: str) -> list[Callable[[], Any]]:
        """Steps that make the proposal layer of ``mode`` for ``target``, for one event-loop turn each.

        A new layer is built in one step and added to the viewer in the next (napari's share, the
        larger one); a layer of an earlier run is reset in one step. Empty when the layer is ready or
        its steps were handed out already.
        """
        key = (id(target), mode)
        if key in self.layers or key in self._planned:
            return []
        self._planned.add(key)
        if self._reusable(target, mode) is not None:
            return [lambda: self.layer(target, mode)]
        return [lambda: self._build(target, mode), lambda: self.layer(target, mode, restore_active=False),
                self.restore_active]

    def restore_active(self) -> None:
        """Make the user's active layer active again if napari made one of our new layers active.

        Nothing happens when the user picked another layer meanwhile or theirs is gone.
        """
        user, self._user_active = self._user_active, None
        current = self.viewer.layers.selection.active
        if user is not None and user in self.viewer.layers and current in self.created:
            self.viewer.layers.selection.active = user

    def creation_steps(self) -> list[Callable[[], Any]]:
        """:meth:`layer_steps` of the layers this run adds (not of those it reuses).

        A layer of an earlier run is reset only at its first result, so that a run failing before
        that leaves it as it was.
        """
        targets = list({id(plane.layer): plane.layer for plane in self.planes}.values())
        return [step for target in targets for mode in self.modes if self._reusable(target, mode) is None
                for step in self.layer_steps(target, mode)]

    def _record(self, target: Image, mode: str) -> dict[str, Any]:
        record = {"kind": "proposal", **copy.deepcopy(self._records[target.name]), "mode": mode}
        self._apply_run_info(record)
        return record

    def _reusable(self, target: Image, mode: str) -> Labels | None:
        """Our layer of the same name and shape from an earlier run, if there is one."""
        name = proposal_name(target.name, mode)
        if name not in self.viewer.layers:
            return None
        old = self.viewer.layers[name]
        return old if is_proposal(old) and old.data.shape == spatial_shape(target) else None

    def _build(self, target: Image, mode: str) -> Labels:
        """A new proposal layer, not yet in the viewer (kept for :meth:`layer` to add)."""
        key = (id(target), mode)
        if key not in self._built:
            layer = Labels(np.zeros(spatial_shape(target), dtype=self._dtypes[mode]),
                           name=proposal_name(target.name, mode), opacity=0.6,
                           metadata={SINE_KEY: self._record(target, mode)},
                           features=pd.DataFrame(columns=list(FEATURE_COLUMNS)), **layer_geometry(target))
            defer_paint_overlays(layer)
            self._built[key] = layer
        return self._built[key]

    def _reset(self, old: Labels, mode: str, record: dict[str, Any]) -> Labels:
        """Start a proposal layer of an earlier run afresh."""
        if self._on_reset is not None:
            self._on_reset(old)
        old.metadata = {SINE_KEY: record}
        old.features = pd.DataFrame(columns=list(FEATURE_COLUMNS))
        dtype = self._dtypes[mode]
        if old.data.dtype == dtype:
            old.data[...] = 0
            old.refresh()
        else:
            old.data = np.zeros(old.data.shape, dtype=dtype)
        return old

    def write(self, result: TargetResult) -> None:
        """Put one target's proposals into the layers and their scores into ``features``."""
        for mode in self.modes:
            self.write_mode(result, mode)
        self.mark_done(result)
        for layer in self.dirty_layers():
            self.flush_features(layer)

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
        self._built.clear()
