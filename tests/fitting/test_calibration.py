"""Calibration on the references: folds between halves, the choice of scale and split rule, errors."""

from __future__ import annotations

import numpy as np
import pytest

from sine_model.engine.inputs import PropagationError
from sine_model.engine.propagator import Propagator, TargetResult
from sine_model.fitting.calibration import CALIBRATION_SCALES, calibrate, reference_folds
from sine_model.postprocess.instance_split import InstanceStep


def touching_disks(shape=(64, 128), radius=9):
    """Pairs of overlapping disks, two pairs per half along the width."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    centres = [(16, 16), (16, 31), (46, 40), (46, 55), (16, 80), (16, 95), (46, 100), (46, 115)]
    for value, (cy, cx) in enumerate(centres, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (labels == 0)] = value
    return labels


class ScaleSensitiveEngine:
    """Stands in for a Propagator: its semantic answer is the truth at scale 1.4 and empty otherwise.

    The truth travels in the image itself (object pixels are 200), so the answer for a held-out half
    is that half's foreground.
    """

    channel_axis = None
    _class_map = staticmethod(Propagator._class_map)

    def __init__(self) -> None:
        self.scale, self.steps, self.references, self.scales_seen = 1.0, None, None, []
        self.project_inputs = False

    def set_project_inputs(self, enabled):
        self.project_inputs = enabled

    def set_scale(self, scale):
        self.scale = scale
        self.scales_seen.append(scale)

    def set_instance_steps(self, steps):
        self.steps = steps

    def set_references(self, pairs, classes=None):
        self.references = pairs

    def propagate(self, targets, modes):
        for index, image in enumerate(targets):
            found = image > 100 if self.scale == 1.4 else np.zeros(image.shape, bool)
            semantic = found.astype(np.uint8)
            yield TargetResult(index, {"semantic": semantic}, [], image.shape)


def test_folds_cut_the_longer_side_or_the_other_when_a_half_is_empty():
    labels = touching_disks()
    image = np.dstack([labels * 10] * 3).astype(np.uint8)
    folds = reference_folds([(image, labels)])
    assert len(folds) == 2
    (ref, held), (ref2, held2) = folds
    assert ref[0].shape == (64, 64, 3) and held[1].shape == (64, 64)
    np.testing.assert_array_equal(held[1], labels[:, 64:]) and np.testing.assert_array_equal(ref2[1], held[1])
    channels_first = np.moveaxis(image, -1, 0)
    assert reference_folds([(channels_first, labels)], channel_axis=0)[0][0][0].shape == (3, 64, 64)
    top_only = np.zeros((64, 128), np.int32)
    top_only[5:10, 5:120:20] = 1  # objects in the top half only: cut across the width instead
    folds = reference_folds([(top_only.astype(np.uint8), top_only)])
    assert len(folds) == 2 and folds[0][0][1].shape == (64, 64)
    corner = np.zeros((64, 128), np.int32)
    corner[2:6, 2:6] = 1
    assert reference_folds([(corner.astype(np.uint8), corner)]) == []


def test_calibrate_picks_the_scale_and_rule_that_rebuild_the_held_out_half():
    labels = touching_disks()
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    engine = ScaleSensitiveEngine()
    result = calibrate(engine, [(image, labels)])
    assert result.scale == 1.4 and engine.scale == 1.4 and result.folds == 2
    assert result.steps[1].method == "watershed"  # touching disks: components would merge each pair
    assert engine.steps == result.steps and result.f1 > 0.9
    assert engine.references == [(image, labels)]  # the whole reference again at the end
    assert engine.scales_seen[:len(CALIBRATION_SCALES)] == [1.0, 1.4, 0.7, 0.5, 2.0]  # closest to 1 first
    assert not result.project_inputs and not engine.project_inputs  # a tie: the milder setting
    assert len(result.table) == 2 * len(CALIBRATION_SCALES) * 4  # projection x scale x 4 rules, one class
    rows = {(r["scale"], r["rule"]): r["f1"] for r in result.table if not r["projection"]}
    assert rows[(1.4, "components")] < result.f1 - 0.2  # components merge each pair of disks
    assert rows[(1.0, "components")] == 0.0  # nothing found at the other scales


def test_calibrate_turns_the_projection_on_when_only_it_finds_the_objects():
    class ColourBlind(ScaleSensitiveEngine):
        def propagate(self, targets, modes):
            for index, image in enumerate(targets):
                found = image > 100 if self.project_inputs else np.zeros(image.shape, bool)
                yield TargetResult(index, {"semantic": found.astype(np.uint8)}, [], image.shape)

    labels = touching_disks()
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    engine = ColourBlind()
    result = calibrate(engine, [(image, labels)])
    assert result.project_inputs and engine.project_inputs and result.scale == 1.0
    assert not calibrate(ColourBlind(), [(image, labels)], projections=(False,)).project_inputs


def test_small_gains_over_the_default_setting_do_not_move_it():
    class SlightlyWorseAtOne(ScaleSensitiveEngine):
        def propagate(self, targets, modes):
            for index, image in enumerate(targets):
                found = image > 100
                if self.scale == 1.0:
                    found[:, :26] = False  # loses a pair of disks at the default scale only
                yield TargetResult(index, {"semantic": found.astype(np.uint8)}, [], image.shape)

    labels = touching_disks()
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    loose = calibrate(SlightlyWorseAtOne(), [(image, labels)], min_gain=0.0)
    strict = calibrate(SlightlyWorseAtOne(), [(image, labels)], min_gain=0.5)
    assert loose.scale == 1.4 and strict.scale == 1.0 and strict.f1 < loose.f1


def test_calibrate_ties_keep_the_scale_closest_to_one():
    class Blind(ScaleSensitiveEngine):
        def propagate(self, targets, modes):
            for index, image in enumerate(targets):
                yield TargetResult(index, {"semantic": (image > 100).astype(np.uint8)}, [], image.shape)

    labels = touching_disks()
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    assert calibrate(Blind(), [(image, labels)], scales=(2.0, 0.75, 1.25)).scale == 1.25


def test_calibrate_a_real_propagator_and_its_errors():
    import torch
    from conftest import build_embedded

    torch.manual_seed(0)
    propagator = Propagator(build_embedded("filterbank").eval(), "cpu", pad=112, instance_source="semantic")
    labels = touching_disks()
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    result = calibrate(propagator, [(image, labels)], scales=(1.0, 0.5))
    assert propagator.scale == result.scale in (1.0, 0.5)
    assert propagator.tile_extent == int(112 / result.scale)
    assert propagator.instance_steps() == result.steps and isinstance(result.steps[1], InstanceStep)
    out = next(propagator.propagate([image], modes=("instance", "semantic")))
    assert out.labels["instance"].shape == labels.shape
    corner = np.zeros((64, 128), np.int32)
    corner[2:6, 2:6] = 1
    with pytest.raises(PropagationError, match="both halves"):
        calibrate(propagator, [(image, corner)])
    with pytest.raises(PropagationError, match="positive"):
        calibrate(propagator, [(image, labels)], scales=(0.0, 1.0))
    propagator.set_scale(1.0)
    with pytest.raises(PropagationError, match="no references"):  # a new scale needs the references again
        next(propagator.propagate([image]))
