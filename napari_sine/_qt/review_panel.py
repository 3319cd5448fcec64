"""The Review section: score filter, accept into a Labels layer (undoable, recorded in the review state),
promote to reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from .._inputs import InputError, spatial_shape
from .._layers import SINE_KEY, current_plane, is_proposal, layer_geometry
from .._review import ScoreFilter, UndoTracker, accept, proposal_stack_axis
from .._review_state import mark
from .layer_widgets import LayerCombo
from .narrow_layout import narrow_combo

__all__ = ["ReviewPanel", "NEW_LAYER"]

NEW_LAYER = "new Labels layer"
SCOPES = {"all": "all targets", "current": "current plane"}

# callback(image layer, labels layer, plane or None): add a reference and re-run
PromoteCallback = Callable[[Image, Labels, "int | None"], None]


class ReviewPanel(QGroupBox):
    """Review the proposals of one proposal layer and copy the good ones into a Labels layer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    on_promote : callable
        Receives ``(image layer, labels layer, plane)`` when the user promotes a target.
    on_error : callable
        Shows a user error (a notification).
    """

    def __init__(self, viewer: Any, on_promote: PromoteCallback, on_error: Callable[[Exception], None],
                 parent: QWidget | None = None) -> None:
        super().__init__("Review", parent)
        self.viewer = viewer
        self.on_promote, self.on_error = on_promote, on_error
        self.on_reviewed: Callable[[], None] = lambda: None  # the review state changed (accept)
        self.filter = ScoreFilter()
        self.undo_tracker = UndoTracker()
        self.proposals = LayerCombo(viewer, is_proposal)
        self.proposals.setToolTip("a proposal layer made by a run ('<target> [SINE <mode>]')")
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 100.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(2)
        self.min_score.setToolTip("hide proposed objects scoring below this; hidden objects are not "
                                  "accepted. Scores are in the layer's features: ID and instance scores "
                                  "lie in [0, 1], semantic scores are unnormalised sums (can exceed 1)")
        self.counts = QLabel("")
        self.counts.setWordWrap(True)  # long counts wrap instead of widening the dock
        self.destination = LayerCombo(
            viewer, lambda layer: isinstance(layer, Labels) and not is_proposal(layer), extras=(NEW_LAYER,),
            prefer_extra=True,
        )
        self.destination.setToolTip("Labels layer that receives accepted proposals; its labels are never "
                                    "overwritten")
        self.scope = narrow_combo(QComboBox())
        for key, text in SCOPES.items():
            self.scope.addItem(text, key)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("copy the shown proposals into the chosen Labels layer (background "
                                      "pixels only; instance ids start above the layer's maximum)")
        self.undo_button = QPushButton("Undo accept")
        self.undo_button.setEnabled(False)
        self.promote_button = QPushButton("Promote to reference")
        self.promote_button.setToolTip("use the accepted labels of the current target as another "
                                       "reference pair, then run again")
        filter_row = QHBoxLayout()
        filter_row.addWidget(self.min_score)
        filter_row.addWidget(self.counts)
        buttons = QHBoxLayout()
        for button in (self.accept_button, self.undo_button):
            buttons.addWidget(button)
        form = QFormLayout(self)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow("proposals", self.proposals)
        form.addRow("min score", filter_row)
        form.addRow("accept into", self.destination)
        form.addRow("targets", self.scope)
        form.addRow(buttons)
        form.addRow(self.promote_button)
        self.min_score.valueChanged.connect(self.apply_filter)
        self.proposals.currentIndexChanged.connect(self.apply_filter)
        self.accept_button.clicked.connect(self.accept)
        self.undo_button.clicked.connect(self.undo)
        self.promote_button.clicked.connect(self.promote)

    # -- state --------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Follow the viewer's layers."""
        self.proposals.refresh()
        self.destination.refresh()
        self.undo_button.setEnabled(self.undo_tracker.armed())

    def scope_key(self) -> str:
        return str(self.scope.currentData())

    def set_scope(self, key: str) -> None:
        index = self.scope.findData(key)
        if index >= 0:
            self.scope.setCurrentIndex(index)

    def show_proposals(self, layer: Labels) -> None:
        """Select a proposal layer (after a run) and apply the score filter to it."""
        self.filter.forget(layer)
        self.proposals.refresh()
        self.proposals.set_layer(layer)
        self.apply_filter()

    def apply_filter(self) -> None:
        layer = self.proposals.layer()
        if layer is None:
            self.counts.setText("")
            return
        shown, hidden = self.filter.apply(layer, self.min_score.value())
        self.counts.setText(f"{shown} shown, {hidden} hidden")

    # -- actions ------------------------------------------------------------------------------------

    def _plane_of(self, layer: Labels) -> int | None:
        axis = proposal_stack_axis(layer)
        if axis is None:
            return None
        return current_plane(self.viewer, layer, axis)

    def _destination_for(self, proposal: Labels) -> Labels:
        chosen = self.destination.layer()
        if chosen is not None:
            return chosen
        target_name = proposal.metadata[SINE_KEY]["target"]["layer"]
        layer = self.viewer.add_labels(np.zeros(proposal.data.shape, dtype=np.uint32),
                                       name=f"{target_name} labels", **layer_geometry(proposal))
        self.destination.refresh()
        self.destination.set_layer(layer)
        return layer

    def accept(self) -> None:
        proposal = self.proposals.layer()
        if proposal is None:
            self.on_error(InputError("no proposals to accept: run SINE first"))
            return
        plane = self._plane_of(proposal) if self.scope_key() == "current" else None
        try:
            destination = self._destination_for(proposal)
            result = accept(proposal, destination, plane)
        except InputError as error:
            self.on_error(error)
            return
        if result.pixels == 0:
            show_warning("SINE: nothing to accept here (no shown proposals on background pixels)")
            return
        self.undo_tracker.arm(destination)
        self.undo_button.setEnabled(True)
        mark(self.viewer, proposal, plane, "accepted", destination.name)
        self.on_reviewed()
        note = f"; {result.skipped_pixels} pixels kept from existing labels" if result.skipped_pixels else ""
        show_info(f"SINE: accepted {result.objects} object(s) into '{destination.name}'{note}")

    def current_review_target(self) -> tuple[Labels | None, int | None, str | None]:
        """The chosen proposals, the plane on screen (None for 2D) and the chosen Labels layer's name."""
        proposal, destination = self.proposals.layer(), self.destination.layer()
        plane = None if proposal is None else self._plane_of(proposal)
        return proposal, plane, None if destination is None else destination.name

    def undo(self) -> None:
        if not self.undo_tracker.undo():
            show_warning("SINE: nothing to undo (the layer was edited since the accept; use its own undo)")
        self.undo_button.setEnabled(False)

    def promote(self) -> None:
        proposal, labels = self.proposals.layer(), self.destination.layer()
        if proposal is None or labels is None:
            self.on_error(InputError("promote needs accepted labels: choose the proposals and the Labels "
                                     "layer you accepted them into (accept first)"))
            return
        record = proposal.metadata[SINE_KEY]
        target_name = record["target"]["layer"]
        image = self.viewer.layers[target_name] if target_name in self.viewer.layers else None
        if not isinstance(image, Image):
            self.on_error(InputError(f"the target image layer '{target_name}' of these proposals is gone"))
            return
        plane = self._plane_of(proposal)
        if plane is not None and record["target"]["stack_axis"] != 0:
            self.on_error(InputError("promote works on stacks along axis 0 only"))
            return
        region = labels.data[plane] if plane is not None and len(spatial_shape(labels)) == 3 else labels.data
        if not np.asarray(region).any():
            where = f" on plane {plane}" if plane is not None else ""
            self.on_error(InputError(f"'{labels.name}' has no labels{where}: accept proposals first"))
            return
        self.on_promote(image, labels, plane)
