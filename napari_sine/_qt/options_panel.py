"""The Model section: modes, model, device and the fitting line (what runs on the references before the
first proposal: the model's recipe, or the user's choice); folded under "advanced": threshold, scale,
memory, and the fitting stages one by one (calibration, adaptation, refinement, budgets in steps).

The model list and the devices come from ``sine_model``'s registry, whose first reading imports torch
(seconds). When that has not happened yet in this process, they are read in a worker thread after the
widget opens, so opening it never freezes napari; until then the model list says "loading models…"
and :meth:`OptionsPanel.when_loaded` queues what needs the list (a Run pressed meanwhile starts once it
is read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QStandardItemModel
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sine_model import DEFAULT_THRESHOLDS, MODES

from .._inputs import InputError
from .._models import ModelChoice, default_model, model_choice, model_choices, read_registry, registry_loaded
from .._settings import WidgetSettings
from .narrow_layout import CollapsibleSection, narrow_combo, narrow_form
from .worker_exit import start_tracked

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
        self.model = narrow_combo(QComboBox())
        self.model.setToolTip("model preset; presets whose weights are missing are listed but disabled "
                              "(their tooltip says how to install them)")
        self.refresh_models_button = QToolButton()
        self.refresh_models_button.setText("↻")
        self.refresh_models_button.setToolTip("look again for installed models (after "
                                              "`napari-sine weights import …`)")
        self.refresh_models_button.clicked.connect(lambda: self.refresh_models())
        self.device = narrow_combo(QComboBox())
        self.device.addItem("auto")
        self.device.setToolTip("only devices that work on this machine are listed; auto picks CUDA, "
                               "then MPS, then CPU")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setToolTip("minimum score of ID and instance proposals during the run (semantic "
                                  f"regions use {DEFAULT_THRESHOLDS['semantic']})")
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.0, 4.0)  # the minimum, 0, shows as "auto"
        self.scale.setSingleStep(0.05)
        self.scale.setSpecialValueText("auto")
        self.scale.setToolTip("resize images by this factor before the model sees them: below 1 for large "
                              "objects or speed, above 1 for small objects; auto: chosen from the "
                              "reference objects' size (the sizes the model sees well)")
        self.memory = QCheckBox("time-lapse memory (ID)")
        self.memory.setToolTip("for one stack in time order: earlier predicted frames help the ID mode")
        self.recipe = QCheckBox("the model's recipe")
        self.recipe.setChecked(True)
        self.recipe.setToolTip("fit on the references as the model's preset recipe says (chosen on the "
                               "evaluation sets, docs/quality.md); untick to choose the stages below")
        self.fitting_line = QLabel("")
        self.fitting_line.setWordWrap(True)
        self.fitting_line.setToolTip("what runs on the references before the first proposal; budgets are "
                                     "steps, so the same inputs give the same proposals on any machine. "
                                     "The embedded model's recipe (refine 400 steps: MLP + random forest on "
                                     "image features) took about 19 s on a 520×696 reference on 2 CPU "
                                     "cores (docs/quality.md, Default recipe)")
        self.calibrate = QCheckBox("calibrate on the references")
        self.calibrate.setToolTip("before propagating, choose the scale (instead of the one above) and how "
                                  "touching objects are split, by predicting each half of a reference from "
                                  "the other half; costs a few model passes per candidate scale")
        self.adapt = QCheckBox("test-time adaptation")
        self.adapt.setToolTip("before propagating, fine-tune the neck and decoder of a copy of the model "
                              "on your references (the encoder stays frozen; the model on disk is not "
                              "changed; with refinement, one copy per half of each reference, averaged). "
                              "Cancel takes effect once the adaptation is over")
        self.adapt_steps = _steps_box("steps of the adaptation (per copy)")
        self.refine = QCheckBox("refine at full resolution")
        self.refine.setToolTip("before propagating, train a small pixel classifier on your references that "
                               "decides every pixel again from the model's maps and image features (edges, "
                               "texture) and marks object borders, so thin gaps and touching objects come "
                               "apart")
        self.refine_steps = _steps_box("training steps of the refiner")
        self.advanced = CollapsibleSection("advanced options")
        self.advanced.button.setToolTip("score threshold, scale, time-lapse memory, and the fitting stages "
                                        "one by one (unfolded when one of them differs from the defaults)")
        self._build_layout()
        self._choices: list[ModelChoice] = []
        self.loading = False  # the model list is being read in a worker thread
        self._loader: Any = None
        self._wanted_model = ""  # the model and device to select once the list is read
        self._wanted_device = "auto"
        self._when_loaded: list[Callable[[bool], None]] = []
        if registry_loaded():
            self._fill_registry(*read_registry())
        else:
            self._load_registry()
        for box in self.modes.values():
            box.toggled.connect(on_change)
        self.model.currentIndexChanged.connect(on_change)
        self.device.currentIndexChanged.connect(on_change)
        self.threshold.valueChanged.connect(on_change)
        self.scale.valueChanged.connect(on_change)
        self.memory.toggled.connect(on_change)
        self.calibrate.toggled.connect(on_change)
        for box, steps in ((self.adapt, self.adapt_steps), (self.refine, self.refine_steps)):
            box.toggled.connect(on_change)
            box.toggled.connect(lambda _=False: self._show_fitting())
            steps.valueChanged.connect(on_change)
            steps.valueChanged.connect(lambda _=0: self._show_fitting())
        self.calibrate.toggled.connect(lambda _=False: self._show_fitting())
        self.recipe.toggled.connect(on_change)
        self.recipe.toggled.connect(lambda _=False: self._show_fitting())
        self.model.currentIndexChanged.connect(lambda _=0: self._show_fitting())
        self._show_fitting()

    def _build_layout(self) -> None:
        modes_row = QHBoxLayout()
        for box in self.modes.values():
            modes_row.addWidget(box)
        modes_row.addStretch(1)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.refresh_models_button)
        form = narrow_form()
        form.addRow("modes", modes_row)
        form.addRow("model", model_row)
        form.addRow("device", self.device)
        fitting_row = QHBoxLayout()
        fitting_row.addWidget(self.recipe)
        fitting_row.addWidget(self.fitting_line, 1)
        form.addRow("fitting", fitting_row)
        advanced = narrow_form(self.advanced.content)
        advanced.setContentsMargins(12, 0, 0, 0)
        advanced.addRow("score threshold", self.threshold)
        advanced.addRow("scale", self.scale)
        advanced.addRow(self.memory)
        advanced.addRow(self.calibrate)
        advanced.addRow(self.adapt, self.adapt_steps)
        advanced.addRow(self.refine, self.refine_steps)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)

    # -- the registry (model list and devices) ------------------------------------------------------

    def _load_registry(self) -> None:
        """Read the model list and the devices in a worker thread (the first reading imports torch),
        started from the event loop, once the widget is up."""
        self.loading = True
        self.model.clear()
        self.model.addItem("loading models…")
        self.model.setEnabled(False)
        self.refresh_models_button.setEnabled(False)
        QTimer.singleShot(0, self._start_loader)

    def _start_loader(self) -> None:
        worker = create_worker(read_registry, _ignore_errors=True, _start_thread=False)
        worker.returned.connect(self._registry_read)
        worker.errored.connect(self._registry_failed)
        self._loader = start_tracked(worker)  # (waited for at exit: it may be importing torch)

    def when_loaded(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(ok)`` once the model list is read (at once when it is): ``ok`` is False when
        reading it failed."""
        if self.loading:
            self._when_loaded.append(callback)
        else:
            callback(bool(self._choices))

    def _notify_loaded(self, ok: bool) -> None:
        waiting, self._when_loaded = self._when_loaded, []
        for callback in waiting:
            callback(ok)

    def _registry_read(self, found: tuple[list[ModelChoice], list[str]]) -> None:
        self._loader = None
        self._fill_registry(*found)
        self._notify_loaded(True)

    def _registry_failed(self, error: BaseException) -> None:
        self._loader, self.loading = None, False
        self.model.clear()
        self.model.addItem("no model list: see the notification")
        show_error(f"SINE: reading the model list failed ({type(error).__name__}: {error})")
        self._notify_loaded(False)

    def _fill_registry(self, choices: list[ModelChoice], devices: list[str]) -> None:
        self.loading = False
        self.model.setEnabled(True)
        self.refresh_models_button.setEnabled(True)
        self.device.blockSignals(True)
        self.device.clear()
        self.device.addItems(devices)
        self.device.setCurrentIndex(max(self.device.findText(self._wanted_device), 0))
        self.device.blockSignals(False)
        self._show_models(choices, self._wanted_model)

    # -- models -------------------------------------------------------------------------------------

    def refresh_models(self, prefer: str = "") -> None:
        """Re-read the preset registry and the installed weights (while the list loads: choose later)."""
        if self.loading:
            self._wanted_model = prefer or self._wanted_model
            return
        self._show_models(model_choices(), prefer or self.model_name())

    def _show_models(self, choices: list[ModelChoice], wanted: str) -> None:
        self._choices = choices
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
        self._show_fitting()

    def model_name(self) -> str:
        return str(self.model.currentData() or "")

    def model_choice(self) -> ModelChoice:
        """The chosen, installed model (raises InputError with install steps otherwise)."""
        if self.loading:
            raise InputError("the model list is still loading: press Run again in a moment")
        from sine_model import PRESETS  # read already (the list is loaded)

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

    def model_recipe(self) -> Any:
        """The chosen model's :class:`~sine_model.FittingRecipe` (None while the list loads or for none)."""
        name = self.model_name()
        choice = next((c for c in self._choices if c.name == name), None)
        return None if choice is None else choice.recipe

    def fitting_choice(self) -> tuple[bool | None, int | None, int | None]:
        """``(calibrate, adapt_steps, refine_steps)`` for the run: all None to follow the model's recipe,
        else the ticked stages (0 steps: off)."""
        if self.recipe.isChecked():
            return None, None, None
        return (self.calibrate.isChecked(),
                int(self.adapt_steps.value()) if self.adapt.isChecked() else 0,
                int(self.refine_steps.value()) if self.refine.isChecked() else 0)

    def fitting_text(self) -> str:
        """What runs on the references before the first proposal, in words."""
        calibrate, adapt, refine = self.fitting_choice()
        recipe = self.model_recipe()
        if recipe is None:
            if calibrate is None:
                return "the model's recipe (shown once the model list is read)"
            parts = ["calibrate"] if calibrate else []
            parts += [f"adapt {adapt} steps"] if adapt else []
            parts += [f"refine {refine} steps"] if refine else []
            described = " + ".join(parts) or "none"
        else:  # the recipe, or the ticked stages with the model's kind of refiner (what runs)
            chosen = recipe if calibrate is None else \
                replace(recipe, calibrate=calibrate, adapt_steps=adapt or 0, refine_steps=refine or 0)
            described = chosen.describe()
        return "no fitting: the model alone" if described == "none" else f"runs first: {described}"

    def _show_fitting(self) -> None:
        """Mirror the recipe in the stage controls while it is followed, and say what will run."""
        following = self.recipe.isChecked()
        recipe = self.model_recipe()
        if following and recipe is not None:
            for box, on in ((self.calibrate, recipe.calibrate), (self.adapt, recipe.adapt_steps > 0),
                            (self.refine, recipe.refine_steps > 0)):
                box.blockSignals(True)
                box.setChecked(on)
                box.blockSignals(False)
            budgets = ((self.adapt_steps, recipe.adapt_steps), (self.refine_steps, recipe.refine_steps))
            for box, steps in budgets:
                if steps:
                    box.blockSignals(True)
                    box.setValue(steps)
                    box.blockSignals(False)
        for box in (self.calibrate, self.adapt, self.refine):
            box.setEnabled(not following)
        self.adapt_steps.setEnabled(not following and self.adapt.isChecked())
        self.refine_steps.setEnabled(not following and self.refine.isChecked())
        self.fitting_line.setText(self.fitting_text())

    def scale_choice(self) -> float | None:
        """The resize factor for the run; None for automatic (the spin box at its minimum, "auto")."""
        value = round(self.scale.value(), 4)
        return None if value <= self.scale.minimum() else value

    def thresholds(self) -> dict[str, float]:
        value = round(self.threshold.value(), 4)
        return {"id": value, "instance": value}

    def apply_settings(self, settings: WidgetSettings) -> None:
        for mode, box in self.modes.items():
            box.setChecked(mode in settings.modes)
        if settings.model:
            self.refresh_models(prefer=settings.model)
        self._wanted_device = settings.device
        index = self.device.findText(settings.device)
        self.device.setCurrentIndex(max(index, 0))
        self.threshold.setValue(settings.threshold)
        self.scale.setValue(settings.scale)
        self.memory.setChecked(settings.memory)
        self.recipe.setChecked(settings.recipe)
        if not settings.recipe:  # the user's own stages (while the recipe is followed, it shows the recipe)
            self.calibrate.setChecked(settings.calibrate)
            self.adapt_steps.setValue(settings.adapt_steps)
            self.adapt.setChecked(settings.adapt)
            self.refine_steps.setValue(settings.refine_steps)
            self.refine.setChecked(settings.refine)
        self._show_fitting()
        if settings.memory or not settings.recipe:
            self.advanced.set_expanded(True)  # options that change the result stay in sight

    def settings_into(self, settings: WidgetSettings) -> None:
        settings.modes = [mode for mode, box in self.modes.items() if box.isChecked()]
        # while the list loads, keep the remembered model and device, not the placeholder
        settings.model = self._wanted_model if self.loading else self.model_name()
        settings.device = self._wanted_device if self.loading else self.device.currentText()
        settings.threshold = round(self.threshold.value(), 4)
        settings.scale = round(self.scale.value(), 4)  # 0: auto
        settings.memory = self.memory.isChecked()
        settings.recipe = self.recipe.isChecked()
        settings.calibrate = self.calibrate.isChecked()
        settings.adapt = self.adapt.isChecked()
        settings.adapt_steps = int(self.adapt_steps.value())
        settings.refine = self.refine.isChecked()
        settings.refine_steps = int(self.refine_steps.value())


def _steps_box(tooltip: str) -> QSpinBox:
    """A budget in optimiser steps, 1 to 10,000."""
    box = QSpinBox()
    box.setRange(1, 10_000)
    box.setSingleStep(10)
    box.setSuffix(" steps")
    box.setToolTip(tooltip)
    return box
