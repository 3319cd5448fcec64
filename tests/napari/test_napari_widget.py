"""The dock widget: docking, model and device lists, settings, errors as notifications."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from sine_plugin_helpers import TINY_PRESET, WARNINGS_AS_ERRORS, collect_notifications
from sine_plugin_helpers import plugin_env_fixture as plugin_env_fixture  # fixture `plugin_env`
from sine_plugin_helpers import sample_viewer_fixture as sample_viewer_fixture  # fixture `sample_viewer`
from sine_plugin_helpers import tiny_preset_fixture as tiny_preset_fixture  # fixture `tiny_preset`

from napari_sine._qt.widget import SineWidget
from napari_sine._settings import WidgetSettings
from sine_model.hub.presets import EMBEDDED_PRESET, OFFICIAL_PRESET

pytestmark = WARNINGS_AS_ERRORS


def test_widget_docks_and_lists_models(make_napari_viewer, tiny_preset):
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="SINE")
    assert dock.widget() is widget or widget.isAncestorOf(widget)
    combo = widget.options.model
    names = [combo.itemData(i) for i in range(combo.count())]
    assert TINY_PRESET in names and OFFICIAL_PRESET in names
    # the official weights are not installed in the test cache: listed, disabled, with the import steps
    official = names.index(OFFICIAL_PRESET)
    assert not combo.model().item(official).isEnabled()
    assert "napari-sine weights import" in combo.itemData(official, Qt.ItemDataRole.ToolTipRole)
    # without the official weights, the embedded model shipped in the package is the default
    assert combo.currentData() == EMBEDDED_PRESET
    devices = [widget.options.device.itemText(i) for i in range(widget.options.device.count())]
    assert devices[0] == "auto" and "cpu" in devices
    # the model's recipe is followed by default: the stages show it and are not editable until unticked
    assert widget.options.recipe.isChecked() and not widget.options.adapt.isEnabled()
    embedded = "runs first: refine 400 steps (MLP + forest on image features)"
    assert widget.options.fitting_line.text() == embedded
    widget.options.recipe.setChecked(False)
    assert widget.options.adapt.isEnabled() and not widget.options.adapt.isChecked()
    assert not widget.options.adapt_steps.isEnabled()  # until adaptation is ticked
    assert widget.cancel_button.isEnabled() is False
    # the scale is automatic by default (chosen from the reference objects' size), a number once set
    assert widget.options.scale.text() == "auto" and widget.options.scale_choice() is None
    widget.options.scale.setValue(0.5)
    assert widget.options.scale_choice() == 0.5
    widget.options.scale.setValue(0.0)
    assert widget.options.scale_choice() is None


def test_layer_lists_follow_the_viewer(make_napari_viewer, tiny_preset):
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    image = viewer.add_image(np.zeros((32, 32), np.uint8), name="ref")
    labels = viewer.add_labels(np.zeros((32, 32), np.uint8), name="ref labels")
    row = widget.references.rows[0]
    assert row.image.layer() is image and row.labels.layer() is labels
    target = viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="stack")
    assert widget.targets.checked_layers() == [target]  # non-reference images are ticked
    assert widget.stack_axis.isVisibleTo(widget)
    target.name = "renamed stack"
    assert widget.targets.item(1).text() == "renamed stack"
    viewer.layers.remove(target)
    assert widget.targets.count() == 1
    widget.references.add_row()
    assert len(widget.references.rows) == 2
    widget.references.remove_row(widget.references.rows[1])
    assert len(widget.references.rows) == 1


def test_settings_are_remembered(make_napari_viewer, tiny_preset):
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.options.model_name() == EMBEDDED_PRESET  # the default, until the user picks another
    widget.options.model.setCurrentIndex(widget.options.model.findData(TINY_PRESET))
    widget.options.threshold.setValue(0.35)
    widget.options.modes["semantic"].setChecked(False)
    widget.review.min_score.setValue(0.2)
    widget.options.recipe.setChecked(False)
    widget.options.adapt.setChecked(True)
    widget.options.adapt_steps.setValue(12)
    widget.options.calibrate.setChecked(True)
    widget.options.refine.setChecked(True)
    widget.options.refine_steps.setValue(7)
    saved = WidgetSettings.load()
    assert saved.threshold == 0.35 and saved.modes == ["id", "instance"] and saved.min_score == 0.2
    again = SineWidget(viewer)
    assert again.options.threshold.value() == 0.35
    assert not again.options.modes["semantic"].isChecked()
    assert again.options.model_name() == TINY_PRESET
    assert again.options.fitting_choice() == (True, 12, 7) and not again.options.recipe.isChecked()
    again.close()


def test_bad_input_shows_notifications(make_napari_viewer, tiny_preset, monkeypatch):
    messages = collect_notifications(monkeypatch)
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.options.refresh_models(prefer=TINY_PRESET)

    widget.run()  # no layers at all
    assert "image layer and a Labels layer" in messages[-1]

    viewer.add_image(np.zeros((32, 32), np.uint8), name="ref")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="empty labels")
    viewer.add_image(np.zeros((32, 32), np.uint8), name="target")
    widget.run()
    assert "has no objects" in messages[-1] and "paint" in messages[-1]

    viewer.layers["empty labels"].data = np.zeros((16, 16), np.uint8)
    widget.run()
    assert "does not match" in messages[-1]

    viewer.layers["empty labels"].data = np.pad(np.ones((4, 4), np.uint8), 14)
    widget.references.classes.setText("1:x")
    widget.run()
    assert "LABEL:CLASS" in messages[-1]
    widget.references.classes.setText("")

    for box in widget.options.modes.values():
        box.setChecked(False)
    widget.run()
    assert "no mode chosen" in messages[-1]
    widget.options.modes["id"].setChecked(True)

    index = widget.options.model.findData("sine-vitl")
    widget.options.model.setCurrentIndex(index)  # disabled in the list, but selectable in code
    widget.run()
    assert "weights import" in messages[-1]
    assert not widget.runner.running
    assert [layer.name for layer in viewer.layers] == ["ref", "empty labels", "target"]  # nothing added


def test_rgb_and_grayscale_cannot_be_mixed(make_napari_viewer, tiny_preset, monkeypatch):
    messages = collect_notifications(monkeypatch)
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.options.refresh_models(prefer=TINY_PRESET)
    viewer.add_image(np.zeros((32, 32), np.uint8), name="ref")
    viewer.add_labels(np.pad(np.ones((4, 4), np.uint8), 14), name="ref labels")
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb target", rgb=True)
    widget.run()
    assert "RGB layers ['rgb target']" in messages[-1]
    assert not widget.runner.running


def test_replay_command_parses_with_the_cli():
    import shlex

    from napari_sine._provenance import cli_command
    from sine_model.cli.app import build_parser

    record = {
        "references": [{"image": {"layer": "a", "source": "/d/a.png"},
                        "labels": {"layer": "a labels", "source": "/d/a_labels.tif"}, "plane": None}],
        "target": {"layer": "stack", "source": "/d/stack.tif", "stack_axis": 0},
        "model": {"preset": "sine-vitl"},
        "parameters": {"modes": ["id", "instance"], "device_requested": "cuda:1", "precision": "auto",
                       "pad": 896, "scale": 0.5, "thresholds": {"id": 0.4, "instance": 0.4},
                       "memory": True, "classes": {"1": 2}, "channel_axis": None, "adapt_steps": 20,
                       "instance_source": "semantic", "calibrate": True, "refine_steps": 0},
    }
    command, missing = cli_command(record)
    assert not missing
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.ref == ["/d/a.png"] and args.targets == ["/d/stack.tif"] and args.stack_axis == 0
    assert args.modes == ("id", "instance") and args.device == "cuda" and args.memory
    assert args.threshold_id == 0.4 and args.classes == {1: 2} and args.scale == 0.5 and args.adapt == 20
    assert args.instances == "semantic" and args.calibrate and args.refine == 0  # --no-refine
    record["parameters"].update(calibrate=None, adapt_steps=None, refine_steps=None)  # the recipe
    command = cli_command(record)[0]
    flags = {"--calibrate", "--no-calibrate", "--adapt", "--no-refine", "--refine"}
    assert not flags & set(shlex.split(command))
    record["parameters"]["scale"] = None  # automatic: the CLI's default, no flag
    command = cli_command(record)[0]
    assert "--scale" not in shlex.split(command)
    assert build_parser().parse_args(shlex.split(command)[1:]).scale is None
    record["references"][0]["plane"] = 3
    assert cli_command(record)[0] is None
