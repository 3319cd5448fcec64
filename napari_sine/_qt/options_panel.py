"""The Model section: modes, model, device, threshold, scale, memory, calibration, adaptation, refinement."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtGui import QStandardItemModel
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QToolButton,
    QWidget,
)

from sine_model import DEFAULT_THRESHOLDS, MODES, PRESETS

from .._inputs import InputError
from .._models import ModelChoice, available_devices, default_model, model_choice, model_choices
from .._settings import WidgetSettings

__all__ = ["OptionsPanel"]

MODE_TIPS = {
    "id": "ID: the same objects as in the reference, keeping their label ids",
    "instance": "instance: every object of the referenced kind(s), new id per object",
    "semantic": "semantic: the region of each class",
}


class OptionsPanel(QGroupBox):
    """Run options; :meth:`settings_into` / :meth:`apply_settings` connect them to the settings."""

    def __init__(self, on_change: Callable[[], None], parent: QWidget | None = None) -> None:
        super().__init__("Model and options", parent)
        self.modes = {mode: QCheckBox(mode) for mode in MODES}
        for mode, box in self.modes.items():
            box.setToolTip(MODE_TIPS[mode])
            box.setChecked(True)
        self.model = QComboBox()
        self.model.setToolTip("model preset; presets whose weights are missing are listed but disabled "
                              "(their tooltip says how to install them)")
        self.refresh_models_button = QToolButton()
        self.refresh_models_button.setText("↻")
        self.refresh_models_button.setToolTip("look again for installed models (after "
                                              "`napari-sine weights import …`)")
        self.refresh_models_button.clicked.connect(self.refresh_models)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setToolTip("only devices that work on this machine are listed; auto picks CUDA, "
                               "then MPS, then CPU")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setToolTip("minimum score of ID and instance proposals during the run (semantic "
                                  f"regions use {DEFAULT_THRESHOLDS['semantic']})")
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.05, 4.0)
        self.scale.setSingleStep(0.05)
        self.scale.setToolTip("resize images by this factor before the model sees them: below 1 for large "
                              "objects or speed, above 1 for small objects")
        self.memory = QCheckBox("time-lapse memory (ID)")
        self.memory.setToolTip("for one stack in time order: earlier predicted frames help the ID mode")
        self.calibrate = QCheckBox("calibrate on the references")
        self.calibrate.setToolTip("before propagating, choose the scale (instead of the one above) and how "
                                  "touching objects are split, by predicting each half of a reference from "
                                  "the other half; costs a few model passes per candidate scale")
        self.adapt = QCheckBox("test-time adaptation")
        self.adapt.setToolTip("before propagating, fine-tune the neck and decoder of a copy of the model "
                              "on your references (the encoder stays frozen; the model on disk is not "
                              "changed; with refinement, one copy per half of each reference, averaged). "
                              "Cancel takes effect once the adaptation is over")
        self.adapt_seconds = _seconds_box("time budget of the adaptation")
        self.refine = QCheckBox("refine at full resolution")
        self.refine.setToolTip("before propagating, train a small pixel classifier on your references that "
                               "decides every pixel again from the model's maps and image features (edges, "
                               "texture) and marks object borders, so thin gaps and touching objects come "
                               "apart")
        self.refine_seconds = _seconds_box("time budget of the refiner's training")
        modes_row = QHBoxLayout()
        for box in self.modes.values():
            modes_row.addWidget(box)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.refresh_models_button)
        form = QFormLayout(self)
        form.addRow("modes", modes_row)
        form.addRow("model", model_row)
        form.addRow("device", self.device)
        form.addRow("score threshold", self.threshold)
        form.addRow("scale", self.scale)
        form.addRow(self.memory)
        form.addRow(self.calibrate)
        for box, seconds in ((self.adapt, self.adapt_seconds), (self.refine, self.refine_seconds)):
            row = QHBoxLayout()
            row.addWidget(box)
            row.addWidget(seconds)
            form.addRow(row)
        self._choices: list[ModelChoice] = []
        self.refresh_models()
        for box in self.modes.values():
            box.toggled.connect(on_change)
        self.model.currentIndexChanged.connect(on_change)
        self.device.currentIndexChanged.connect(on_change)
        self.threshold.valueChanged.connect(on_change)
        self.scale.valueChanged.connect(on_change)
        self.memory.toggled.connect(on_change)
        self.calibrate.toggled.connect(on_change)
        for box, seconds in ((self.adapt, self.adapt_seconds), (self.refine, self.refine_seconds)):
            box.toggled.connect(on_change)
            box.toggled.connect(seconds.setEnabled)
            seconds.valueChanged.connect(on_change)

    # -- models -------------------------------------------------------------------------------------

    def refresh_models(self, prefer: str = "") -> None:
        """Re-read the preset registry and the installed weights."""
        wanted = prefer or self.model_name()
        self._choices = model_choices()
        self.model.blockSignals(True)
        self.model.clear()
        items = self.model.model()
        for index, choice in enumerate(self._choices):
            self.model.addItem(choice.label, choice.name)
            tip = f"{choice.description}\nweights licence: {choice.licence}"
            tip = tip if choice.installed else choice.hint
            self.model.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
            if not choice.installed and isinstance(items, QStandardItemModel):
                items.item(index).setEnabled(False)
        names = [c.name for c in self._choices]
        installed = {c.name for c in self._choices if c.installed}
        default = default_model(self._choices)
        pick = wanted if wanted in installed else (default.name if default else (names[0] if names else ""))
        if pick:
            self.model.setCurrentIndex(names.index(pick))
        self.model.blockSignals(False)

    def model_name(self) -> str:
        return str(self.model.currentData() or "")

    def model_choice(self) -> ModelChoice:
        """The chosen, installed model (raises InputError with install steps otherwise)."""
        name = self.model_name()
        if name not in PRESETS:
            raise InputError("no model chosen: pick one in the model list (↻ re-reads installed models)")
        choice = model_choice(PRESETS[name])  # checked again: weights may have been removed meanwhile
        if not choice.installed:
            raise InputError(f"model '{name}' is not installed — {choice.hint}")
        return choice

    # -- values -------------------------------------------------------------------------------------

    def chosen_modes(self) -> tuple[str, ...]:
        modes = tuple(mode for mode, box in self.modes.items() if box.isChecked())
        if not modes:
            raise InputError("no mode chosen: tick ID, instance and/or semantic")
        return modes

    def adapt_budget(self) -> float:
        """Seconds of test-time adaptation (0 when it is off)."""
        return float(self.adapt_seconds.value()) if self.adapt.isChecked() else 0.0

    def refine_budget(self) -> float:
        """Seconds of the refiner's training (0 when refinement is off)."""
        return float(self.refine_seconds.value()) if self.refine.isChecked() else 0.0

    def thresholds(self) -> dict[str, float]:
        value = round(self.threshold.value(), 4)
        return {"id": value, "instance": value}

    def apply_settings(self, settings: WidgetSettings) -> None:
        for mode, box in self.modes.items():
            box.setChecked(mode in settings.modes)
        if settings.model:
            self.refresh_models(prefer=settings.model)
        index = self.device.findText(settings.device)
        self.device.setCurrentIndex(max(index, 0))
        self.threshold.setValue(settings.threshold)
        self.scale.setValue(settings.scale)
        self.memory.setChecked(settings.memory)
        self.calibrate.setChecked(settings.calibrate)
        self.adapt_seconds.setValue(settings.adapt_seconds)
        self.adapt.setChecked(settings.adapt)
        self.adapt_seconds.setEnabled(settings.adapt)
        self.refine_seconds.setValue(settings.refine_seconds)
        self.refine.setChecked(settings.refine)
        self.refine_seconds.setEnabled(settings.refine)

    def settings_into(self, settings: WidgetSettings) -> None:
        settings.modes = [mode for mode, box in self.modes.items() if box.isChecked()]
        settings.model = self.model_name()
        settings.device = self.device.currentText()
        settings.threshold = round(self.threshold.value(), 4)
        settings.scale = round(self.scale.value(), 4)
        settings.memory = self.memory.isChecked()
        settings.calibrate = self.calibrate.isChecked()
        settings.adapt = self.adapt.isChecked()
        settings.adapt_seconds = float(self.adapt_seconds.value())
        settings.refine = self.refine.isChecked()
        settings.refine_seconds = float(self.refine_seconds.value())


def _seconds_box(tooltip: str) -> QDoubleSpinBox:
    """A time budget in whole seconds, 1 to 600."""
    box = QDoubleSpinBox()
    box.setRange(1.0, 600.0)
    box.setDecimals(0)
    box.setSuffix(" s")
    box.setToolTip(tooltip)
    return box
