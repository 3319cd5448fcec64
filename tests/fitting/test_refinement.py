"""Full-resolution refinement: border targets, seeded splitting, the MLP's fit, and the engine's hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny, disk_scene, torch_threads

from sine_model.engine.inputs import PropagationError
from sine_model.engine.propagator import Propagator
from sine_model.engine.reference_state import refiner_fingerprint
from sine_model.fitting import refiner as refinement
from sine_model.fitting.folds import reference_folds
from sine_model.fitting.refiner import fit_refiner
from sine_model.metrics import foreground_iou, match_instances
from sine_model.postprocess import pixel_refiner
from sine_model.postprocess.border_instances import instance_floor
from sine_model.postprocess.pixel_refiner import (
    PixelRefiner,
    RefinedMaps,
    inner_rim,
    seeded_instances,
)


def test_inner_rim_marks_object_pixels_next_to_other_labels():
    labels = np.zeros((8, 12), np.int32)
    labels[2:6, 2:6], labels[2:6, 6:10] = 1, 2
    rim = inner_rim(labels)
    assert not rim[labels == 0].any()
    assert rim[3, 5] and rim[3, 6] and rim[2, 2]  # the shared edge and the outer edge
    assert not rim[3:5, 3:5].any()  # 4×4 objects: radius ≈ 2, so a rim of 1 px
    assert not inner_rim(np.zeros((4, 4), np.int32)).any()


def test_seeded_instances_split_touching_objects_at_the_border():
    mask = np.zeros((10, 20), bool)
    mask[2:8, 2:18] = True
    seeds = mask.copy()
    seeds[:, 9:11] = False  # a border ridge between two seeds
    height = np.ones(mask.shape)
    parts = seeded_instances(mask, seeds, height, min_size=4)
    assert parts.max() == 2
    assert set(np.unique(parts[mask])) == {1, 2}
    assert not parts[~mask].any()
    whole = seeded_instances(mask, np.zeros_like(mask), height, min_size=4)  # no seeds: kept whole
    assert whole.max() == 1 and (whole > 0).sum() == mask.sum()


def test_refined_maps_instances_are_scored_and_filtered():
    label_map = np.zeros((10, 20), np.int64)
    label_map[2:8, 2:18] = 1
    seeds = label_map > 0
    seeds[:, 9:11] = False
    probs = np.zeros((1, 10, 20), np.float32)
    probs[0, 2:8, 2:10], probs[0, 2:8, 10:18] = 0.9, 0.6
    instances, rows = RefinedMaps(probs, label_map, seeds).instances([1], {1: 4})
    assert instances.max() == 2 and [r[0] for r in rows] == [1, 2]
    assert rows[0][1] > rows[1][1] and all(r[2] == 1 for r in rows)
    assert instances[4, 4] == 1 and instances[4, 15] == 2
    _, kept = RefinedMaps(probs, label_map, seeds).instances([1], {1: 4}, min_score=0.8)
    assert len(kept) == 1


def test_refined_maps_use_heights_and_the_refiners_own_size_floor():
    label_map = np.zeros((10, 30), np.int64)
    label_map[2:8, 2:18] = 1
    label_map[2:4, 24:27] = 1  # a 6-pixel speck
    seeds = label_map > 0
    seeds[:, 8:14] = False
    probs = np.where(label_map > 0, 0.9, 0.0)[None].astype(np.float32)
    heights = probs.copy()
    heights[0, :, 12:14] = 0.2  # the border dips at the right of the seed gap: the cut follows the dip
    maps = RefinedMaps(probs, label_map, seeds, heights=heights, min_areas={1: 8})
    instances, rows = maps.instances([1], {1: 4})
    assert len(rows) == 2  # the speck is under the refiner's floor (8), though over the caller's (4)
    assert instances[4, 11] == instances[4, 4] and instances[4, 14] != instances[4, 4]
    flat, flat_rows = RefinedMaps(probs, label_map, seeds).instances([1], {1: 4})
    assert len(flat_rows) == 3  # without the refiner's floor the speck stays
    assert flat[4, 11] != flat[4, 4]  # and without heights the cut is in the middle of the gap


def test_refine_takes_background_where_it_is_the_most_likely_answer():
    refiner = PixelRefiner([1], use_model_maps=False)
    # logits of background, class, border for three pixels: background most likely but under one half;
    # class most likely; border most likely (an object pixel, but no seed)
    logits = torch.log(torch.tensor([[0.45, 0.30, 0.25], [0.2, 0.5, 0.3], [0.2, 0.3, 0.5]]))
    refiner.head = torch.nn.Sequential(torch.nn.Linear(refiner.num_inputs, 3))
    refiner.head[0].weight.data.zero_()
    rgb = np.zeros((1, 3, 3), np.float32)
    out = []
    for row in logits:
        refiner.head[0].bias.data.copy_(row)
        out.append(refiner.refine(rgb, np.zeros((1, 1, 3), np.float32)))
    assert [int(m.label_map[0, 0]) for m in out] == [0, 1, 1]
    assert [bool(m.seeds[0, 0]) for m in out] == [False, True, False]
    np.testing.assert_allclose(out[1].heights[0, 0, 0], 0.5, atol=1e-5)  # without the border share
    np.testing.assert_allclose(out[1].probs[0, 0, 0], 0.8, atol=1e-5)  # with it


@pytest.mark.parametrize("basic_channels", [0, 3])
def test_strips_cover_the_image_and_check_the_maps(monkeypatch, basic_channels):
    refiner = PixelRefiner([1, 2], basic_channels=basic_channels)
    width = 40
    monkeypatch.setattr(pixel_refiner, "STRIP_PIXELS", 64 * width)  # strips of 64 rows
    rgb = np.random.default_rng(0).random((100, width, 3)).astype(np.float32)
    coarse = np.zeros((2, 100, width), np.float32)
    coarse[1] = 5.0
    strips = list(refiner.strips(rgb, coarse))
    assert [r for r, _ in strips] == [slice(0, 64), slice(64, 100)]
    assert sum(len(f) for _, f in strips) == 100 * width
    monkeypatch.setattr(pixel_refiner, "STRIP_PIXELS", 1 << 30)
    whole = list(refiner.strips(rgb, coarse))
    assert len(whole) == 1  # the strips' features are the whole image's (enough context rows)
    torch.testing.assert_close(torch.cat([f for _, f in strips]), whole[0][1], atol=1e-4, rtol=1e-4)
    assert all(f.shape[1] == refiner.num_inputs for _, f in strips)
    assert torch.all(strips[0][1][:, -1] == 5.0)  # the coarse maps are the last inputs
    with pytest.raises(ValueError, match="coarse maps"):
        next(refiner.strips(rgb, coarse[:1]))
    assert PixelRefiner([1], use_model_maps=False).num_inputs == refiner.bank.num_features
    assert refiner.num_inputs == refiner.bank.num_features + basic_channels * 4 * 5 + 2  # σ 1, 2, 4, 8, 16
    with pytest.raises(ValueError, match="basic_channels must be 0, 1 or 3"):
        PixelRefiner([1], basic_channels=2)


@pytest.mark.parametrize(("use_model_maps", "forest"), [(True, False), (False, False), (False, True)])
def test_fit_refiner_learns_the_references_objects_whatever_the_model(use_model_maps, forest):
    # An untrained model's maps are noise; the refiner must still learn bright disks from the reference
    # and find them in a new image, splitting nothing that is not touching.
    torch.manual_seed(0)
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
    reference, target = disk_scene(0), disk_scene(1)
    # the step count bounds the fit (a second or two); the time budget is only a ceiling, generous so that
    # a loaded machine trains the same refiner
    fit = fit_refiner(propagator, [reference], seconds=600, max_steps=150, use_model_maps=use_model_maps,
                      forest=forest)
    assert fit.steps == 150 and fit.held_out and fit.pixels == reference[1].size
    assert propagator.refiner is not None and propagator.refiner.use_model_maps is use_model_maps
    assert (propagator.refiner.forest is not None) is forest
    result = next(propagator.propagate([target[0]], modes=("instance", "semantic")))
    truth = target[1]
    assert foreground_iou(truth > 0, result.labels["semantic"] > 0) > 0.85
    assert match_instances(truth, result.labels["instance"]).f1 > 0.8
    assert {s.mode for s in result.scores} == {"instance", "semantic"}
    areas = np.unique(reference[1][reference[1] > 0], return_counts=True)[1]
    assert propagator.refiner.min_areas.tolist() == [instance_floor(areas)]  # learned floor
    assert propagator.refiner.median_areas.tolist() == [float(np.median(areas))]


def test_engine_hooks_keep_maps_and_drop_a_stale_refiner():
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
    image, labels = disk_scene(2)
    propagator.set_references([(image, labels)])
    result = next(propagator.propagate([image], modes=("semantic",), keep_maps=True))
    assert result.semantic_maps.shape == (1, *image.shape) and result.semantic_maps.dtype == np.float32
    assert next(propagator.propagate([image], modes=("semantic",))).semantic_maps is None
    assert propagator.semantic_classes() == [1]
    with pytest.raises(PropagationError, match="fit it on these references"):
        propagator.set_refiner(PixelRefiner([1, 2]))
    fit_refiner(propagator, [(image, labels)], seconds=5, max_steps=2)
    assert propagator.refiner is not None
    propagator.set_references([(image, labels)])  # new references: the refiner was fitted on others
    assert propagator.refiner is None


def test_large_references_are_sampled_class_balanced():
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
    reference = disk_scene(4)
    fit = fit_refiner(propagator, [reference], seconds=5, max_steps=2, max_pixels=2000)
    # two folds (halves of 4608 pixels), each kept to at most 2000 pixels (strip by strip: rounding down)
    assert 3900 <= fit.pixels <= 4000
    target = torch.tensor([0] * 900 + [1] * 50 + [2] * 50)
    keep = refinement._sample(target, 300, torch.Generator().manual_seed(0))
    assert len(keep) == 300 and len(set(keep.tolist())) == 300
    assert (target[keep] == 1).sum() == 50 and (target[keep] == 2).sum() == 50  # rare classes kept whole


def test_step_quotas_follow_the_references_not_the_kept_sample(monkeypatch):
    quotas = refinement._class_quotas({0: 900, 2: 30, 1: 70}, 1000)
    assert quotas == {0: 900, 1: 100, 2: 100}  # shares, with a floor of a tenth
    assert list(refinement._class_quotas({2: 5, 0: 5}, 10)) == [0, 2]  # class order fixed (seeded draws)
    seen = []
    real = refinement._class_quotas
    monkeypatch.setattr(refinement, "_class_quotas",
                        lambda counts, n: seen.append(dict(counts)) or real(counts, n))
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
    image, labels = disk_scene(4)
    fit = fit_refiner(propagator, [(image, labels)], seconds=5, max_steps=2, max_pixels=2000)
    assert fit.pixels < labels.size  # the kept sample is class-balanced …
    # … but the step quotas count every pixel of the held-out halves
    halves = [held[1] for _, held in reference_folds([(image, labels)])]
    class_of = dict.fromkeys(range(1, 11), 1)
    truth = np.concatenate([refinement._targets(h, class_of, [1]).ravel() for h in halves])
    assert truth.size == labels.size and seen == [{k: int((truth == k).sum()) for k in range(3)}]


def test_fit_refiner_without_halves_uses_the_whole_reference():
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
    image, labels = disk_scene(3)
    corner = (np.arange(96)[:, None] < 40) & (np.arange(96)[None, :] < 40)
    labels = np.where(corner, labels, 0)  # objects in the top-left corner only: one half of each cut is empty
    fit = fit_refiner(propagator, [(image, labels)], seconds=5, max_steps=2)
    assert not fit.held_out and fit.pixels == labels.size


def test_fit_refiner_predicts_each_fold_with_its_fold_model(monkeypatch):
    # A cross-fitted adaptation hands one model per fold; each fold's held-out half must be predicted by
    # its own model, and the engine's model must be back in place afterwards (also on failure).
    engine_model, fold_a, fold_b = build_tiny(), build_tiny(), build_tiny()
    propagator = Propagator(engine_model, device="cpu", pad=112, instance_source="semantic")
    used = []
    real_propagate = Propagator.propagate

    def spy(self, *args, **kwargs):
        used.append(self.model)
        return real_propagate(self, *args, **kwargs)

    monkeypatch.setattr(Propagator, "propagate", spy)
    reference = disk_scene(5)
    fit_refiner(propagator, [reference], seconds=5, max_steps=2, fold_models=[fold_a, fold_b])
    assert used == [fold_a, fold_b] and propagator.model is engine_model and propagator.refiner is not None
    with pytest.raises(ValueError, match="1 fold models for 2 reference folds"):
        fit_refiner(propagator, [reference], seconds=5, max_steps=2, fold_models=[fold_a])

    def broken(self, *args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Propagator, "propagate", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        fit_refiner(propagator, [reference], seconds=5, max_steps=2, fold_models=[fold_a, fold_b])
    assert propagator.model is engine_model


def test_colour_features_only_for_colour_references():
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
    grey, labels = disk_scene(6)
    fit_refiner(propagator, [(grey, labels)], seconds=5, max_steps=2)
    assert propagator.refiner.basic_channels == 0
    tinted = np.stack([grey, grey // 2, grey], axis=-1)  # stained: channels differ
    fit_refiner(propagator, [(tinted, labels)], seconds=5, max_steps=2)
    assert propagator.refiner.basic_channels == 3
    result = next(propagator.propagate([tinted], modes=("semantic",)))
    assert result.labels["semantic"].shape == grey.shape
    fit_refiner(propagator, [(tinted, labels)], seconds=5, max_steps=2, colour_features=False)
    assert propagator.refiner.basic_channels == 0
    fit_refiner(propagator, [(np.stack([grey] * 3, -1), labels)], seconds=5, max_steps=2)
    assert propagator.refiner.basic_channels == 0  # grey stored as RGB


def test_the_forest_is_averaged_with_the_mlp_and_missing_classes_get_zero():
    from sklearn.ensemble import RandomForestClassifier

    torch.manual_seed(0)
    refiner = PixelRefiner([1, 2], use_model_maps=False)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(200, refiner.num_inputs)).astype(np.float32))
    y = np.where(x[:, 0].numpy() > 0, 1, 0)  # background and class 1 only: no class 2, no border
    forest = RandomForestClassifier(n_estimators=4, random_state=0).fit(x.numpy(), y)
    mlp = refiner(x).softmax(-1)
    assert torch.allclose(refiner.probabilities(x), mlp)  # no forest: the MLP alone
    refiner.set_forest(forest)
    both = refiner.probabilities(x)
    expected = mlp.clone()
    expected[:, :2] += torch.from_numpy(forest.predict_proba(x.numpy())).float()
    assert torch.allclose(both, expected / 2, atol=1e-6)
    assert torch.allclose(both.sum(-1), torch.ones(len(x)), atol=1e-5)


def test_image_features_only_need_no_model_pass_and_repeat(monkeypatch):
    # without the model's maps the references' halves are never propagated (no model work), and two fits
    # of the same inputs give the same MLP and forest (seeded)
    reference, target = disk_scene(0), disk_scene(1)
    fingerprints, answers = [], []
    for _ in range(2):
        torch.manual_seed(0)
        propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
        calls: list[int] = []
        original = propagator.propagate

        def counted(*args, calls=calls, original=original, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)
        monkeypatch.setattr(propagator, "propagate", counted)
        fit_refiner(propagator, [reference], max_steps=20, use_model_maps=False, forest=True)
        assert not calls and propagator.refiner.forest.n_jobs == 1
        fingerprints.append(refiner_fingerprint(propagator.refiner))
        answers.append(next(original([target[0]], modes=("instance",))).labels["instance"])
    assert fingerprints[0] == fingerprints[1] and "+forest:" in fingerprints[0]
    assert np.array_equal(*answers)
    mlp_only = PixelRefiner([1], use_model_maps=False)
    assert "+forest:" not in refiner_fingerprint(mlp_only)


def test_the_forest_has_the_same_trees_for_any_thread_count():
    # built in torch's thread count, but each tree's seed is drawn before any is built; the pixels are
    # collected once (the filter bank's float rounding itself may depend on the thread count)
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic")
    pixels = refinement.collect_training_pixels(propagator, [disk_scene(0)], use_model_maps=False)
    digests = []
    for count in (1, 3):
        with torch_threads(count):
            forest = refinement.train_forest(pixels)
        assert forest.n_jobs == 1  # it predicts through PixelRefiner's own blocks
        pixels.refiner.set_forest(forest)
        digests.append(refiner_fingerprint(pixels.refiner))
    assert digests[0] == digests[1] and "+forest:" in digests[0]


def test_chunked_and_threaded_probabilities_equal_one_call(monkeypatch):
    # the MLP runs on chunks of pixels (the normalisation folded into its first layer, the softmax on the
    # transposed logits) and the forest on blocks in threads: the MLP's own answer averaged with the
    # forest's, to float rounding (the forest's part is exact: the test below)
    from sklearn.ensemble import RandomForestClassifier

    torch.manual_seed(0)
    refiner = PixelRefiner([1, 2], use_model_maps=False)
    refiner.shift.normal_()
    refiner.spread.uniform_(0.5, 2)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(refiner.num_inputs, 1000)).astype(np.float32)).T  # strided
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x.numpy(), rng.integers(0, 4, 1000))
    refiner.set_forest(forest)
    with torch.no_grad():
        mlp = refiner(x.contiguous()).softmax(-1)
        expected = (mlp + torch.from_numpy(forest.predict_proba(x.numpy())).float()) / 2
        with torch_threads(1):
            assert torch.allclose(refiner.probabilities(x), expected, atol=1e-6, rtol=0)
        monkeypatch.setattr(pixel_refiner, "MLP_CHUNK", 37)
        monkeypatch.setattr(pixel_refiner, "FOREST_MIN_BLOCK", 100)
        with torch_threads(3):
            assert torch.allclose(refiner.probabilities(x), expected, atol=1e-6, rtol=0)
        refiner.set_forest(None)
        assert torch.allclose(refiner.probabilities(x), mlp, atol=1e-6, rtol=0)
        refiner.head = torch.nn.Sequential(torch.nn.Linear(refiner.num_inputs, 4), torch.nn.LayerNorm(4))
        assert torch.allclose(refiner.probabilities(x), refiner(x).softmax(-1), atol=1e-6, rtol=0)  # any head


@pytest.mark.parametrize("cache_pixels", [16384, 256, 1000])  # one block; blocks of pixels, a partial last
def test_the_forest_answers_as_scikit_learn_does_to_the_bit(monkeypatch, cache_pixels):
    from sklearn.ensemble import RandomForestClassifier

    monkeypatch.setattr(pixel_refiner, "FOREST_CACHE_PIXELS", cache_pixels)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0.5)  # classes 0..3
    forest = RandomForestClassifier(n_estimators=7, max_depth=6, random_state=0).fit(x, y)
    for features in (x, np.asfortranarray(x)):
        assert np.array_equal(pixel_refiner._forest_probabilities(forest, features), forest.predict_proba(x))
    image = np.zeros((8, 8, 3), np.float32)
    image[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        next(PixelRefiner([1], use_model_maps=False).strips(image, None))


@pytest.mark.parametrize(("id_source", "modes", "model_calls"), [
    ("matching", ("id", "instance", "semantic"), False),
    ("queries", ("instance", "semantic"), False),
    ("queries", ("id", "semantic"), True),  # the model's ID queries answer
])
def test_a_refiner_on_the_image_alone_skips_the_model_pass(monkeypatch, id_source, modes, model_calls):
    # nothing of the model's outputs would be read: no tile is encoded or decoded, and the proposals are
    # those of a run that makes the model pass (keeping its maps forces one)
    torch.manual_seed(0)
    propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic",
                            id_source=id_source)
    reference, target = disk_scene(0), disk_scene(1)
    fit_refiner(propagator, [reference], max_steps=20, use_model_maps=False)
    calls: list[int] = []
    original = propagator.model.decode

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(propagator.model, "decode", counted)
    skipped = next(propagator.propagate([target[0]], modes=modes))
    assert bool(calls) is model_calls
    calls.clear()
    full = next(propagator.propagate([target[0]], modes=modes, keep_maps=True))
    assert calls and full.semantic_maps is not None and skipped.semantic_maps is None
    for mode in modes:
        assert np.array_equal(skipped.labels[mode], full.labels[mode])
    assert [(s.mode, s.label, s.score) for s in skipped.scores] == [(s.mode, s.label, s.score)
                                                                    for s in full.scores]
    with pytest.raises(ValueError, match="reads the model's class maps"):
        next(PixelRefiner([1]).strips(np.zeros((8, 8, 3), np.float32), None))
