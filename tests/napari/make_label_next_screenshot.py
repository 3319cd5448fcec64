"""Screenshot of the widget's "Label next" list after a run on the bundled sample (for the README).

Usage (needs a display; on a headless machine run it under Xvfb)::

    xvfb-run -a python tests/napari/make_label_next_screenshot.py [docs/images/napari-sine-label-next.png]

Runs the default installed model (the embedded one) on the sample with all three modes, ranks the targets
and presses Next, then saves the window.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "images" / "napari-sine-label-next.png"


def take_label_next_screenshot(viewer, path: str | Path, timeout_s: float = 900) -> Path:
    """Open the sample, dock the widget, run all modes, rank, press Next, save a window screenshot."""
    from qtpy.QtWidgets import QApplication

    from napari_sine._qt.widget import SineWidget
    from napari_sine._sample_data import nuclei_sample

    for data, kwargs, kind in nuclei_sample():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SINE", area="right")
    widget.options.scale.setValue(1.0)
    for mode in ("id", "instance", "semantic"):
        widget.options.modes[mode].setChecked(True)
    deadline = time.monotonic() + timeout_s
    while widget.options.loading:  # the model list loads in a worker once the widget is open
        if time.monotonic() > deadline:
            raise TimeoutError("the model list did not load in time")
        QApplication.processEvents()
        time.sleep(0.02)
    widget.run()
    while widget.runner.running:
        if time.monotonic() > deadline:
            widget.runner.cancel()
            raise TimeoutError("the run did not finish in time")
        QApplication.processEvents()
        time.sleep(0.02)
    for layer in viewer.layers:
        layer.visible = layer.name in ("targets", "targets [SINE instance]")
    widget.bootstrap.refresh()
    widget.bootstrap.go_next()
    viewer.layers.selection.active = viewer.layers["targets [SINE instance]"]
    viewer.reset_view()
    widget.scroll.ensureWidgetVisible(widget.bootstrap)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def main(argv: list[str]) -> int:
    import napari

    out = Path(argv[0]) if argv else DEFAULT_PATH
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    try:
        take_label_next_screenshot(viewer, out)
    finally:
        viewer.close()
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
