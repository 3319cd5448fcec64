"""The napari-sine dock widget: references → targets → run → review.

It gathers the user's choices, hands the work to :class:`~napari_sine._qt.runner.RunController` (a
generator worker, so napari never freezes) and shows problems as napari notifications. It holds no
model logic: that lives in ``sine_model``.
"""

from __future__ import annotations

from typing import Any

import napari
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QSize
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sine_model import PropagationError

from .._inputs import (
    InputError,
    check_channels,
    is_stack,
    plane_view,
    reference_arrays,
    target_planes,
)
from .._layers import ProposalSink
from .._settings import WidgetSettings
from .._worker import RunRequest
from .bootstrap_panel import BootstrapPanel
from .layer_widgets import LayerChecklist, LayerListWatcher
from .narrow_layout import ColumnScrollArea
from .options_panel import OptionsPanel
from .reference_panel import ReferencePanel
from .review_panel import ReviewPanel
from .runner import RunController, run_records

__all__ = ["SineWidget"]


class SineWidget(QWidget):
    """Dock widget: propagate labels from reference pairs to target images with SINE.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget works in.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.settings = WidgetSettings.load()
        self._loading = True  # no saving while the controls are being set up
        self._run_pending = False  # Run was pressed while the model list was still loading
        self.references = ReferencePanel(napari_viewer)
        self.targets = LayerChecklist(napari_viewer, lambda layer: isinstance(layer, Image))
        self.targets.setToolTip("tick one image layer holding a stack, or several 2D image layers")
        self.targets.setMaximumHeight(110)
        self.stack_axis = QSpinBox()
        self.stack_axis.setRange(0, 2)
        self.stack_axis.setPrefix("stack axis ")
        self.stack_axis.setToolTip("axis of 3D target layers along which the targets are stacked")
        self.options = OptionsPanel(self._save_settings)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("propagate the references to the targets (proposals stream into "
                                   "'<target> [SINE <mode>]' layers)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("stop after the current target; finished targets are kept")
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.review = ReviewPanel(napari_viewer, on_promote=self._promote, on_error=self._notify)
        self.bootstrap = BootstrapPanel(napari_viewer, self.review.current_review_target,
                                        self._export_references)
        self.review.on_reviewed = self.bootstrap.refresh
        self.runner = RunController(napari_viewer, on_status=self.status.setText, on_done=self._run_done)
        self._build_layout()
        self._apply_settings()
        self._loading = False
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.review.min_score.valueChanged.connect(self._save_settings)
        self.review.scope.currentIndexChanged.connect(self._save_settings)
        self.targets.itemChanged.connect(self._update_target_options)
        self._auto_check_targets()
        self.watcher = LayerListWatcher(napari_viewer, self._refresh_layers)
        self.destroyed.connect(self.runner.cancel)  # viewer closed mid-run: stop the worker

    def _build_layout(self) -> None:
        """The sections in one column inside a vertical scroll area.

        The dock stays narrow (combo boxes elide long layer names, forms put labels above fields when
        short of room, the advanced options fold away) and any height fits: napari's canvas keeps most
        of a default-sized window.
        """
        targets_box = QGroupBox("Targets")
        targets_layout = QVBoxLayout(targets_box)
        targets_layout.addWidget(self.targets)
        targets_layout.addWidget(self.stack_axis)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        content = QWidget()
        column = QVBoxLayout(content)
        column.setContentsMargins(0, 0, 4, 0)
        column.addWidget(self.references)
        column.addWidget(targets_box)
        column.addWidget(self.options)
        column.addLayout(run_row)
        column.addWidget(self.status)
        column.addWidget(self.review)
        column.addWidget(self.bootstrap)
        column.addStretch(1)
        self.scroll = ColumnScrollArea()
        self.scroll.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll)

    def sizeHint(self) -> QSize:  # noqa: N802  (Qt API)
        """Open as narrow as the sections allow (napari sizes a new dock by this); users can widen it."""
        return QSize(self.minimumSizeHint().width(), super().sizeHint().height())

    # -- settings and layer lists -------------------------------------------------------------------

    def _apply_settings(self) -> None:
        self.options.apply_settings(self.settings)
        self.review.min_score.setValue(self.settings.min_score)
        self.review.set_scope(self.settings.accept_scope)

    def _save_settings(self, *args: Any) -> None:
        if self._loading:
            return
        self.options.settings_into(self.settings)
        self.settings.min_score = round(self.review.min_score.value(), 4)
        self.settings.accept_scope = self.review.scope_key()
        self.settings.save()

    def _refresh_layers(self) -> None:
        self.references.refresh()
        self.targets.refresh()
        self.review.refresh()
        self._auto_check_targets()

    def _auto_check_targets(self) -> None:
        """With nothing ticked, tick the image layers that are not reference images."""
        if self.targets.checked_layers():
            self._update_target_options()
            return
        reference_images = {id(row.image.layer()) for row in self.references.rows}
        self.targets.set_checked([layer for layer in self.targets.layers()
                                  if id(layer) not in reference_images])
        self._update_target_options()

    def _update_target_options(self, *args: Any) -> None:
        checked = self.targets.checked_layers()
        stacks = [layer for layer in checked if is_stack(layer)]
        self.stack_axis.setVisible(bool(stacks))
        self.options.memory.setEnabled(len(checked) == 1 and bool(stacks))

    # -- running ------------------------------------------------------------------------------------

    def _notify(self, error: Exception) -> None:
        show_error(f"SINE: {error}")

    def _request(self) -> tuple[RunRequest, ProposalSink]:
        choice = self.options.model_choice()
        modes = self.options.chosen_modes()
        references = self.references.choices()
        pairs = [reference_arrays(ref) for ref in references]
        classes = self.references.class_map()
        planes = target_planes(self.targets.checked_layers(), self.stack_axis.value())
        channel_axis = check_channels(references, planes)
        memory = self.options.memory.isChecked() and self.options.memory.isEnabled()
        if memory and "id" not in modes:
            raise InputError("time-lapse memory improves ID proposals: tick the ID mode or untick memory")
        request = RunRequest(
            preset=choice.name, device=self.options.device.currentText(), modes=modes,
            thresholds=self.options.thresholds(), scale=self.options.scale_choice(), memory=memory,
            pairs=pairs, classes=classes, targets=[plane_view(p) for p in planes], channel_axis=channel_axis,
            **dict(zip(("calibrate", "adapt_steps", "refine_steps"), self.options.fitting_choice(),
                       strict=True)),
        )
        records = run_records(references, pairs, planes, request, self.runner.versions)
        max_label = max(int(labels.max()) for _, labels in pairs)
        max_class = max(classes.values()) if classes else 1
        return request, ProposalSink(self.viewer, planes, modes, max_label, max_class, records,
                                     on_reset=self.review.filter.forget)

    @property
    def busy(self) -> bool:
        """A run is in progress or waits for the model list."""
        return self.runner.running or self._run_pending

    def run(self) -> None:
        """Start a run with the current choices (a notification explains any problem).

        Pressed while the model list is still being read (the first use in a session imports the model
        code), the run starts as soon as the list is there.
        """
        if self.busy:
            return
        if self.options.loading:
            self._run_pending = True
            self.status.setText("waiting for the model list (the first run imports the model code)…")
            self.run_button.setEnabled(False)
            self.cancel_button.setEnabled(True)
            self.options.when_loaded(self._start_pending_run)
            return
        self._save_settings()
        try:
            request, sink = self._request()
            self.runner.start(request, sink)
        except (InputError, PropagationError) as error:
            self._notify(error)
            return
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def _start_pending_run(self, loaded: bool) -> None:
        if not self._run_pending:  # cancelled while waiting
            return
        self._run_pending = False
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if loaded:
            self.status.setText("ready")
            self.run()
        else:
            self.status.setText("no model list: see the notification")

    def cancel(self) -> None:
        """Stop the run after the current target (finished targets stay), or drop a waiting run."""
        if self._run_pending:
            self._run_pending = False
            self.run_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
            self.status.setText("cancelled before the start")
            return
        self.runner.cancel()

    def _run_done(self, sink: ProposalSink | None, cancelled: bool, error: BaseException | None) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if sink is None:
            return
        if error is not None:
            self.status.setText(f"failed after {sink.done} target(s)")
        elif cancelled:
            self.status.setText(f"cancelled: {sink.done} target(s) kept")
        else:
            self.status.setText(f"done: {sink.done} target(s)")
        layers = [layer for layer in sink.all_layers() if layer in self.viewer.layers]
        if layers and sink.done:
            self.review.show_proposals(layers[0])
            self.bootstrap.refresh()

    def _export_references(self) -> list[tuple[str, Any, Any]]:
        """The reference pairs as (name, image, labels), exported with the reviewed targets."""
        pairs = []
        for choice in self.references.choices():
            image, labels = reference_arrays(choice)
            plane = "" if choice.plane is None else f"[{choice.plane}]"
            pairs.append((f"{choice.image.name}{plane}", image, labels))
        return pairs

    def _promote(self, image: Image, labels: Labels, plane: int | None) -> None:
        """Add (target image, accepted labels) as a reference pair and run again."""
        for row in self.references.rows:
            if row.image.layer() is image and row.labels.layer() is labels and \
                    (plane is None or row.plane.value() == plane):
                self._notify(InputError("this target is already a reference"))
                return
        self.references.add_row(image, labels, plane)
        self.status.setText(f"promoted '{labels.name}'" + (f" plane {plane}" if plane is not None else "")
                            + " to a reference; running again")
        self.run()

    # -- teardown -----------------------------------------------------------------------------------

    def closeEvent(self, event: Any) -> None:  # noqa: N802  (Qt API)
        """Stop a run and disconnect from the viewer."""
        self.runner.cancel()
        self.watcher.close()
        self.review.undo_tracker.disarm()
        super().closeEvent(event)
