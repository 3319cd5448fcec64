"""The References section: (image layer, Labels layer[, plane]) rows, "add reference", classes."""

from __future__ import annotations

from typing import Any

from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .._inputs import InputError, ReferenceChoice, is_stack, parse_classes, spatial_shape
from .._layers import current_plane, is_proposal
from .layer_widgets import LayerCombo

__all__ = ["ReferencePanel"]


def _is_user_labels(layer: Any) -> bool:
    return isinstance(layer, Labels) and not is_proposal(layer)


def _plane_shape(layer: Any) -> tuple[int, ...]:
    shape = spatial_shape(layer)
    return shape[1:] if len(shape) == 3 else shape


class _ReferenceRow:
    """Widgets of one reference pair inside the panel's grid."""

    def __init__(self, panel: ReferencePanel, viewer: Any) -> None:
        self.viewer = viewer
        self.image = LayerCombo(viewer, lambda layer: isinstance(layer, Image))
        self.labels = LayerCombo(viewer, _is_user_labels)
        self.plane = QSpinBox()
        self.plane.setPrefix("plane ")
        self.plane.setToolTip("plane of a 3D stack used as the reference (axis 0)")
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setToolTip("remove this reference")
        self.remove.clicked.connect(lambda: panel.remove_row(self))
        for combo in (self.image, self.labels):
            combo.currentIndexChanged.connect(self.update_plane)
        self.image.setToolTip("reference image layer")
        self.labels.setToolTip("Labels layer painted on the reference image (every label is one object)")

    def widgets(self) -> list[QWidget]:
        return [self.image, self.labels, self.plane, self.remove]

    def pick_matching_labels(self) -> None:
        """Choose the first Labels layer with the image's height and width."""
        image = self.image.layer()
        if image is None:
            return
        for layer in self.labels.layers():
            if _plane_shape(layer) == _plane_shape(image):
                self.labels.set_layer(layer)
                return

    def update_plane(self) -> None:
        stacks = [layer for layer in (self.image.layer(), self.labels.layer())
                  if layer is not None and is_stack(layer)]
        self.plane.setVisible(bool(stacks))
        if stacks:
            count = min(spatial_shape(layer)[0] for layer in stacks)
            self.plane.setMaximum(max(0, count - 1))

    def choice(self) -> ReferenceChoice:
        image, labels = self.image.layer(), self.labels.layer()
        if image is None or labels is None:
            raise InputError("each reference needs an image layer and a Labels layer: add a Labels layer "
                             "(layer list ▸ new labels), paint objects on the reference image, choose both")
        stack = is_stack(image) or is_stack(labels)
        return ReferenceChoice(image, labels, self.plane.value() if stack else None)


class ReferencePanel(QGroupBox):
    """Reference pairs (k-shot: one row per pair) and the optional label → class mapping."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__("References", parent)
        self.viewer = viewer
        self.rows: list[_ReferenceRow] = []
        self.grid = QGridLayout()
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.add_button = QPushButton("Add reference")
        self.add_button.setToolTip("add another (image, labels) pair: more examples, better proposals")
        self.add_button.clicked.connect(lambda: self.add_row())
        self.classes = QLineEdit()
        self.classes.setPlaceholderText("optional, e.g. 1:1, 2:1, 3:2")
        self.classes.setToolTip("semantic class of each reference label as LABEL:CLASS pairs; empty means "
                                "every labelled object is of one class")
        classes_row = QHBoxLayout()
        classes_row.addWidget(QLabel("classes"))
        classes_row.addWidget(self.classes)
        layout = QVBoxLayout(self)
        layout.addLayout(self.grid)
        layout.addWidget(self.add_button)
        layout.addLayout(classes_row)
        self.add_row()

    def add_row(self, image: Any = None, labels: Any = None, plane: int | None = None) -> None:
        """Add a reference row, optionally pre-filled."""
        row = _ReferenceRow(self, self.viewer)
        index = len(self.rows)
        self.rows.append(row)
        for column, widget in enumerate(row.widgets()):
            self.grid.addWidget(widget, index, column)
        if image is not None:
            row.image.set_layer(image)
        if labels is not None:
            row.labels.set_layer(labels)
        else:
            row.pick_matching_labels()
        row.update_plane()
        if plane is not None:
            row.plane.setValue(plane)
        elif row.image.layer() is not None and is_stack(row.image.layer()):
            row.plane.setValue(current_plane(self.viewer, row.image.layer(), 0))
        self._update_remove_buttons()

    def remove_row(self, row: _ReferenceRow) -> None:
        """Remove a row (the last remaining row stays)."""
        if len(self.rows) <= 1 or row not in self.rows:
            return
        self.rows.remove(row)
        for widget in row.widgets():
            self.grid.removeWidget(widget)
            widget.deleteLater()
        for index, other in enumerate(self.rows):  # re-pack the grid
            for column, widget in enumerate(other.widgets()):
                self.grid.addWidget(widget, index, column)
        self._update_remove_buttons()

    def _update_remove_buttons(self) -> None:
        for row in self.rows:
            row.remove.setEnabled(len(self.rows) > 1)

    def refresh(self) -> None:
        """Follow the viewer's layers."""
        for row in self.rows:
            had_labels = row.labels.layer() is not None
            row.image.refresh()
            row.labels.refresh()
            if not had_labels:
                row.pick_matching_labels()
            row.update_plane()

    def choices(self) -> list[ReferenceChoice]:
        """The reference pairs (raises InputError for an incomplete row)."""
        return [row.choice() for row in self.rows]

    def class_map(self) -> dict[int, int] | None:
        """The label → class mapping (None for one class)."""
        return parse_classes(self.classes.text())
