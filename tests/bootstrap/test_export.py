"""Export round trips: every format read back by its own readers gives the same images and objects."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from sine_model.bootstrap.dataset import (
    CHECKSUMS_NAME,
    ExportError,
    ExportSample,
    split_samples,
    verify_checksums,
)
from sine_model.bootstrap.export import EXPORT_FORMATS, export_dataset
from sine_model.metrics import match_instances


def labels_with(n: int, shape=(48, 64), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint16)
    for value in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        labels[y : y + 6, x : x + 7] = value
    return labels


@pytest.fixture
def samples():
    """16-bit grey, 8-bit RGB and 16-bit 2-channel images from three sources, plus a reference."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 60000, (48, 64), dtype=np.uint16)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    two = rng.integers(0, 4000, (2, 48, 64), dtype=np.uint16)
    items = [ExportSample("ref_a", grey, labels_with(3, seed=9), "/data/ref.tif", "reference", "reference")]
    for n in range(4):
        items.append(
            ExportSample(
                f"stack_{n}",
                grey + n,
                labels_with(2 + n, seed=n),
                "/data/stack.tif",
                status="accepted" if n % 2 else "corrected",
            )
        )
    items.append(ExportSample("rgb", rgb, labels_with(4, seed=7), "/data/rgb.png", classes={1: 2}))
    items.append(ExportSample("two", two, labels_with(5, seed=8), "/data/two.tif", channel_axis=0))
    return items


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    score = match_instances(a, b, threshold=0.99)
    return score.fp == 0 and score.fn == 0


def read_split(out):
    with open(out / "split.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def check_common(out, samples):
    split = read_split(out)
    assert set(split) == {s.name for s in samples}
    assert split["ref_a"]["split"] == "train"
    assert verify_checksums(out) == []
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["seed"] == 0 and recipe["tool"] == "test"


def test_tiff_folders_round_trip(tmp_path, samples):
    out = tmp_path / "tiff"
    report = export_dataset(samples, out, "tiff", recipe={"tool": "test"})
    assert report.train + report.val == len(samples)
    for s in samples:
        image = tifffile.imread(out / "images" / f"{s.name}.tif")
        assert image.dtype == s.image.dtype and np.array_equal(image, s.image)  # as it was: no conversion
        assert same_objects(s.labels, tifffile.imread(out / "masks" / f"{s.name}.tif"))
    check_common(out, samples)


def test_coco_round_trip_through_pycocotools(tmp_path, samples):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    out = tmp_path / "coco"
    export_dataset(samples, out, "coco", recipe={"tool": "test"})
    split, seen = read_split(out), set()
    by_name = {s.name: s for s in samples}
    for part in ("train", "val"):
        coco = COCO(str(out / "annotations" / f"instances_{part}.json"))
        for image_id, info in coco.imgs.items():
            sample = by_name[info["file_name"].removeprefix("images/").removesuffix(".tif")]
            assert split[sample.name]["split"] == part
            rebuilt = np.zeros(sample.labels.shape, dtype=np.int32)
            for n, ann in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=[image_id])), start=1):
                mask = coco.annToMask(ann).astype(bool)
                assert not (rebuilt[mask]).any() and ann["area"] == mask.sum()
                assert ann["category_id"] == sample.class_of(ann["label"])
                rebuilt[mask] = n
            assert same_objects(sample.labels, rebuilt)
            assert np.array_equal(tifffile.imread(out / info["file_name"]), sample.image)
            seen.add(sample.name)
    assert seen == set(by_name)
    check_common(out, samples)


def test_ome_zarr_round_trip_through_ome_zarr_reader(tmp_path, samples):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    out = tmp_path / "ngff"
    export_dataset(samples, out, "ome-zarr", recipe={"tool": "test"})
    for s in samples:
        nodes = list(Reader(parse_url(str(out / "ome_zarr" / f"{s.name}.ome.zarr")))())
        image = np.asarray(nodes[0].data[0])
        expected, axes = s.spatial_channel_first()
        assert np.array_equal(image, expected) and image.dtype == s.image.dtype
        assert [a["name"] for a in nodes[0].metadata["axes"]] == list(axes)
        label_nodes = [n for n in nodes if n.load(Label)]
        assert label_nodes, f"{s.name}: no label image found by ome-zarr"
        assert same_objects(s.labels, np.asarray(label_nodes[0].data[0]))
    check_common(out, samples)


