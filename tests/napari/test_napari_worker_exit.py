"""The plugin's workers are waited for at interpreter exit (a script or kernel that closes napari and
exits while a worker runs must not abort)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# The worker cannot finish before the count is printed (it waits for the gate, opened after the print),
# so the count does not depend on how busy the machine is.
SCRIPT = """
import threading, time
from qtpy.QtWidgets import QApplication
app = QApplication.instance() or QApplication([])
from napari.qt.threading import create_worker
from napari_sine._qt.worker_exit import in_flight, start_tracked

gate = threading.Event()

def slow():
    gate.wait()
    time.sleep(1.0)
    return 1

worker = create_worker(slow, _start_thread=False)
worker.returned.connect(lambda value: None)
start_tracked(worker)
print("in flight at exit:", in_flight(), flush=True)
gate.set()
"""


def test_a_worker_running_at_exit_is_waited_for(tmp_path):
    """Did: start a 1-second worker through start_tracked and let the interpreter exit at once. Must: exit
    status 0, no deleted-signals error (started with a plain ``worker.start()`` the same script aborts
    with 'wrapped C/C++ object of type WorkerBaseSignals has been deleted', exit status 134)."""
    process = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                             cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "in flight at exit: 1" in process.stdout
    assert "has been deleted" not in process.stderr


def test_every_worker_the_plugin_starts_is_tracked():
    """Workers are started only by worker_exit.start_tracked (a plain ``.start()`` on a worker elsewhere
    would bring the exit abort back)."""
    package = Path(__file__).resolve().parents[2] / "napari_sine"
    plain = [f"{path.name}: {line.strip()}" for path in package.rglob("*.py") if path.name != "worker_exit.py"
             for line in path.read_text(encoding="utf-8").splitlines()
             if re.search(r"worker\w*\.start\(\)", line)]
    assert plain == []
