"""What keeps the dock widget narrow: a vertically scrolling column, a folding section, combo boxes that
elide long entries and forms that put labels above fields when short of room.

At napari's default window size a dock as wide as its widest row squeezes the canvas (the widget was
443 px wide, leaving the canvas 300 of 752 px); these pieces let it open at its narrowest layout.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["CollapsibleSection", "ColumnScrollArea", "narrow_combo", "narrow_form", "COMBO_MIN_CHARS"]

#: Characters a combo box needs room for; longer entries are elided in the box (the popup shows them).
COMBO_MIN_CHARS = 6


def narrow_combo(combo: QComboBox) -> QComboBox:
    """Let ``combo`` shrink below its longest entry, so long layer names do not widen the dock."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(COMBO_MIN_CHARS)
    return combo


def narrow_form(parent: QWidget | None = None) -> QFormLayout:
    """A form whose labels go above their fields when the dock is narrow."""
    form = QFormLayout(parent) if parent is not None else QFormLayout()
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


class ColumnScrollArea(QScrollArea):
    """Scrolls a column vertically only; never narrower than the column's narrowest layout.

    The minimum width is read from the column each time (napari's style sheet, applied when the widget
    is docked, changes sizes after construction).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802  (Qt API)
        # QScrollArea watches its column; a new layout (style sheet, new rows) may change the minimum
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802  (Qt API)
        column = self.widget()
        hint = super().minimumSizeHint()
        if column is None:
            return hint
        width = column.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        return QSize(width + 2 * self.frameWidth(), hint.height())


class CollapsibleSection(QWidget):
    """An arrow button with a title above a content widget that it shows or hides.

    Hidden content takes no room (it is hidden, not squeezed), so a folded section keeps the dock
    widget short; its controls keep their values and work from code as before.

    Parameters
    ----------
    title : str
        Text of the button.
    expanded : bool
        Whether the content is shown at first.
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(self, title: str, expanded: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.button.setStyleSheet("QToolButton { border: none; text-align: left; }")
        self.content = QWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.button)
        layout.addWidget(self.content)
        self.button.toggled.connect(self.set_expanded)
        self.set_expanded(expanded)

    def set_expanded(self, expanded: bool) -> None:
        """Show (``True``) or hide the content."""
        if self.button.isChecked() != expanded:
            self.button.setChecked(expanded)  # re-enters through `toggled`
            return
        self.button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.content.setVisible(expanded)

    def is_expanded(self) -> bool:
        """Whether the content is shown."""
        return self.button.isChecked()