def test_napari_sine_layout_is_what_train_reads(tmp_path, samples):
    from sine_model.training.config import load_config
    from sine_model.training.folders import folder_groups

    out = tmp_path / "ns"
    export_dataset(samples, out, "napari-sine", recipe={"tool": "test"})
    config = load_config(out / "train.toml")
    from sine_model.training.loop import build_model_for_training

    build_model_for_training(config.model)  # the shipped weights fit the written architecture (strict)
    source = config.data.folders[0]
    groups = folder_groups(source.root, source.manifest)
    split = read_split(out)
    trained = {item.image_path.stem for items in groups.values() for item in items}
    assert trained == {n for n, row in split.items() if row["split"] == "train"}
    assert set(groups) <= {s.source for s in samples}
    item = groups["/data/stack.tif"][0]()
    original = next(s for s in samples if s.name == item.name.removesuffix(".tif"))
    assert np.array_equal(item.image, original.image) and same_objects(original.labels, item.labels)
    check_common(out, samples)


def test_split_is_seeded_and_stratified_by_source(samples):
    first, again = split_samples(samples, 0.25, seed=3), split_samples(samples, 0.25, seed=3)
    assert first == again
    stack_val = [n for n, v in first.items() if v == "val" and n.startswith("stack_")]
    assert len(stack_val) == 1  # round(0.25 * 4) of the stack's four
    singles = [first["rgb"], first["two"]]  # one-sample sources, pooled: one of the two
    assert sorted(singles) == ["train", "val"]
    others = {tuple(sorted(split_samples(samples, 0.25, seed=s).items())) for s in range(8)}
    assert len(others) > 1  # the seed matters
    assert all(v == "train" for v in split_samples(samples, 0.0).values())


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_non_empty_folder_is_refused_unless_overwrite(tmp_path, samples, fmt):
    pytest.importorskip("pycocotools")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_dataset(samples, out, fmt)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    export_dataset(samples, out, fmt, overwrite=True)
    export_dataset(samples[:3], out, fmt, overwrite=True)  # a second export replaces the first
    assert (out / "notes.txt").read_text() == "mine"  # not an export's file: kept
    assert verify_checksums(out) == [] and (out / CHECKSUMS_NAME).is_file()
    assert len(read_split(out)) == 3


def test_export_never_touches_sources(tmp_path, samples):
    sources = tmp_path / "data"
    sources.mkdir()
    files = []
    for s in samples[:3]:
        path = sources / f"{s.name}.tif"
        tifffile.imwrite(path, s.image)
        files.append(path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    export_dataset(samples, tmp_path / "ds", "tiff", sources=files)
    with pytest.raises(ExportError, match="source files"):
        export_dataset(samples, sources, "tiff", overwrite=True, sources=files)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    assert sorted(p.name for p in sources.iterdir()) == sorted(p.name for p in files)


@pytest.mark.parametrize(
    "bad, problem",
    [
        ([], "nothing to export"),
        ([ExportSample("a", np.zeros((4, 4)), np.zeros((4, 5), np.uint8), "s")], "match the image"),
        ([ExportSample("a/b", np.zeros((4, 4)), np.zeros((4, 4), np.uint8), "s")], "cannot be a file name"),
        ([ExportSample("a", np.zeros((4, 4)), np.zeros((4, 4), np.uint8), "s")] * 2, "unique"),
    ],
)
def test_bad_samples_are_refused_before_writing(tmp_path, bad, problem):
    with pytest.raises(ExportError, match=problem):
        export_dataset(bad, tmp_path / "x")
    assert not (tmp_path / "x").exists()
