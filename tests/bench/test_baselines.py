"""Classical baselines and the evaluation protocol of bench/evaluate.py (synthetic data, no ../shared)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import baselines  # noqa: E402
import evaluate  # noqa: E402

from sine_model.metrics import match_instances  # noqa: E402

try:
    import sklearn  # noqa: F401
except ImportError:  # the random-forest baseline needs scikit-learn; the rest does not
    HAVE_SKLEARN = False
else:
    HAVE_SKLEARN = True
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn not installed")


def disks(seed: int, size: int = 128, count: int = 10, bright: bool = True, rgb: bool = False):
    """Non-overlapping disks (radius 6-9) on a noisy background; returns (image, instance labels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    placed = 0
    while placed < count:
        r = rng.integers(6, 10)
        cy, cx = rng.integers(r + 1, size - r - 1, 2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        grown = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 3) ** 2
        if labels[grown].any():
            continue
        placed += 1
        labels[disk] = placed
    fg, bg = (200.0, 40.0) if bright else (40.0, 200.0)
    image = np.where(labels > 0, fg, bg) + rng.normal(0, 12, labels.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rgb:
        image = np.stack([image, (image * 0.8).astype(np.uint8), image], axis=-1)
    return image, labels


RUNNERS = [
    pytest.param(baselines.OtsuBaseline, id="otsu"),
    pytest.param(baselines.RandomForestBaseline, id="rf", marks=needs_sklearn),
    pytest.param(lambda: baselines.RandomForestBaseline(border=True), id="rf-border", marks=needs_sklearn),
]


@pytest.mark.parametrize("runner_cls", RUNNERS)
@pytest.mark.parametrize(("bright", "rgb", "dtype"), [(True, False, np.uint8), (False, True, np.uint8),
                                                      (True, False, np.uint16)])
def test_baselines_find_disks(runner_cls, bright, rgb, dtype):
    ref_image, ref_labels = disks(0, bright=bright, rgb=rgb)
    scale = 257 if dtype == np.uint16 else 1
    runner = runner_cls()
    runner.fit(ref_image.astype(dtype) * scale, ref_labels)
    targets = [disks(seed, bright=bright, rgb=rgb) for seed in (1, 2)]
    preds = list(runner.predict(img.astype(dtype) * scale for img, _ in targets))
    assert len(preds) == 2
    for (_, truth), pred in zip(targets, preds, strict=True):
        assert pred["semantic"].shape == truth.shape and pred["instance"].shape == truth.shape
        assert match_instances(truth, pred["instance"]).f1 >= 0.8


def test_watershed_splits_touching_disks():
    yy, xx = np.mgrid[:40, :60]
    labels = np.zeros((40, 60), np.uint16)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 100] = 1
    labels[(yy - 20) ** 2 + (xx - 37) ** 2 <= 100] = 2  # overlaps disk 1: one connected component
    step = baselines.choose_instance_step(labels)
    assert step.method == "watershed"
    split = step.apply(labels > 0)
    assert split.max() == 2 and match_instances(labels, split).f1 == 1.0
    assert baselines.InstanceStep("cc").apply(labels > 0).max() == 1


def test_normalise_image_layouts():
    gray = np.arange(100, dtype=np.uint16).reshape(10, 10) * 600
    assert baselines.normalise_image(gray).shape == (10, 10, 1)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 65535)])
    assert baselines.normalise_image(rgba).shape == (10, 10, 1)  # identical channels → gray
    rgb = np.dstack([gray, gray[::-1], gray])
    assert baselines.normalise_image(rgb).shape == (10, 10, 3)


def test_splits_file_matches_constant():
    splits = json.loads((BENCH / "eval_splits.json").read_text())
    assert tuple(splits["dsb2018_stage1_test"]["heldout_groups"]) == evaluate.DSB_HELDOUT_GROUPS


def fake_dsb(root: Path, sizes: dict[str, int]) -> dict[str, list[str]]:
    """A DSB2018-shaped folder: manifest.csv, images/*.png (RGBA), labels/*.tif."""
    import imageio.v3 as iio
    import tifffile

    folder = root / "dsb2018_stage1_test"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    names: dict[str, list[str]] = {}
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "group"])
        seed = 0
        for group, count in sizes.items():
            for k in range(count):
                seed += 1
                name = f"{group}_{k}"
                image, labels = disks(seed, size=64, count=4)
                rgba = np.dstack([image, image, image, np.full_like(image, 255)])
                iio.imwrite(folder / "images" / f"{name}.png", rgba)
                tifffile.imwrite(folder / "labels" / f"{name}.tif", labels)
                writer.writerow([name, group])
                names.setdefault(group, []).append(name)
    return names


