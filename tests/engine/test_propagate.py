"""The Propagator: streaming results, label hygiene, caching, tiling, memory and bad input."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from conftest import build_tiny

from sine_model import EMBEDDED_PRESET, get_preset
from sine_model.engine.propagator import PropagationError, Propagator
from sine_model.engine.tiling import plan_tiles
from sine_model.postprocess.decode import (
    id_inference,
    instance_inference,
    semantic_inference,
    semantic_label_map,
)
from sine_model.preprocess.transforms import Geometry, prepare_labels, rgb_to_model_input, to_rgb_float

KEEP_ALL = {"id": -1.0, "instance": -1.0, "semantic": -1.0}


@pytest.fixture(scope="module")
def model():
    return build_tiny()


def _reference(seed=0, shape=(100, 90)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    labels = np.zeros(shape, np.uint32)
    labels[10:30, 10:30] = 4
    labels[50:70, 40:80] = 70000
    return image, labels


def _propagator(model, **kwargs):
    kwargs.setdefault("score_thresholds", KEEP_ALL)
    kwargs.setdefault("dense_refinement", 0)  # keep-all thresholds would saturate every tile
    return Propagator(model, device="cpu", pad=112, **kwargs)


def test_results_stream_one_per_target_with_label_hygiene(model):
    p = _propagator(model)
    p.set_references([_reference()], classes={4: 2, 70000: 5})
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 4000, (3, 80, 70), dtype=np.uint16)
    results = p.propagate(stack, stack_axis=0)
    assert isinstance(results, types.GeneratorType)
    results = list(results)
    assert [r.index for r in results] == [0, 1, 2]
    for r in results:
        assert r.shape == (80, 70) and set(r.labels) == {"id", "instance", "semantic"}
        assert all(v.shape == (80, 70) for v in r.labels.values())
        assert r.labels["id"].dtype == np.uint32  # 70000 does not fit uint16
        assert set(np.unique(r.labels["id"])) <= {0, 4, 70000}
        ins = np.unique(r.labels["instance"])
        assert ins.tolist() == list(range(ins.max() + 1))  # fresh ids 1..n
        assert r.labels["instance"].dtype == np.uint8
        assert set(np.unique(r.labels["semantic"])) <= {0, 2, 5}
        id_rows = [s for s in r.scores if s.mode == "id"]
        assert {s.label for s in id_rows} == set(np.unique(r.labels["id"])) - {0}
        assert all(s.source == "ref:0" and s.target == r.index for s in id_rows)
        ins_rows = [s for s in r.scores if s.mode == "instance"]
        assert sorted(s.label for s in ins_rows) == ins.tolist()[1:]
        assert all(s.source in ("class:2", "class:5") for s in ins_rows)


def test_single_tile_target_matches_the_plain_model_pipeline(model):
    """Engine glue check: for a target that fits the input, the engine equals forward_raw + postprocess."""
    ref_image, ref_labels = _reference()
    rng = np.random.default_rng(2)
    target = rng.integers(0, 255, (112, 100), dtype=np.uint8)
    p = _propagator(model)
    p.set_references([(ref_image, ref_labels)])
    result = next(p.propagate(target))

    ref_geom = Geometry(112, (100, 90), (100, 90))
    masks, ids = prepare_labels(ref_labels, ref_geom)
    tgt_geom = Geometry(112, (112, 100), (112, 100))
    with torch.no_grad():
        raw = model.forward_raw(
            rgb_to_model_input(to_rgb_float(ref_image), (100, 90), 112), [masks],
            [torch.ones_like(ids)], [ids], rgb_to_model_input(to_rgb_float(target), (112, 100), 112),
        )
    det = id_inference(raw["pred_id_logits"][0], raw["pred_id_masks"][0], raw["ref_ids"][0], tgt_geom,
                       score_threshold=-1.0)
    expected = np.zeros((112, 100), np.int64)
    best = np.full((112, 100), -np.inf)
    for mask, score, label in zip(det.masks.numpy(), det.scores.tolist(), det.labels.tolist(), strict=True):
        win = mask & (score > best)
        expected[win], best[win] = label, score
    np.testing.assert_array_equal(result.labels["id"], expected)
    ins = instance_inference(raw["pred_ins_logits"][0], raw["pred_ins_masks"][0], raw["ref_sem_labels"][0],
                             tgt_geom, score_threshold=-1.0)
    assert len([s for s in result.scores if s.mode == "instance"]) <= len(ins)
    sem = semantic_label_map(semantic_inference(raw["pred_ins_logits"][0], raw["pred_ins_masks"][0],
                                                tgt_geom), raw["ref_sem_labels"][0], -1.0)
    np.testing.assert_array_equal(result.labels["semantic"], sem)


class CountingEncoder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.inner(x)


def test_references_encoded_once_and_targets_cached_across_reference_changes(model):
    p = _propagator(model)
    counter = CountingEncoder(model.image_encoder.encoder)
    p.model = types.SimpleNamespace(image_encoder=types.SimpleNamespace(encoder=counter,
                                                                        neck=model.image_encoder.neck),
                                    reference_tokens=model.reference_tokens, decode=model.decode,
                                    patch_size=14)
    p.set_references([_reference()])
    assert counter.images == 1
    targets = [np.random.default_rng(i).integers(0, 255, (60, 60), dtype=np.uint8) for i in range(3)]
    first = [r.labels["id"] for r in p.propagate(targets)]
    assert counter.images == 1 + 3  # the reference is not re-encoded per target
    p.set_references([_reference(seed=5)])
    assert counter.images == 5
    list(p.propagate(targets))
    assert counter.images == 5  # targets come from the cache
    assert p.cache.hits == 3
    p.set_references([_reference()])
    again = [r.labels["id"] for r in p.propagate(targets)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


class LazyStack:
    """A lazy array: reading is counted, so streaming can be checked."""

    def __init__(self, data):
        self.data, self.reads = data, 0
        self.shape, self.ndim, self.dtype = data.shape, data.ndim, data.dtype

    def __getitem__(self, index):
        self.reads += 1
        return self.data[index]


def test_lazy_stack_is_read_one_target_at_a_time(model):
    p = _propagator(model)
    p.set_references([_reference()])
    lazy = LazyStack(np.random.default_rng(0).integers(0, 255, (4, 50, 40), dtype=np.uint8))
    stream = p.propagate(lazy, stack_axis=0, modes=("semantic",))
    first = next(stream)
    assert first.index == 0 and lazy.reads == 1
    assert [r.index for r in stream] == [1, 2, 3] and lazy.reads == 4
    assert p.count_targets(lazy, stack_axis=0) == 4


def test_stack_axis_and_batching_give_the_same_answers(model):
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)  # stack along the last axis
    one = _propagator(model)
    one.set_references([_reference()])
    batched = _propagator(model, batch_size=3)
    batched.set_references([_reference()])
    a = list(one.propagate(stack, stack_axis=2, modes=("id", "semantic")))
    b = list(batched.propagate(stack, stack_axis=2, modes=("id", "semantic")))
    assert len(a) == 3 and [r.shape for r in a] == [(40, 50)] * 3
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.labels["id"], rb.labels["id"])


def test_large_images_are_tiled_and_references_too(model):
    p = _propagator(model)
    big_image, big_labels = _reference(shape=(300, 260))
    big_labels[200:240, 200:250] = 9
    p.set_references([(big_image, big_labels)])
    assert p._reference.features.shape[0] > 1  # several reference tiles act as shots
    target = np.random.default_rng(4).integers(0, 255, (330, 250), dtype=np.uint8)
    result = next(p.propagate(target))
    assert result.shape == (330, 250)
    assert set(np.unique(result.labels["id"])) <= {0, 4, 9, 70000}


def test_tiny_images_are_padded_not_enlarged(model):
    p = _propagator(model)
    p.set_references([_reference()])
    result = next(p.propagate(np.zeros((9, 7), np.uint8)))
    assert result.shape == (9, 7)
    p_tile = plan_tiles(9, 7, 112, 28)[0]
    assert p._geometry(p_tile) == Geometry(112, (9, 7), (9, 7)), p_tile


def test_memory_mode_runs_and_needs_single_tiles(model):
    p = _propagator(model)
    p.set_references([_reference()])
    frames = np.random.default_rng(5).integers(0, 255, (4, 60, 60), dtype=np.uint8)
    results = list(p.propagate(frames, stack_axis=0, modes=("id",), memory=True))
    assert len(results) == 4
    with pytest.raises(PropagationError, match="memory mode needs targets that fit"):
        list(p.propagate(np.zeros((400, 400), np.uint8), modes=("id",), memory=True))
    with pytest.raises(PropagationError, match="include 'id'"):
        p.propagate(frames, stack_axis=0, modes=("instance",), memory=True)


def test_bf16_precision_runs_on_cpu(model):
    p = _propagator(model, precision="bf16")
    p.set_references([_reference()])
    result = next(p.propagate(np.zeros((50, 50), np.uint8)))
    assert result.labels["id"].shape == (50, 50)


def _labels(shape=(100, 90)):
    return _reference(shape=shape)[1]


@pytest.mark.parametrize(
    "pair, message",
    [
        ((np.zeros((100, 90), np.uint8), np.zeros((100, 80), np.uint8)), "labels have shape"),
        ((np.zeros((100, 90), np.uint8), np.zeros((100, 90), np.uint8)), "has no objects"),
        ((np.zeros((100, 90), np.uint8), -_labels().astype(np.int64)), "negative values"),
        ((np.zeros((100, 90), np.uint8), _labels().astype(np.int64) * 2**20), "exceeds 4294967295"),
        ((np.full((100, 90), np.nan), _labels()), "NaN or inf"),
        ((np.zeros((100, 90), np.uint8), _labels() + 0.5), "fractional"),
        ((np.zeros((100, 90), np.uint8), _labels().astype(np.complex64)), "must be integers"),
        ((np.zeros((5, 100, 90), np.uint8), _labels()), "stack or an image with channels"),
    ],
)
def test_bad_references(model, pair, message):
    p = _propagator(model)
    with pytest.raises(PropagationError, match=message):
        p.set_references([pair])


def test_bad_targets_and_calls(model):
    p = _propagator(model)
    with pytest.raises(PropagationError, match="no references set"):
        p.propagate(np.zeros((10, 10)))
    with pytest.raises(PropagationError, match="non-empty list"):
        p.set_references([])
    p.set_references([_reference()])
    with pytest.raises(PropagationError, match="pass stack_axis"):
        p.validate_targets(np.zeros((3, 50, 50), np.uint8))
    with pytest.raises(PropagationError, match="pass stack_axis"):
        next(p.propagate(np.zeros((3, 50, 50), np.uint8)))
    with pytest.raises(PropagationError, match="has 3 channels .* the references have 1"):
        p.validate_targets([np.zeros((50, 50, 3), np.uint8)], None)
    with pytest.raises(PropagationError, match="target 1 contains NaN"):
        p.validate_targets([np.zeros((5, 5)), np.full((5, 5), np.inf)])
    with pytest.raises(PropagationError, match="unknown or no modes"):
        p.propagate(np.zeros((5, 5)), modes=("panoptic",))
    with pytest.raises(PropagationError, match="out of range"):
        p.count_targets(np.zeros((5, 5)), stack_axis=3)
    with pytest.raises(PropagationError, match="have no class"):
        p.set_references([_reference()], classes={4: 1})
    with pytest.raises(ValueError, match="multiple of 14"):
        Propagator(build_tiny(), device="cpu", pad=100)
    assert p.validate_targets(np.zeros((2, 5, 5)), stack_axis=0) == 2


def test_rgb_references_need_rgb_targets(model):
    p = _propagator(model)
    image, labels = _reference()
    p.set_references([(np.stack([image] * 3, axis=-1), labels)])
    with pytest.raises(PropagationError, match="same channels"):
        p.validate_targets(np.zeros((50, 50), np.uint8))
    assert next(p.propagate(np.zeros((50, 50, 3), np.uint8))).shape == (50, 50)


def test_saturated_tiles_are_redone_with_smaller_tiles(model):
    """More objects than instance queries: the target is re-tiled at half the tile side."""
    p = _propagator(model, dense_refinement=1)
    p.set_references([_reference()])
    seen = []
    original = p._process

    def spy(pending, modes, timeline, extent, depth=0, keep_maps=False):
        seen.append((depth, extent, sum(len(t) for _, _, t in pending)))
        return original(pending, modes, timeline, extent, depth, keep_maps)

    p._process = spy
    target = np.random.default_rng(6).integers(0, 255, (100, 100), dtype=np.uint8)
    result = next(p.propagate(target, modes=("instance",)))
    # keep-all thresholds: all 10 queries are kept, which saturates the tile (>= 90 % of 10)
    assert seen == [(0, 112, 1), (1, 56, 9)]  # 100 px in 56 px tiles with 14 px overlap: 3 × 3
    assert result.shape == (100, 100)
    # with a threshold nothing reaches, no refinement happens
    seen.clear()
    strict = _propagator(model, dense_refinement=1, score_thresholds={"instance": 1.0})
    strict.set_references([_reference()])
    strict._process = lambda *a, **k: (seen.append(a[3]), original.__func__(strict, *a, **k))[1]
    next(strict.propagate(target, modes=("instance",)))
    assert seen == [112]


@pytest.mark.parametrize("kind", ["cnn", "filterbank"])
def test_engine_runs_the_embedded_models(kind):
    from conftest import build_embedded

    torch.manual_seed(0)
    p = Propagator(build_embedded(kind).eval(), device="cpu", pad=112, score_thresholds=KEEP_ALL,
                   dense_refinement=0)
    p.set_references([_reference()])
    result = next(p.propagate(np.zeros((60, 70), np.uint8)))
    assert result.shape == (60, 70) and set(result.labels) == {"id", "instance", "semantic"}


def test_instances_from_the_semantic_answer(model, monkeypatch):
    from sine_model.postprocess.components import (
        instance_steps_by_class,
        min_areas_by_class,
        semantic_components,
    )

    image, labels = _reference()
    target = np.random.default_rng(3).integers(0, 255, (80, 70), dtype=np.uint8)
    queries = _propagator(model)
    queries.set_references([(image, labels)])
    semantic = _propagator(model, instance_source="semantic", score_thresholds={"semantic": 0.2})
    semantic.set_references([(image, labels)])
    result = next(semantic.propagate(target, modes=("instance", "semantic")))
    floor = min_areas_by_class([labels], {4: 1, 70000: 1})
    steps = instance_steps_by_class([labels], {4: 1, 70000: 1})
    assert semantic.instance_steps() == steps and steps[1].min_size == 60
    expected, rows = semantic_components(result.labels["semantic"], floor, steps=steps)
    assert floor == {1: 60} and expected.max() > 0  # a tenth of the median of 400 and 800 px
    np.testing.assert_array_equal(result.labels["instance"], expected)
    assert [s.label for s in result.scores if s.mode == "instance"] == [i for i, _, _ in rows]
    import sine_model.engine.stitching as stitching_module

    stitched = []
    original = stitching_module.stitch_semantic_maps
    monkeypatch.setattr(stitching_module, "stitch_semantic_maps",
                        lambda *a: (stitched.append(1), original(*a))[1])
    again = next(semantic.propagate(target, modes=("instance", "semantic")))
    assert stitched == [1]  # one stitched map serves both answers
    np.testing.assert_array_equal(again.labels["instance"], expected)
    alone = next(semantic.propagate(target, modes=("instance",)))  # the semantic map is made anyway
    np.testing.assert_array_equal(alone.labels["instance"], expected)
    assert queries.instance_source == "queries"  # a model without a preset: official behaviour
    model.preset = get_preset(EMBEDDED_PRESET)  # what from_pretrained sets
    try:
        assert _propagator(model).instance_source == "semantic"
    finally:
        model.preset = None
    with pytest.raises(ValueError, match="instance_source must be one of"):
        _propagator(model, instance_source="watershed")
