"""Reliability, surface "napari": the user's layers after a failure, a cancel, Accept + Undo, and a run
whose layers the user deletes while it runs.

Reuses the plugin tests' fixtures (``tests/napari/sine_plugin_helpers.py``: the bundled sample in a
viewer, the docked widget on the tiny preset, napari imported before torch as a user's session does).
"user's layers" are every layer that was there before the run: their data must stay byte-for-byte the
same whatever happens to the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "napari"))  # the plugin tests' helpers

from reliability_helpers import note  # noqa: E402
from sine_plugin_helpers import WARNINGS_AS_ERRORS, collect_notifications, wait_for_run  # noqa: E402
from sine_plugin_helpers import plugin_env_fixture as plugin_env_fixture  # noqa: E402
from sine_plugin_helpers import sample_viewer_fixture as sample_viewer_fixture  # noqa: E402
from sine_plugin_helpers import tiny_preset_fixture as tiny_preset_fixture  # noqa: E402

from sine_model.hub.pretrained import installed_weights  # noqa: E402

pytestmark = WARNINGS_AS_ERRORS


def snapshot(viewer) -> dict[str, bytes]:
    """Every layer's name → its data's bytes (with dtype and shape)."""
    return {layer.name: np.asarray(layer.data).dtype.str.encode() + str(np.shape(layer.data)).encode()
            + np.ascontiguousarray(layer.data).tobytes() for layer in viewer.layers}


def user_layers(viewer, names) -> dict[str, bytes]:
    return {name: data for name, data in snapshot(viewer).items() if name in names}


def test_failure_leaves_user_layers_unchanged(sample_viewer, qtbot, monkeypatch, record_property):
    """Did: a run whose weights file is damaged (it fails in the worker). Must: a notification, the
    widget usable again, no proposal layer left, every user layer byte-for-byte unchanged."""
    messages = collect_notifications(monkeypatch)
    viewer, widget = sample_viewer
    before = snapshot(viewer)
    weights = installed_weights("test-tiny").path
    weights.write_bytes(weights.read_bytes() + b"damaged")
    widget.run()
    wait_for_run(qtbot, widget)
    note(record_property, next((m for m in messages if "SINE:" in m), widget.status.text()))
    assert widget.status.text().startswith("failed") and widget.run_button.isEnabled()
    assert snapshot(viewer) == before


def test_cancel_leaves_user_layers_unchanged(sample_viewer, qtbot, record_property):
    """Did: cancel a 24-target run after its first target. Must: the run stops with its finished targets,
    and every layer that existed before it is byte-for-byte unchanged."""
    viewer, widget = sample_viewer
    targets = viewer.layers["targets"]
    long_stack = viewer.add_image(np.concatenate([targets.data] * 8), name="long")
    before = snapshot(viewer)
    widget.targets.set_checked([long_stack])
    widget.run()
    qtbot.waitUntil(lambda: widget.runner.sink is not None and widget.runner.sink.done >= 1, timeout=120_000)
    widget.cancel_button.click()
    wait_for_run(qtbot, widget)
    note(record_property, widget.status.text())
    assert widget.status.text().startswith("cancelled")
    assert user_layers(viewer, before) == before


def test_accept_then_undo_restores_the_users_labels(sample_viewer, qtbot, record_property):
    """Did: a full run, then Accept of all proposals of one mode (the first of instance, semantic, id
    that has any) into the user's own labels layer (with a
    painted object), then Undo. Must: Accept changes it without touching the painted object; Undo
    restores it byte-for-byte; the other user layers never change."""
    viewer, widget = sample_viewer
    mine_data = np.zeros(viewer.layers["targets"].data.shape, np.uint16)
    mine_data[0, 10:30, 10:30] = 42
    mine = viewer.add_labels(mine_data, name="mine")
    before = snapshot(viewer)
    widget.run()
    wait_for_run(qtbot, widget)
    review = widget.review
    review.refresh()
    proposals = [viewer.layers[f"targets [SINE {mode}]"] for mode in ("instance", "semantic", "id")]
    shown = [layer for layer in proposals if np.asarray(layer.data).any()]
    assert shown, "the run proposed nothing to accept"
    review.proposals.set_layer(shown[0])
    review.destination.set_layer(mine)
    review.set_scope("all")
    review.accept_button.click()
    accepted = snapshot(viewer)["mine"] != before["mine"]
    assert accepted, "Accept changed nothing: the case would not test Undo"
    assert (mine.data[0, 10:30, 10:30] == 42).all()
    review.undo_button.click()
    note(record_property, f"accept changed the layer: {accepted}; after undo equal: "
                          f"{snapshot(viewer)['mine'] == before['mine']}")
    assert user_layers(viewer, before) == before


def test_deleting_the_runs_layers_mid_run_ends_cleanly(sample_viewer, qtbot, record_property):
    """Did: during a 24-target run, deleted its proposal layers from the viewer. Must: the run ends (no
    exception escapes to Qt), the widget is usable again, and the user layers are unchanged."""
    viewer, widget = sample_viewer
    targets = viewer.layers["targets"]
    long_stack = viewer.add_image(np.concatenate([targets.data] * 8), name="long")
    before = snapshot(viewer)
    widget.targets.set_checked([long_stack])
    widget.run()
    qtbot.waitUntil(lambda: widget.runner.sink is not None and widget.runner.sink.done >= 1, timeout=120_000)
    for layer in [layer for layer in viewer.layers if "[SINE" in layer.name]:
        viewer.layers.remove(layer)
    wait_for_run(qtbot, widget)
    note(record_property, widget.status.text())
    assert widget.run_button.isEnabled()
    assert not any("[SINE" in layer.name for layer in viewer.layers)
    assert user_layers(viewer, before) == before