class StubRunner:
    """Predicts the components of bright pixels; records what it was fitted on."""

    name = "stub"

    def __init__(self, with_id: bool = False) -> None:
        self.fitted: list[tuple[int, ...]] = []
        self.with_id = with_id

    def fit(self, image, labels, classes=None):
        self.fitted.append(labels.shape)

    def predict(self, targets):
        from scipy import ndimage as ndi

        for image in targets:
            assert image.ndim == 2  # RGBA gray PNGs arrive as 2D
            instance = ndi.label(image > 120)[0]
            pred = {"semantic": (instance > 0).astype(np.uint8), "instance": instance}
            if self.with_id:
                pred["id"] = np.zeros_like(instance)
            yield pred


def test_plan_pairs_rotation_and_limits(tmp_path):
    names = fake_dsb(tmp_path, {"A": 5, "B": 1, "C": 3})
    groups = evaluate.load_groups("dsb2018", tmp_path, ["A", "B", "C"])
    plan = evaluate.plan_pairs("dsb2018", groups, max_refs=2, max_targets=3)
    assert [p.group for p in plan] == ["A", "A", "C", "C"]  # B has no target
    assert [p.reference.name for p in plan] == ["A_0", "A_4", "C_0", "C_2"]
    for pairing in plan:
        targets = [t.name for t in pairing.targets]
        assert pairing.reference.name not in targets and len(set(targets)) == len(targets)
        assert set(targets) <= set(names[pairing.group])
        assert len(targets) == min(3, len(names[pairing.group]) - 1)
    with pytest.raises(ValueError, match="no images in groups"):
        evaluate.load_groups("dsb2018", tmp_path, ["Z"])


def test_run_plan_scores_every_pair(tmp_path):
    fake_dsb(tmp_path, {"A": 3, "C": 4})
    plan = evaluate.plan_pairs("dsb2018", evaluate.load_groups("dsb2018", tmp_path), 2, 2)
    runner = StubRunner(with_id=True)
    records = evaluate.run_plan(runner, plan)
    pairs = [r for r in records if r["kind"] == "pair"]
    crops = [r for r in records if r["kind"] == "id_crop"]
    assert len(pairs) == sum(len(p.targets) for p in plan) == 8
    assert all(r["f1"] == 1.0 and r["semantic_iou"] > 0.9 for r in pairs)
    assert len(crops) == len(plan) and all(r["n_ids"] > 0 and r["id_score"] == 0.0 for r in crops)
    assert len(runner.fitted) == 2 * len(plan)  # one fit per reference, one per crop pair
    rows = evaluate.summarise(records + evaluate.run_plan(baselines.OtsuBaseline(), plan))
    means = [r for r in rows if r["dataset"] == "mean"]
    assert [r["method"] for r in means] == ["stub", "otsu + watershed"]
    assert means[0]["f1"] == 1.0 and means[0]["id_score"] == 0.0 and np.isnan(means[1]["id_score"])


def test_main_writes_section_and_json(tmp_path):
    fake_dsb(tmp_path, {"A": 3})
    out = tmp_path / "quality.md"
    out.write_text("# Quality\n\n## One-shot evaluation\n\nold table\n\n## Other\n\nkept\n")
    rows = evaluate.main(["--data-root", str(tmp_path), "--datasets", "dsb2018", "--dsb-groups", "A",
                          "--baselines", "otsu", "--max-refs", "1", "--max-targets", "2",
                          "--out", str(out), "--json", str(tmp_path / "r.json")])
    assert rows[-1]["dataset"] == "mean" and rows[-1]["pairs"] == 2
    text = out.read_text()
    assert "old table" not in text and "## Other\n\nkept" in text and text.count(evaluate.SECTION) == 1
    assert "--dsb-groups A" in text and "| dsb2018 | otsu + watershed | 2 |" in text
    raw = json.loads((tmp_path / "r.json").read_text())
    assert len(raw["records"]) == 2 and raw["meta"]["dsb_groups"] == ["A"]


def test_model_runner_on_fake_data(tmp_path):
    fake_dsb(tmp_path, {"A": 3})
    plan = evaluate.plan_pairs("dsb2018", evaluate.load_groups("dsb2018", tmp_path), 1, 2)
    model, pad = evaluate.make_model("random-tiny")
    assert pad == 112
    runner = evaluate.ModelRunner(model, "tiny", pad=pad, device="cpu", instance_sources=["queries"])
    records = evaluate.run_plan(runner, plan)
    assert [r["kind"] for r in records] == ["pair", "pair", "id_crop"]
    assert all(0 <= r["f1"] <= 1 and 0 <= r["semantic_iou"] <= 1 for r in records[:2])
    assert records[2]["n_ids"] > 0 and 0 <= records[2]["id_score"] <= 1
    assert {r["method"] for r in records} == {"tiny"}


