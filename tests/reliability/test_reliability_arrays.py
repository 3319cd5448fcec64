"""Reliability, surface "arrays": odd images, labels and target streams given to the Python API.

With the tiny random model (answers are noise; what is checked is that a run works or is refused with a
message naming the problem and the fix, and that nothing is allocated in proportion to a label id).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import build_tiny
from reliability_helpers import H, W, assert_message, note, reference_pair

from sine_model.engine.propagator import Propagator
from sine_model.errors import PropagationError
from sine_model.postprocess.instance_split import candidate_steps, remove_small

MODES = ("id", "instance", "semantic")


def make_propagator(**kwargs) -> Propagator:
    return Propagator(build_tiny(), "cpu", pad=112, **kwargs)


@pytest.fixture(scope="module")
def prop() -> Propagator:
    propagator = make_propagator()
    propagator.set_references([reference_pair()])
    return propagator


def run(propagator: Propagator, targets, **kwargs) -> list:
    return list(propagator.propagate(targets, MODES, **kwargs))


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 2000)])
def test_tiny_and_thin_targets(prop, record_property, shape):
    """Did: a 1×1, a 3×3 and a 4×2000 target. Must: one result whose maps have the target's shape."""
    target = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    (result,) = run(prop, target)
    note(record_property, f"result maps {sorted({r.shape for r in result.labels.values()})}")
    assert all(labels.shape == shape for labels in result.labels.values())


@pytest.mark.parametrize("shape", [(3, 3), (4, 2000)])
def test_tiny_and_thin_references(record_property, shape):
    """Did: a 3×3 and a 4×2000 reference with one labelled object. Must: references set, a target runs."""
    image = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 1:3] = 1
    propagator = make_propagator()
    propagator.set_references([(image, labels)])
    (result,) = run(propagator, image)
    note(record_property, "ran")
    assert result.labels["semantic"].shape == shape


def test_constant_images(record_property):
    """Did: a constant (all 0) reference image and a constant target. Must: runs, maps of the right shape."""
    _, labels = reference_pair()
    propagator = make_propagator()
    propagator.set_references([(np.zeros((H, W), np.uint8), labels)])
    (result,) = run(propagator, np.full((H, W), 7, np.uint8))
    note(record_property, "ran")
    assert result.labels["instance"].shape == (H, W)


