"""The plugin's worker threads are waited for when Python exits.

napari waits for its workers when its event loop quits, but a script that closes the viewer and exits (or
a kernel shutdown) skips that: a worker still running while the interpreter finalises finds its Qt signals
deleted (``RuntimeError: wrapped C/C++ object of type WorkerBaseSignals has been deleted``, measured on the
"Label next" ranking started at the end of a run) or is still importing torch, and the process aborts.
Every worker the plugin starts goes through :func:`start_tracked`.
"""

from __future__ import annotations

import atexit
from typing import Any

from qtpy.QtCore import QThreadPool

__all__ = ["EXIT_WAIT_MS", "in_flight", "start_tracked"]

#: Longest wait at interpreter exit for the plugin's workers still running (they cannot be interrupted).
EXIT_WAIT_MS = 120_000
_in_flight: set[Any] = set()
_registered: list[bool] = []  # (a list, not a global flag: set once, at the first worker)


def start_tracked(worker: Any) -> Any:
    """Start a napari worker (created with ``_start_thread=False``), kept until it finishes; return it."""
    if not _registered:
        atexit.register(_await_at_exit)
        _registered.append(True)
    _in_flight.add(worker)
    worker.finished.connect(lambda: _in_flight.discard(worker))
    worker.start()
    return worker


def in_flight() -> int:
    """How many of the plugin's workers are running."""
    return len(_in_flight)


def _await_at_exit() -> None:
    if _in_flight:
        QThreadPool.globalInstance().waitForDone(EXIT_WAIT_MS)
