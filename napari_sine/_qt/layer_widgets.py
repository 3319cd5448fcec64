"""Qt pickers of napari layers that follow the viewer's layer list (adds, removals, renames)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem, QWidget

from .narrow_layout import narrow_combo

__all__ = ["LayerCombo", "LayerChecklist", "LayerListWatcher"]

LayerFilter = Callable[[Any], bool]


def _index_of(layers: Sequence[Any], layer: Any) -> int:
    """Position of ``layer`` (by identity) in ``layers``, -1 if absent."""
    return next((i for i, other in enumerate(layers) if other is layer), -1)


class LayerListWatcher:
    """Calls ``callback`` whenever layers are added, removed, moved or renamed; ``close`` disconnects."""

    def __init__(self, viewer: Any, callback: Callable[[], None]) -> None:
        self.viewer = viewer
        self.callback = callback
        self._named: list[Any] = []
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            emitter = getattr(events, name, None)
            if emitter is not None:
                emitter.connect(self._on_list)
        for layer in viewer.layers:
            self._watch(layer)

    def _watch(self, layer: Any) -> None:
        layer.events.name.connect(self._on_name)
        self._named.append(layer)

    def _on_list(self, event: Any = None) -> None:
        kind = getattr(event, "type", "")
        if kind == "inserted":
            self._watch(event.value)
        elif kind == "removed":
            layer = event.value
            layer.events.name.disconnect(self._on_name)
            self._named = [other for other in self._named if other is not layer]
        self.callback()

    def _on_name(self, event: Any = None) -> None:
        self.callback()

    def close(self) -> None:
        """Disconnect from the viewer."""
        events = self.viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            emitter = getattr(events, name, None)
            if emitter is not None:
                emitter.disconnect(self._on_list)
        for layer in self._named:
            layer.events.name.disconnect(self._on_name)
        self._named.clear()


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers that pass ``keep``, plus optional fixed entries at the end.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    keep : callable
        Which layers to list.
    extras : sequence of str
        Entries that are not layers (e.g. "new Labels layer"); :meth:`layer` returns None for them.
    prefer_extra : bool
        Start on the first extra entry rather than on the first layer.
    """

    def __init__(self, viewer: Any, keep: LayerFilter, extras: Sequence[str] = (),
                 prefer_extra: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.keep, self.extras = viewer, keep, tuple(extras)
        self._extra_first = prefer_extra and bool(self.extras)
        self._layers: list[Any] = []
        narrow_combo(self)
        self.refresh()

    def refresh(self) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        current = self.layer()
        extra = self.currentText() if current is None and self.count() else None
        self.blockSignals(True)
        self.clear()
        self._layers = [layer for layer in self.viewer.layers if self.keep(layer)]
        for layer in self._layers:
            self.addItem(layer.name)
        for text in self.extras:
            self.addItem(text)
        if _index_of(self._layers, current) >= 0:
            self.setCurrentIndex(_index_of(self._layers, current))
        elif extra in self.extras:
            self.setCurrentIndex(len(self._layers) + self.extras.index(extra))
        elif self._extra_first:
            self.setCurrentIndex(len(self._layers))
        self.blockSignals(False)

    def layer(self) -> Any | None:
        """The chosen layer (None for an extra entry or an empty list)."""
        index = self.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def set_layer(self, layer: Any) -> None:
        """Choose ``layer`` if it is listed."""
        if _index_of(self._layers, layer) >= 0:
            self.setCurrentIndex(_index_of(self._layers, layer))

    def layers(self) -> list[Any]:
        """All listed layers."""
        return list(self._layers)


class LayerChecklist(QListWidget):
    """A list of the viewer's layers that pass ``keep``, each with a check box."""

    def __init__(self, viewer: Any, keep: LayerFilter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.keep = viewer, keep
        self._layers: list[Any] = []
        self.refresh()

    def refresh(self, check: Sequence[Any] = ()) -> None:
        """Re-list the layers, keeping check marks, and checking ``check`` too."""
        checked = set(map(id, self.checked_layers())) | set(map(id, check))
        self.blockSignals(True)
        self.clear()
        self._layers = [layer for layer in self.viewer.layers if self.keep(layer)]
        for layer in self._layers:
            item = QListWidgetItem(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if id(layer) in checked else Qt.CheckState.Unchecked)
            self.addItem(item)
        self.blockSignals(False)

    def layers(self) -> list[Any]:
        """All listed layers."""
        return list(self._layers)

    def checked_layers(self) -> list[Any]:
        """Checked layers, in list order."""
        return [layer for i, layer in enumerate(self._layers)
                if self.item(i) is not None and self.item(i).checkState() == Qt.CheckState.Checked]

    def set_checked(self, layers: Sequence[Any]) -> None:
        """Check exactly ``layers``."""
        wanted = set(map(id, layers))
        for i, layer in enumerate(self._layers):
            state = Qt.CheckState.Checked if id(layer) in wanted else Qt.CheckState.Unchecked
            self.item(i).setCheckState(state)