def test_model_runner_scores_both_instance_sources_from_one_pass(tmp_path, monkeypatch):
    from sine_model.engine.propagator import Propagator
    from sine_model.postprocess.components import (
        instance_steps_by_class,
        min_areas_by_class,
        semantic_components,
    )

    fake_dsb(tmp_path, {"A": 3})
    plan = evaluate.plan_pairs("dsb2018", evaluate.load_groups("dsb2018", tmp_path), 1, 2)
    model, pad = evaluate.make_model("random-tiny")
    runner = evaluate.ModelRunner(model, "tiny", pad=pad, device="cpu")  # default: both
    assert runner.propagator.instance_source == "queries"
    passes = []
    propagate = Propagator.propagate
    monkeypatch.setattr(Propagator, "propagate",
                        lambda self, *a, **k: (passes.append(1), propagate(self, *a, **k))[1])
    records = evaluate.run_plan(runner, plan)
    assert len(passes) == 2  # one model pass for both rows (and one for the ID crop pair)
    names = ["tiny [queries instances]", "tiny [semantic instances]", "tiny [components instances]"]
    assert [r["method"] for r in records] == names * 3
    assert [r["kind"] for r in records] == ["pair"] * 6 + ["id_crop"] * 3  # the ID score on every row
    rows = evaluate.summarise(records)
    assert {r["method"] for r in rows} == set(names)
    # the semantic row is what the engine itself gives with instance_source="semantic"
    ref_image = evaluate.load_image(plan[0].reference.image)
    ref_labels = evaluate.load_labels(plan[0].reference.labels)
    engine = Propagator(model, "cpu", pad=pad, instance_source="semantic")
    engine.set_references([(ref_image, ref_labels)])
    target = evaluate.load_image(plan[0].targets[0].image)
    result = next(engine.propagate([target]))
    class_of = {int(v): 1 for v in np.unique(ref_labels) if v}
    floor = min_areas_by_class([ref_labels], class_of)
    steps = instance_steps_by_class([ref_labels], class_of)
    expected = semantic_components(result.labels["semantic"], floor, steps=steps)[0]
    np.testing.assert_array_equal(result.labels["instance"], expected)
    truth = evaluate.load_labels(plan[0].targets[0].labels)
    assert records[1]["f1"] == evaluate.match_instances(truth, result.labels["instance"]).f1
    components = semantic_components(result.labels["semantic"], floor)[0]  # the unsplit row
    assert records[2]["f1"] == evaluate.match_instances(truth, components).f1


def test_adapted_model_runner_adapts_a_fresh_copy_per_reference(tmp_path):
    fake_dsb(tmp_path, {"A": 3})
    plan = evaluate.plan_pairs("dsb2018", evaluate.load_groups("dsb2018", tmp_path), 2, 1)
    model, pad = evaluate.make_model("random-tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = evaluate.ModelRunner(model, "tiny + adapt", pad=pad, device="cpu", adapt_steps=1)
    records = evaluate.run_plan(runner, plan)
    assert [r["kind"] for r in records] == ["pair"] * 6  # 2 pairs x 3 instance answers; no ID crops
    assert runner.adapt_steps == [1, 1]
    assert runner.propagator.model is not model  # the propagator holds an adapted copy ...
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # ... the base is intact


def test_adapt_step_budget_makes_adapted_runs_repeat(tmp_path):
    fake_dsb(tmp_path, {"A": 3})
    plan = evaluate.plan_pairs("dsb2018", evaluate.load_groups("dsb2018", tmp_path), 1, 1)
    model, pad = evaluate.make_model("random-tiny")
    runs = []
    for _ in range(2):
        runner = evaluate.ModelRunner(model, "tiny + adapt", pad=pad, device="cpu", adapt_steps=3,
                                      instance_sources=["semantic"])
        runs.append(evaluate.run_plan(runner, plan))
        assert runner.adapt_steps == [3]
    assert [r["f1"] for r in runs[0]] == [r["f1"] for r in runs[1]]
    args = evaluate.parse_args(["--adapt", "0", "80", "--refine", "400"])
    assert args.adapt == [0, 80] and args.refine == [400]
