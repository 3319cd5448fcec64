"""Reviewing proposals: hide objects below a score, accept the visible ones into a Labels layer.

* :class:`ScoreFilter` hides proposed objects whose score is below a threshold by zeroing their pixels
  in the *proposal* layer (napari-sine's own layer) and remembers those pixels, so lowering the
  threshold brings them back.
* :func:`accept` copies the visible proposals of a proposal layer into a chosen Labels layer: only
  background pixels (0) are written, so existing objects are preserved; ID and semantic proposals keep
  their values (reference ids, class ids); instance proposals get new ids above the layer's maximum.
  The write goes through ``Labels.data_setitem`` inside ``block_history``: one napari undo step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Labels

from ._inputs import InputError
from ._layers import SINE_KEY, is_proposal, plane_index

__all__ = ["ScoreFilter", "AcceptResult", "accept", "proposal_stack_axis"]


def proposal_stack_axis(layer: Labels) -> int | None:
    """Stack axis of a proposal layer's target (``None`` for a 2D target)."""
    return layer.metadata.get(SINE_KEY, {}).get("target", {}).get("stack_axis")


class ScoreFilter:
    """Hides and restores proposed objects by score; one per widget, keyed by proposal layer."""

    def __init__(self) -> None:
        self._hidden: dict[int, dict[tuple[int, int], np.ndarray]] = {}

    def forget(self, layer: Labels) -> None:
        """Drop what is remembered for ``layer`` (after a re-run rewrote it)."""
        self._hidden.pop(id(layer), None)

    def apply(self, layer: Labels, min_score: float) -> tuple[int, int]:
        """Show objects scoring at least ``min_score``, hide the others.

        Returns
        -------
        shown, hidden : int
            Numbers of objects.
        """
        if not is_proposal(layer) or "score" not in layer.features:
            return 0, 0
        hidden = self._hidden.setdefault(id(layer), {})
        axis = proposal_stack_axis(layer)
        features = layer.features
        changed = False
        for value, plane, score in zip(features["index"], features["plane"], features["score"],
                                       strict=True):
            key = (int(plane), int(value))
            view = layer.data[plane_index(layer.ndim, axis, None if key[0] < 0 else key[0])]
            if float(score) < min_score and key not in hidden:
                flat = np.flatnonzero(view == key[1])
                view.flat[flat] = 0  # a view: writes into the proposal layer
                hidden[key] = flat
                changed = True
            elif float(score) >= min_score and key in hidden:
                view.flat[hidden.pop(key)] = key[1]
                changed = True
        if changed:
            layer.refresh()
        return len(features) - len(hidden), len(hidden)


@dataclass(frozen=True)
class AcceptResult:
    """What an accept wrote.

    Parameters
    ----------
    pixels : int
        Pixels written.
    objects : int
        Distinct proposed objects (per plane) that were written.
    skipped_pixels : int
        Proposal pixels not written because the destination already had a label there.
    """

    pixels: int
    objects: int
    skipped_pixels: int


def _writable_array(layer: Labels) -> np.ndarray:
    data = layer.data
    if not isinstance(data, np.ndarray) or layer.multiscale:
        raise InputError(f"Labels layer '{layer.name}' is not an in-memory array: accept into a new layer "
                         "or convert it with layer.data = numpy.asarray(layer.data)")
    return data


def accept(proposal: Labels, destination: Labels, plane: int | None = None) -> AcceptResult:
    """Copy the visible proposals into ``destination`` without overwriting its labels.

    Parameters
    ----------
    proposal : Labels
        A napari-sine proposal layer.
    destination : Labels
        The layer receiving the proposals (same shape).
    plane : int, optional
        Only this plane of a stack (default: every plane).

    Returns
    -------
    AcceptResult

    Raises
    ------
    InputError
        Wrong layers, different shapes, or ids that do not fit the destination's dtype.
    """
    if not is_proposal(proposal):
        raise InputError(f"'{proposal.name}' is not a SINE proposal layer: choose one in Review")
    if destination is proposal or is_proposal(destination):
        raise InputError("accept into one of your Labels layers (or a new one), not into a proposal layer")
    target = _writable_array(destination)
    if target.shape != proposal.data.shape:
        raise InputError(f"Labels layer '{destination.name}' has shape {target.shape} but the proposals "
                         f"are {proposal.data.shape}: choose a layer of the target's shape, or 'new layer'")
    mode = proposal.metadata[SINE_KEY].get("mode")
    axis = proposal_stack_axis(proposal)
    index = plane_index(proposal.ndim, axis, plane)
    source = np.asarray(proposal.data[index])
    region = target[index]
    wanted = source != 0
    mask = wanted & (region == 0)
    skipped = int(wanted.sum() - mask.sum())
    values = source[mask]
    if mode == "instance":
        unique, inverse = np.unique(values, return_inverse=True)
        start = int(target.max(initial=0)) + 1
        values = inverse.astype(np.int64) + start
        objects = len(unique)
    else:
        objects = _count_objects(source, mask, axis if plane is None else None)
        values = values.astype(np.int64)
    _check_fits(values, target.dtype, destination.name)
    if values.size == 0:
        return AcceptResult(0, 0, skipped)
    coords = list(np.nonzero(mask))
    if plane is not None and axis is not None:
        coords.insert(axis, np.full(coords[0].shape, plane, dtype=coords[0].dtype))
    with destination.block_history():  # one undo step
        destination.data_setitem(tuple(coords), values.astype(target.dtype))
    return AcceptResult(int(values.size), objects, skipped)


def _count_objects(source: np.ndarray, mask: np.ndarray, axis: int | None) -> int:
    if axis is None:
        return len(np.unique(source[mask]))
    moved_source, moved_mask = np.moveaxis(source, axis, 0), np.moveaxis(mask, axis, 0)
    return sum(len(np.unique(s[m])) for s, m in zip(moved_source, moved_mask, strict=True))


def _check_fits(values: np.ndarray, dtype: np.dtype, name: str) -> None:
    if values.size and np.issubdtype(dtype, np.integer) and int(values.max()) > np.iinfo(dtype).max:
        raise InputError(f"label {int(values.max())} does not fit Labels layer '{name}' ({dtype}): "
                         "convert it to a wider type, e.g. layer.data = layer.data.astype('uint32')")


class UndoTracker:
    """Undo of the last accept, valid only while nothing else was painted into that layer."""

    def __init__(self) -> None:
        self.layer: Labels | None = None

    def armed(self) -> bool:
        """Whether an accept can be undone."""
        return self.layer is not None

    def arm(self, layer: Labels) -> None:
        """Remember an accept into ``layer`` (call after the accept)."""
        self.disarm()
        self.layer = layer
        layer.events.paint.connect(self._on_change)
        layer.events.data.connect(self._on_change)

    def disarm(self) -> None:
        """Forget the last accept."""
        if self.layer is not None:
            self.layer.events.paint.disconnect(self._on_change)
            self.layer.events.data.disconnect(self._on_change)
        self.layer = None

    def _on_change(self, event: Any = None) -> None:
        self.disarm()

    def undo(self) -> bool:
        """Undo the last accept with napari's own undo; ``False`` when nothing can be undone."""
        layer = self.layer
        if layer is None:
            return False
        self.disarm()
        layer.undo()
        return True
