"""The "Label next" section: targets ranked by uncertainty, a Next button, review marks and Export.

The list shows the unreviewed targets of the viewer's proposal layers, most uncertain first
(:func:`napari_sine._review_state.rank_inputs`, scored in a worker thread: the scoring grows with the
number and size of the targets, and napari's event loop must not wait for it). Next moves the viewer
to the top one (the plane of a stack, or the 2D target layer made visible and selected). Corrected /
Skip record the review of the current target (Accept in Review records "accepted"). Export writes the
accepted and corrected targets, with the references, as a dataset (folder dialog + format) in a
worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._inputs import InputError
from .._review_state import (
    RankedTarget,
    RankingInput,
    export_samples,
    mark,
    proposals_by_target,
    rank_inputs,
    ranking_inputs,
)
from .narrow_layout import narrow_combo
from .worker_exit import start_tracked

__all__ = ["BootstrapPanel", "EXPORT_CHOICES"]

#: Export format → label in the combo box (names of sine_model.EXPORT_FORMATS).
EXPORT_CHOICES = {
    "tiff": "TIFF images/ + masks/ (StarDist, cellpose)",
    "coco": "COCO instances (RLE)",
    "ome-zarr": "OME-Zarr + labels",
    "napari-sine": "napari-sine train folder",
}


class BootstrapPanel(QGroupBox):
    """Rank targets, move to the next one, mark corrections, export a dataset.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    current_target : callable
        Returns ``(proposal layer, plane or None, destination Labels layer name or None)`` of what the
        user is reviewing (the Review section's choice and the viewer's position).
    references : callable
        Returns the reference pairs as ``(name, image, labels)`` to export with the targets.
    """

    def __init__(
        self,
        viewer: Any,
        current_target: Callable[[], tuple[Any, Any, Any]],
        references: Callable[[], list],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Label next", parent)
        self.viewer = viewer
        self.current_target, self.references = current_target, references
        self.ranked: list[RankedTarget] = []
        self.worker: Any = None  # the export's
        self.ranking_worker: Any = None
        self._requested = self._shown = 0  # ranking generations: asked for, on screen
        self._go_when_ranked = False
        self.ranking = QListWidget()
        self.ranking.setMaximumHeight(130)
        self.ranking.setToolTip(
            "unreviewed targets, most uncertain first (score in [0, 1]: disagreement "
            "between the modes and low or spread object scores)"
        )
        self.next_button = QPushButton("Next")
        self.next_button.setToolTip("go to the most uncertain unreviewed target")
        self.corrected_button = QPushButton("Corrected")
        self.corrected_button.setToolTip(
            "mark the current target corrected (after fixing its accepted labels)"
        )
        self.skip_button = QPushButton("Skip")
        self.skip_button.setToolTip("leave the current target out of the dataset")
        self.format = narrow_combo(QComboBox())
        for key, text in EXPORT_CHOICES.items():
            self.format.addItem(text, key)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("write accepted and corrected targets with the references as a dataset")
        marks = QHBoxLayout()
        for button in (self.next_button, self.corrected_button, self.skip_button):
            marks.addWidget(button)
        export_row = QHBoxLayout()
        export_row.addWidget(self.format, 1)
        export_row.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.ranking)
        layout.addLayout(marks)
        layout.addLayout(export_row)
        self.next_button.clicked.connect(self.go_next)
        self.corrected_button.clicked.connect(lambda: self.mark_current("corrected"))
        self.skip_button.clicked.connect(lambda: self.mark_current("skipped"))
        self.export_button.clicked.connect(self.choose_export_folder)
        self.ranking.itemDoubleClicked.connect(lambda item: self.go_to(self.ranking.row(item)))

    # -- ranking ------------------------------------------------------------------------------------

    @property
    def ranking_busy(self) -> bool:
        """True while the list on screen is older than the last ranking asked for."""
        return self._shown != self._requested

    def refresh(self) -> None:
        """Rank the targets again (scored in a worker thread); the list updates when it is done.

        A refresh asked for while another is scoring supersedes it: the older answer is dropped.
        """
        self._requested += 1
        generation = self._requested
        try:
            inputs = ranking_inputs(self.viewer)
        except InputError as error:  # a damaged review in a layer's metadata
            show_error(f"SINE: {error}")
            self._go_when_ranked = False
            self._show(generation, [])
            return
        worker = create_worker(_rank, generation, inputs, _start_thread=False)
        # Bound methods, not lambdas: Qt drops the connections when the panel is deleted.
        worker.returned.connect(self._ranked)
        worker.errored.connect(self._ranking_failed)
        self.ranking_worker = start_tracked(worker)

    def _ranking_failed(self, error: BaseException) -> None:
        show_error(f"SINE: ranking the targets failed: {error}")
        self._go_when_ranked = False
        self._show(self._requested, [])

    def _ranked(self, answer: tuple[int, list[RankedTarget]]) -> None:
        self._show(*answer)

    def _show(self, generation: int, ranked: list[RankedTarget]) -> None:
        if generation != self._requested:
            return  # a newer ranking is on its way
        try:
            self.ranking.clear()
        except RuntimeError:  # the panel was deleted (viewer closed) while the worker scored
            return
        self._shown = generation
        self.ranked = ranked
        for entry in ranked:
            item = QListWidgetItem(f"{entry.uncertainty.score:.2f}  {entry.target.name}")
            item.setToolTip(entry.uncertainty.describe() or "no signal")
            self.ranking.addItem(item)
        self.next_button.setEnabled(bool(ranked))
        if self._go_when_ranked:
            self._go_when_ranked = False
            self._go_first()

    def go_next(self) -> None:
        """Move the viewer to the most uncertain unreviewed target (once the ranking is up to date)."""
        self._go_when_ranked = True
        self.refresh()

    def _go_first(self) -> None:
        if not self.ranked:
            show_info("SINE: every target is reviewed")
            return
        self.go_to(0)

    def go_to(self, row: int) -> None:
        """Show the target of ``row``: its plane of a stack, or its 2D layer."""
        target = self.ranked[row].target
        self.ranking.setCurrentRow(row)
        layers = self.viewer.layers
        if target.layer in layers:
            image = layers[target.layer]
            if target.plane is not None:
                axis = target.stack_axis + (self.viewer.dims.ndim - image.ndim)
                step = list(self.viewer.dims.current_step)
                step[axis] = target.plane
                self.viewer.dims.current_step = tuple(step)
            else:  # separate 2D targets: show this one (image + proposals), hide the other targets
                for name, proposals in proposals_by_target(self.viewer).items():
                    shown = name == target.layer
                    for layer in (layers[name] if name in layers else None, *proposals.values()):
                        if layer is not None:
                            layer.visible = shown
            layers.selection.active = image

    # -- review marks ---------------------------------------------------------------------------------

    def mark_current(self, status: str) -> None:
        """Record ``status`` for the target on screen (the Review section's proposals)."""
        proposal, plane, destination = self.current_target()
        if proposal is None:
            show_warning("SINE: choose the proposals under Review first")
            return
        names = mark(self.viewer, proposal, plane, status, destination)
        show_info(f"SINE: {', '.join(names)} marked {status}")
        self.refresh()

    # -- export ---------------------------------------------------------------------------------------

    def choose_export_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the dataset into (an empty folder)")
        if folder:
            self.export_to(folder)

    def export_to(self, folder: str, overwrite: bool = False) -> Any:
        """Export into ``folder`` with the chosen format in a worker thread; returns the worker."""
        try:
            references = self.references()
        except InputError as error:
            show_warning(f"SINE: exporting without the references ({error})")
            references = []
        try:
            samples = export_samples(self.viewer, references)
        except InputError as error:
            show_error(f"SINE: {error}")
            return None
        fmt = str(self.format.currentData())

        def work() -> Any:
            from sine_model import export_dataset

            return export_dataset(
                samples, folder, fmt, overwrite=overwrite, recipe={"made_with": "napari-sine widget"}
            )

        self.worker = create_worker(work, _start_thread=False)
        self.worker.returned.connect(lambda report: show_info(f"SINE: exported {report}"))
        self.worker.errored.connect(lambda error: show_error(f"SINE: export failed: {error}"))
        self.worker.finished.connect(lambda: self.export_button.setEnabled(True))
        self.export_button.setEnabled(False)
        return start_tracked(self.worker)


def _rank(generation: int, inputs: list[RankingInput]) -> tuple[int, list[RankedTarget]]:
    """The worker's job: the ranking, tagged with the generation that asked for it."""
    return generation, rank_inputs(inputs)
