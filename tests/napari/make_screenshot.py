"""Screenshot of napari with the SINE widget after a run on the bundled sample (for the README).

Usage (needs a display; on a headless machine run it under Xvfb)::

    xvfb-run -a python tests/napari/make_screenshot.py [docs/images/napari-sine-widget.png]

It uses the default installed model (the embedded one once it exists, else the official ``sine-vitl``
when imported). Without any installed model it falls back to a tiny *random* test model, so the
proposals in the picture are then meaningless; only the layout is real. The test
``test_napari_screenshot.py`` runs :func:`take_screenshot` into a temporary file.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "images" / "napari-sine-widget.png"


def take_screenshot(viewer, path: str | Path, model: str | None = None, scale: float | None = None,
                    threshold: float | None = None, timeout_s: float = 600) -> Path:
    """Open the sample, dock the widget, run, select a proposal layer, save a window screenshot.

    Parameters
    ----------
    viewer : napari.Viewer
        A shown viewer.
    path : path
        Where the PNG goes.
    model : str, optional
        Preset to use (default: the widget's default model).
    scale : float, optional
        Scale option of the run.
    threshold : float, optional
        Score threshold of the run.
    timeout_s : float
        Longest wait for the run.

    Returns
    -------
    Path
        ``path``.
    """
    import time

    from qtpy.QtWidgets import QApplication

    from napari_sine._qt.widget import SineWidget
    from napari_sine._sample_data import nuclei_sample

    for data, kwargs, kind in nuclei_sample():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SINE", area="right")
    if model:
        widget.options.refresh_models(prefer=model)
    if scale:
        widget.options.scale.setValue(scale)
    if threshold:
        widget.options.threshold.setValue(threshold)
    for mode in ("id", "instance", "semantic"):
        widget.options.modes[mode].setChecked(mode == "instance")
    widget.run()
    deadline = time.monotonic() + timeout_s
    while widget.runner.running:
        if time.monotonic() > deadline:
            widget.runner.cancel()
            raise TimeoutError("the run did not finish in time")
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.layers.selection.active = viewer.layers["targets [SINE instance]"]
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def _tiny_preset_fallback(tmp: Path) -> str | None:
    """Register the tiny random test preset when no real model is installed; its name, else None."""
    from napari_sine._models import default_model, model_choices

    if default_model(model_choices()) is not None:
        return None
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ["SINE_CACHE_DIR"] = str(tmp)
    from sine_plugin_helpers import TINY_ARCH, TINY_PRESET, build_tiny_sine

    from sine_model import EncoderConfig, ModelConfig
    from sine_model.hub.presets import InputSpec, LicenceNotice, Preset, WeightSource, register_preset
    from sine_model.hub.pretrained import import_checkpoint, save_preset_weights

    preset = register_preset(Preset(
        name=TINY_PRESET, description="tiny random SINE (screenshot fallback)",
        model=ModelConfig(kind=EncoderConfig("tiny", 32, 2, 2), **TINY_ARCH),
        licence=LicenceNotice(name="test", text="test weights"),
        weights=WeightSource(kind="url", location="https://example.invalid/test-tiny",
                             filename="test-tiny.safetensors"),
        input=InputSpec(pad_size=112),
    ))
    save_preset_weights(build_tiny_sine(**TINY_ARCH), preset, tmp / "tiny.safetensors")
    import_checkpoint(tmp / "tiny.safetensors", preset=preset, allow_download=False)
    print("no model installed: using a tiny RANDOM model, the proposals are meaningless", file=sys.stderr)
    return TINY_PRESET


def main(argv: list[str]) -> int:
    import tempfile

    import napari

    out = Path(argv[0]) if argv else DEFAULT_PATH
    with tempfile.TemporaryDirectory() as tmp:
        tiny = _tiny_preset_fallback(Path(tmp))
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1500, 950)
        try:
            # explicit values: the widget would otherwise start from the remembered settings
            take_screenshot(viewer, out, model=tiny, scale=0.16 if tiny else 1.0,
                            threshold=0.05 if tiny else 0.5)
        finally:
            viewer.close()
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