@pytest.mark.parametrize("where", ["reference", "target"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_and_inf_pixels(prop, record_property, where, value):
    """Did: a float image with one NaN or inf pixel as reference or target. Must: refused before the
    model, 'NaN or inf' with the fix (numpy.nan_to_num)."""
    image, labels = reference_pair()
    bad = image.astype(np.float32)
    bad[3, 4] = value
    with pytest.raises(PropagationError) as err:
        if where == "reference":
            make_propagator().set_references([(bad, labels)])
        else:
            run(prop, bad)
    assert_message(record_property, err.value, "NaN or inf", "nan_to_num")


@pytest.mark.parametrize("dtype", ["uint16", "float64", "int32"])
def test_image_dtypes(record_property, dtype):
    """Did: reference and target images of dtype uint16 (full range), float64, int32. Must: runs."""
    image, labels = reference_pair()
    converted = {"uint16": image.astype(np.uint16) * 257, "float64": image / 255.0,
                 "int32": image.astype(np.int32) - 100}[dtype]
    propagator = make_propagator()
    propagator.set_references([(converted, labels)])
    (result,) = run(propagator, converted)
    note(record_property, f"{dtype}: ran")
    assert result.labels["semantic"].shape == (H, W)


def test_bool_image(record_property):
    """Did: a bool mask given as the reference image. Must: refused, saying masks are not images and how
    to convert one (a mask has no texture for the model to match)."""
    image, labels = reference_pair()
    with pytest.raises(ValueError) as err:
        make_propagator().set_references([(image > 127, labels)])
    assert_message(record_property, err.value, "Boolean images", "astype(np.uint8)")


def test_uint64_labels_with_small_ids(record_property):
    """Did: uint64 labels with ids 3 and 7. Must: runs; ID answers use the ids 3 and 7 only."""
    image, labels = reference_pair()
    propagator = make_propagator()
    propagator.set_references([(image, labels.astype(np.uint64))])
    (result,) = run(propagator, image)
    found = set(np.unique(result.labels["id"]).tolist()) - {0}
    note(record_property, f"id labels found: {sorted(found)}")
    assert found <= {3, 7}


def test_label_id_two_to_the_40(record_property):
    """Did: labels holding the id 2**40 (uint64). Must: refused at once naming the id, the uint32 limit
    and how to renumber; no allocation in proportion to the id."""
    image, labels = reference_pair()
    big = labels.astype(np.uint64)
    big[big == 7] = 2**40
    tracemalloc.start()
    try:
        with pytest.raises(PropagationError) as err:
            make_propagator().set_references([(image, big)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_message(record_property, err.value, str(2**40), "relabel")
    assert peak < 64 * 1024**2, f"peak {peak} bytes"


def test_label_id_two_to_the_31_minus_1(record_property):
    """Did: int32 labels with the valid id 2**31-1, instances from the semantic answer (the path that
    called np.bincount on the ids: 16 GiB). Must: runs with < 64 MiB traced peak in the label code;
    the id keeps its value in the ID answer's candidates."""
    image, labels = reference_pair()
    big = labels.astype(np.int32)
    big[big == 7] = 2**31 - 1
    tracemalloc.start()
    try:
        steps = candidate_steps(big)
        kept = remove_small(big, 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, f"peak {peak} bytes"
    assert len(steps) > 1 and set(np.unique(kept).tolist()) == {0, 3, 2**31 - 1}
    propagator = make_propagator(instance_source="semantic", score_thresholds={"id": -1.0})
    propagator.set_references([(image, big)])
    (result,) = run(propagator, image)
    note(record_property, f"ran; peak {peak / 1024**2:.1f} MiB in the label code")
    assert set(np.unique(result.labels["id"]).tolist()) <= {0, 3, 2**31 - 1}


def test_labels_of_another_shape(record_property):
    """Did: labels 48×60 for a 48×64 image. Must: refused naming both shapes and 'same height and width'."""
    image, labels = reference_pair()
    with pytest.raises(PropagationError) as err:
        make_propagator().set_references([(image, labels[:, :60])])
    assert_message(record_property, err.value, "(48, 60)", "(48, 64)", "same height and width")


def test_all_zero_labels(record_property):
    """Did: a label image of zeros. Must: refused, 'no objects; paint at least one object'."""
    image, labels = reference_pair()
    with pytest.raises(PropagationError) as err:
        make_propagator().set_references([(image, np.zeros_like(labels))])
    assert_message(record_property, err.value, "no objects", "paint at least one object")


def test_empty_image(prop, record_property):
    """Did: a 0×96 reference and a 0×96 target. Must: refused as 'empty ... no pixels' (was reported as
    'the label image has no objects')."""
    with pytest.raises(PropagationError) as err:
        make_propagator().set_references([(np.zeros((0, 96), np.uint8), np.zeros((0, 96), np.uint8))])
    assert_message(record_property, err.value, "empty", "no pixels")
    with pytest.raises(PropagationError, match="empty"):
        run(prop, np.zeros((0, 96), np.uint8))


def test_single_one_pixel_object(record_property):
    """Did: a reference whose only object is one pixel. Must: references set, a target runs."""
    image, _ = reference_pair()
    labels = np.zeros((H, W), np.uint8)
    labels[20, 30] = 1
    propagator = make_propagator()
    propagator.set_references([(image, labels)])
    (result,) = run(propagator, image)
    note(record_property, "ran")
    assert result.labels["id"].shape == (H, W)


def test_three_thousand_objects(record_property):
    """Did: a 240×400 reference with 3,000 objects (2×2 squares on a grid), instances from the semantic
    answer. Must: references set and a target runs (tokens for every object)."""
    labels = np.zeros((240, 400), np.uint16)
    ids = iter(range(1, 3001))
    for y in range(0, 240, 4):
        for x in range(0, 400, 8):
            labels[y : y + 2, x : x + 2] = next(ids, 0)
    assert len(np.unique(labels)) == 3001
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    propagator = make_propagator(instance_source="semantic")
    propagator.set_references([(image, labels)])
    (result,) = run(propagator, image)
    note(record_property, f"ran; {len(np.unique(result.labels['instance'])) - 1} instances (random model)")
    assert result.labels["instance"].shape == labels.shape


def test_rgba_reference_and_target(record_property):
    """Did: RGBA (H, W, 4) reference and target. Must: runs (alpha ignored)."""
    image, labels = reference_pair()
    rgba = np.stack([image, image, image, np.full_like(image, 255)], axis=-1)
    propagator = make_propagator()
    propagator.set_references([(rgba, labels)])
    (result,) = run(propagator, rgba)
    note(record_property, "ran")
    assert result.labels["semantic"].shape == (H, W)


def test_five_channels_without_channel_axis(record_property):
    """Did: a (48, 64, 5) reference with no channel_axis. Must: refused asking whether it is a stack or
    channels, naming stack_axis and channel_axis."""
    image, labels = reference_pair()
    with pytest.raises(PropagationError) as err:
        make_propagator().set_references([(np.stack([image] * 5, axis=-1), labels)])
    assert_message(record_property, err.value, "stack_axis", "channel_axis")


def test_rgb_reference_with_a_grey_target(record_property):
    """Did: an RGB reference and a grey target. Must: refused: 'channel(s) but the references have 3'."""
    image, labels = reference_pair()
    propagator = make_propagator()
    propagator.set_references([(np.stack([image] * 3, axis=-1), labels)])
    with pytest.raises(PropagationError) as err:
        run(propagator, image)
    assert_message(record_property, err.value, "1 channel(s) but the references have 3")


def test_stack_axis_on_a_single_image(prop, record_property):
    """Did: stack_axis=0 with one 2D target. Must: refused saying a single image cut by stack_axis gives
    1-D pieces, and to leave stack_axis out (was 'target 0 has 1 dimensions (96,)')."""
    image, _ = reference_pair()
    with pytest.raises(PropagationError) as err:
        run(prop, image, stack_axis=0)
    assert_message(record_property, err.value, "leave stack_axis out")


def test_non_contiguous_and_transposed_arrays(prop, record_property):
    """Did: a target given as a transposed view, a strided view and a Fortran-ordered copy. Must: the
    same proposals as for the C-contiguous copy of the same pixels."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (W, H), dtype=np.uint8)
    views = {"transposed": base.T, "fortran": np.asfortranarray(base.T),
             "strided": np.repeat(base.T, 2, axis=1)[:, ::2]}
    (expected,) = run(prop, np.ascontiguousarray(base.T))
    for name, view in views.items():
        (result,) = run(prop, view)
        for mode in MODES:
            assert np.array_equal(result.labels[mode], expected.labels[mode]), (name, mode)
    note(record_property, "same proposals for all views")


def test_target_generator_raising_midway_keeps_finished_results(prop, record_property):
    """Did: a generator of targets that raises on the third image. Must: the two finished results were
    yielded before the error and are whole; the user's error reaches the caller unchanged."""
    image, _ = reference_pair()

    def targets():
        yield image
        yield image[::-1].copy()
        raise OSError("camera disconnected")

    finished = []
    with pytest.raises(OSError, match="camera disconnected") as err:
        for result in prop.propagate(targets(), MODES):  # batch size 1: one target at a time
            finished.append(result)
    note(record_property, f"{len(finished)} results kept, then {type(err.value).__name__}: {err.value}")
    assert [r.index for r in finished] == [0, 1]
    assert all(r.labels["semantic"].shape == (H, W) for r in finished)


def test_generator_closed_early(prop, record_property):
    """Did: closed the result generator after the first result. Must: the user's target generator is
    closed too (its finally ran) and no further target is read."""
    image, _ = reference_pair()
    state = {"read": 0, "closed": False}

    def targets():
        try:
            for _ in range(5):
                state["read"] += 1
                yield image
        finally:
            state["closed"] = True

    results = prop.propagate(targets(), MODES)
    next(results)
    results.close()
    note(record_property, f"targets read: {state['read']}, source closed: {state['closed']}")
    assert state["closed"] and state["read"] == 1
