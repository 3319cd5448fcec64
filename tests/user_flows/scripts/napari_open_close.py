"""User flow: napari, the SINE widget, then the viewer closed and Python gone while the model list loads.

A script (or a notebook kernel shut down) that opens the widget and ends at once: the model list is
still being read in a worker thread (its first reading imports torch, seconds). napari waits for its
workers only when its event loop quits, which such a script never starts. Prints one line
``USER_FLOW_RESULT {json}``; the process must then exit with status 0 (a thread still importing torch
while the interpreter finalises aborted it, SIGABRT, before the widget waited for it at exit).
"""

from __future__ import annotations

import json
import sys


def main() -> dict:
    """Open napari and the widget, close the viewer at once, report whether the list was still loading."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-sine", "SINE")
    app = QApplication.instance()
    app.processEvents()  # starts the model-list worker
    result = {"loading_at_close": bool(widget.options.loading), "torch_loaded": "torch" in sys.modules}
    viewer.close()
    return result


if __name__ == "__main__":
    print("USER_FLOW_RESULT " + json.dumps(main()), flush=True)
