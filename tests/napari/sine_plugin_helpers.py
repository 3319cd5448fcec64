"""Shared fixtures and helpers of the napari plugin tests (``tests/napari/test_napari_*.py``).

There is deliberately no ``conftest.py`` here: a second ``conftest`` module would shadow
``tests/conftest.py`` (the core tests import from it). Test modules import what they use, the
fixtures under ``*_fixture`` names (``plugin_env``, ``tiny_preset``, ``sample_viewer`` inside the
tests), and set ``pytestmark = WARNINGS_AS_ERRORS``.

Run under a virtual X server (pytest-xvfb starts one); ``QT_QPA_PLATFORM=offscreen`` cannot draw
layers. Nothing here downloads anything: the tiny preset's weights are written into a temporary cache.
"""

from __future__ import annotations

import time

# napari and its Qt part first, then torch and sine_model: a user's order (napari running, then the
# plugin). Imported here, at collection time, so that import-time deprecation warnings of napari's
# dependencies stay warnings; inside the tests every warning is an error (``WARNINGS_AS_ERRORS``).
# tests/conftest.py has imported torch already in a pytest session: tests/user_flows checks the order
# in fresh interpreters.
import napari._qt  # noqa: F401
import napari.layers  # noqa: F401
import pytest
import torch

from sine_model import EncoderConfig, ModelConfig, build_sine
from sine_model.hub.presets import PRESETS, InputSpec, LicenceNotice, Preset, WeightSource, register_preset
from sine_model.hub.pretrained import import_checkpoint, save_preset_weights

TINY_PRESET = "test-tiny"
TINY_ARCH = dict(dim=32, num_heads=4, ffn_dim=64, num_decoder_layers=3, num_queries=10)
# One 112-px model input covers a whole 520×696 sample image at this scale (1 tile per image).
TINY_SCALE = 0.16
RUN_TIMEOUT_MS = 180_000

# napari's warnings (and every other warning) raised during a plugin test fail it. One exception:
# napari silences scikit-image's CIE-LAB clipping warning while it builds a Labels layer's random colormap,
# with `warnings.catch_warnings`, which is not thread-safe: while a run's worker thread enters and leaves
# its own catch_warnings blocks (torch and scipy do), napari's filter can be lost and the warning escapes
# (seen once in CI). It says nothing about the plugin, so it is ignored here too.
WARNINGS_AS_ERRORS = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB, via XYZ to sRGB:UserWarning"),
]


def build_tiny_sine(**kwargs):
    """The tiny architecture of the core tests (random weights, seconds on a CPU)."""
    torch.manual_seed(0)
    return build_sine(EncoderConfig("tiny", 32, 2, 2), **kwargs)


@pytest.fixture(name="plugin_env")
def plugin_env_fixture(tmp_path, monkeypatch):
    """Private weights cache and settings folder; the hub is never contacted."""
    monkeypatch.setenv("SINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NAPARI_SINE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture(name="tiny_preset")
def tiny_preset_fixture(plugin_env):
    """Register and install the tiny test preset (removed again afterwards)."""
    preset = Preset(
        name=TINY_PRESET,
        description="tiny random SINE for tests",
        model=ModelConfig(kind=EncoderConfig("tiny", 32, 2, 2), **TINY_ARCH),
        weights=WeightSource(kind="url", location="https://example.invalid/test-tiny",
                             filename="test-tiny.safetensors", description="test weights"),
        licence=LicenceNotice(name="test", text="test weights"),
        input=InputSpec(pad_size=112),
    )
    register_preset(preset)
    try:
        path = plugin_env / "test-tiny.safetensors"
        save_preset_weights(build_tiny_sine(**TINY_ARCH), preset, path)
        import_checkpoint(path, preset=preset, allow_download=False)
        yield preset
    finally:
        PRESETS.pop(TINY_PRESET, None)


@pytest.fixture(name="sample_viewer")
def sample_viewer_fixture(make_napari_viewer, tiny_preset):
    """A viewer with the sample layers and the docked widget set to the tiny preset."""
    from napari_sine._qt.widget import SineWidget
    from napari_sine._sample_data import nuclei_sample

    viewer = make_napari_viewer()
    for data, kwargs, kind in nuclei_sample():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SINE")
    widget.options.refresh_models(prefer=TINY_PRESET)
    widget.options.scale.setValue(TINY_SCALE)
    widget.options.device.setCurrentText("cpu")
    return viewer, widget


def wait_for_run(qtbot, widget, timeout: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the widget's run has finished (including a run waiting for the model list)."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def collect_notifications(monkeypatch) -> list[str]:
    """Messages of the napari notifications the widget shows (as seen by napari's manager)."""
    from napari.utils.notifications import notification_manager

    messages: list[str] = []
    original = notification_manager.dispatch

    def dispatch(notification):
        messages.append(str(notification.message))
        return original(notification)

    monkeypatch.setattr(notification_manager, "dispatch", dispatch)
    return messages


class StallMeter:
    """Longest gap between ticks of a 10 ms QTimer: how long the event loop was blocked.

    Gaps over 50 ms are kept in ``long_gaps`` as (start in s since :meth:`start`, length in s, main-thread
    CPU time in s). The CPU time is what the main thread itself spent in the gap; the rest of a gap is
    waiting: for the operating system to schedule the process (other processes), for the GIL, a lock or
    I/O. A gap can only hold more than 50 ms of CPU if it lasted more than 50 ms, so none is missed.
    """

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = self.origin = self.last_cpu = 0.0
        self.max_gap = 0.0
        self.ticks = 0
        self.long_gaps: list[tuple[float, float, float]] = []

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        gap = now - self.last
        if gap > 0.05:
            start = self.last - self.origin
            self.long_gaps.append((round(start, 3), round(gap, 3), round(cpu - self.last_cpu, 3)))
        self.max_gap = max(self.max_gap, gap)
        self.last, self.last_cpu, self.ticks = now, cpu, self.ticks + 1

    def start(self) -> None:
        self.last = self.origin = time.perf_counter()
        self.last_cpu = time.thread_time()
        self.ticks, self.max_gap, self.long_gaps = 0, 0.0, []
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
