"""Opening the dock widget in a fresh napari does not import torch on napari's main thread.

A user starts napari and picks Plugins ▸ SINE. Importing torch takes seconds; on the main thread it
would freeze napari that long. The widget's modules import no torch, and the model list and the
devices (whose first reading imports torch) are read in a worker thread once the widget is up. This runs
in a fresh interpreter (here torch is imported already), on the virtual display of the test session, and
records the thread of every import of torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.abc, json, sys, threading, time

torch_imports = []  # thread names of the imports of torch


class WatchTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            torch_imports.append(threading.current_thread().name)
        return None  # the usual finders import it


sys.meta_path.insert(0, WatchTorch())
import napari
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer(show=True)
dock, widget = viewer.window.add_plugin_dock_widget("napari-sine", "SINE")
at_open = {"torch": "torch" in sys.modules, "loading": widget.options.loading,
           "model_list": widget.options.model.itemText(0)}
deadline = time.monotonic() + 300
while widget.options.loading and time.monotonic() < deadline:
    QApplication.processEvents()
    time.sleep(0.02)
options = widget.options
print("RESULT=" + json.dumps({
    "at_open": at_open, "still_loading": options.loading, "torch_imports": torch_imports,
    "main_thread": threading.main_thread().name, "model": options.model_name(),
    "devices": [options.device.itemText(i) for i in range(options.device.count())],
}))
viewer.close()
"""


@pytest.fixture
def installed():
    try:
        return distribution("napari-sine")
    except PackageNotFoundError:
        pytest.skip("napari-sine is not installed (pip install -e .): napari cannot find the plugin")


def test_widget_opens_without_importing_torch_on_the_main_thread(installed, tmp_path):
    if not os.environ.get("DISPLAY"):
        pytest.skip("no display: run under Xvfb (pytest-xvfb starts one when xvfb is installed)")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, SINE_CACHE_DIR=str(tmp_path / "cache"),
               NAPARI_SINE_CONFIG_DIR=str(tmp_path / "config"), NAPARI_CONFIG=str(tmp_path / "napari.yaml"),
               HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT="))[7:])
    # the widget is up before torch: its list says so, and nothing imported torch on the main thread
    assert result["at_open"] == {"torch": False, "loading": True, "model_list": "loading models…"}
    assert result["torch_imports"], "the model list was read without torch?"
    assert result["main_thread"] not in result["torch_imports"], result
    # then the worker fills the list: the embedded model (the only one installed here) and the devices
    assert not result["still_loading"]
    assert result["model"] == "sine-embedded"
    assert result["devices"][0] == "auto" and "cpu" in result["devices"]
