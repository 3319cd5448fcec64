"""User flow: napari first, then the SINE widget, the nuclei sample and one Run with the defaults.

Run by ``tests/user_flows/test_user_flow_napari.py`` in a fresh interpreter, exactly in a user's order:
nothing is imported before napari, and only public entry points are used (napari's viewer, its
plugin dock-widget and sample APIs, the widget's Run button). Prints one line
``USER_FLOW_RESULT {json}`` for the test; any crash shows as the process's exit status instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time

RUN_CEILING_S = float(os.environ.get("USER_FLOW_CEILING_S", "600"))  # a bound on waiting, not a speed test


def layer_digest(layer) -> str:
    """sha256 of a layer's name, dtype, shape and data bytes (what "unchanged" means here)."""
    import numpy as np  # imported by napari already: the order stays napari first

    data = np.ascontiguousarray(np.asarray(layer.data))
    digest = hashlib.sha256(f"{layer.name}|{data.dtype.str}|{data.shape}".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def main() -> dict:
    """Open napari, the widget and the sample, press Run, wait, and describe what the user sees."""
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    started = time.perf_counter()
    viewer = napari.Viewer()  # shown: its OpenGL context (Mesa's libLLVM on most Linux desktops) exists
    viewer_s = time.perf_counter() - started
    app = QApplication.instance()
    app.processEvents()

    started = time.perf_counter()
    _, widget = viewer.window.add_plugin_dock_widget("napari-sine", "SINE")
    app.processEvents()
    widget_s = time.perf_counter() - started

    viewer.open_sample("napari-sine", "nuclei")
    app.processEvents()
    user_layers = {layer.name: layer_digest(layer) for layer in viewer.layers}

    started = time.perf_counter()
    widget.run_button.click()  # nothing changed: the default model, references and targets as offered
    app.processEvents()  # (pressed at once: the run may wait for the model list, read in a worker)
    deadline = time.monotonic() + RUN_CEILING_S
    threads_seen: set[str] = set()  # (the engine's workers answering targets at once are named)
    while widget.busy and time.monotonic() < deadline:
        app.processEvents()
        threads_seen.update(thread.name for thread in threading.enumerate())
        time.sleep(0.01)
    finished = not widget.busy
    run_s = time.perf_counter() - started

    proposals = {}
    for layer in viewer.layers:
        if "[SINE " in layer.name:
            data = np.asarray(layer.data)
            proposals[layer.name] = {
                "kind": type(layer).__name__,
                "shape": list(data.shape),
                "nonzero_per_plane": [int(np.count_nonzero(p)) for p in data.reshape(-1, *data.shape[-2:])],
                "labels": int(np.count_nonzero(np.unique(data))),
            }
    after = {layer.name: layer_digest(layer) for layer in viewer.layers if layer.name in user_layers}
    result = {
        "finished": finished,
        "status": widget.status.text(),
        "user_layers_before": user_layers,
        "user_layers_after": after,
        "proposals": proposals,
        "target_threads": sorted(name for name in threads_seen if name.startswith("sine-target")),
        "seconds": {"viewer": round(viewer_s, 2), "widget_open": round(widget_s, 2), "run": round(run_s, 2)},
        "files": {name: getattr(sys.modules.get(name), "__file__", None)
                  for name in ("napari_sine", "sine_model")},
        "loaded": sorted(name for name in ("timm", "torchvision", "torch._dynamo", "triton")
                         if name in sys.modules),
    }
    if widget.busy:
        widget.cancel()
    viewer.close()
    app.processEvents()
    return result


if __name__ == "__main__":
    print("USER_FLOW_RESULT " + json.dumps(main()), flush=True)
